//! Items to embed, read in a deterministic order from one kind of source.
//!
//! Every source yields [`Entry`] values: a readable [`Item`] or an [`Entry::Unreadable`] record
//! naming the item and why it could not be read (a corrupt archive member, an unreadable file).
//! Unreadable entries are counted and listed in the step's report, never fatal, so the rows that
//! are kept stay aligned with their texts and labels.

pub mod files;
pub mod image_folder;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod text_lines;
pub mod webdataset;

/// An item's key as one line of the embed step's `items` output: a key never spans lines, so
/// `\` is written `\\`, a line feed `\n` and a carriage return `\r` (keys without them, which
/// are nearly all, are written as they are).
pub fn reference_line(key: &str) -> String {
    if !key.contains(['\\', '\n', '\r']) {
        return key.to_string();
    }
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// One item of a dataset: encoded image bytes and/or a text, an optional class label and an
/// optional group value (a second per-row attribute, read from parquet only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    /// A stable identifier for messages, reports and the embed step's `items` output: the path
    /// relative to an image folder (`/` separators), `shard.tar:member`, `file.parquet:row`
    /// (0-based within the file), `file.txt:line` (1-based).
    pub key: String,
    /// The image file's bytes as stored (PNG, JPEG, …); decoded later, in parallel.
    pub image: Option<Vec<u8>>,
    /// A caption or vocabulary entry.
    pub text: Option<String>,
    /// A class label (a folder name, a `.cls` member, a parquet label column mapped to its name).
    pub label: Option<String>,
    /// A group value: a parquet group column's value in the label's textual form (e.g. the
    /// attribute a bias analysis splits its rows by).
    pub group: Option<String>,
}

/// What a source yields for each position of its sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Item(Item),
    /// The item exists but cannot be read; it is skipped and reported.
    Unreadable {
        key: String,
        reason: String,
    },
}

/// A sequence of entries in a deterministic order.
///
/// Positions count every entry, readable or not, so "skip the first `n` positions" is the same
/// whatever could be read: an interrupted embed resumes at a position and finds the same items.
pub trait Source: Send {
    /// The next entry, `None` at the end. `Err` only for failures that make the whole source
    /// unusable (an item that cannot be read is an [`Entry::Unreadable`], not an error).
    fn next_entry(&mut self) -> anyhow::Result<Option<Entry>>;

    /// Skips `n` positions. Sources override this where they can skip without reading the data.
    fn skip(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            if self.next_entry()?.is_none() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::reference_line;

    #[test]
    fn references_are_single_lines_and_unambiguous() {
        assert_eq!(reference_line("cats/001.png"), "cats/001.png");
        assert_eq!(reference_line("a\nb.png"), "a\\nb.png");
        assert_eq!(reference_line("a\r\n"), "a\\r\\n");
        // A backslash is doubled, so `a\nb` written literally stays told apart from a newline.
        assert_eq!(reference_line("a\\nb"), "a\\\\nb");
        assert_ne!(reference_line("a\\nb"), reference_line("a\nb"));
    }
}
