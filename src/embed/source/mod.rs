//! Items to embed, read in a deterministic order from one kind of source.
//!
//! Every source yields [`Entry`] values: a readable [`Item`] or an [`Entry::Unreadable`] record
//! naming the item and why it could not be read (a corrupt archive member, an unreadable file).
//! Unreadable entries are counted and listed in the step's report, never fatal, so the rows that
//! are kept stay aligned with their texts and labels.

/// One item of a dataset: encoded image bytes and/or a text, and an optional class label.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    /// A stable identifier for messages and reports (a relative path, `shard.tar:key`, …).
    pub key: String,
    /// The image file's bytes as stored (PNG, JPEG, …); decoded later, in parallel.
    pub image: Option<Vec<u8>>,
    /// A caption or vocabulary entry.
    pub text: Option<String>,
    /// A class label (a folder name, a `.cls` member, a parquet label column mapped to its name).
    pub label: Option<String>,
}

/// What a source yields for each position of its sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Item(Item),
    /// The item exists but cannot be read; it is skipped and reported.
    Unreadable { key: String, reason: String },
}
