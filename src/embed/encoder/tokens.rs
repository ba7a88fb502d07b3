//! Text → token ids with a model's `tokenizer.json`, with the length rules of the reference
//! pipelines rather than whatever padding and truncation the file carries.
//!
//! The file's own padding and truncation are replaced: all-MiniLM-L6-v2's `tokenizer.json`, for
//! instance, pads every text to 128 tokens and cuts there, while sentence-transformers cuts at 256
//! and pads to the batch's longest. Padding is done here, per batch, with the model's pad id.

use std::path::Path;

use anyhow::{anyhow, Result};
use tokenizers::{Tokenizer, TruncationParams};

/// How a batch is padded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadTo {
    /// To the longest text of the batch (CLIP, BERT: masked or pooled so that padding is inert).
    Longest,
    /// Always to this length (SigLIP pools the last position, so every text needs the same length).
    Fixed(usize),
}

pub struct TextTokenizer {
    tokenizer: Tokenizer,
    pad_id: u32,
    pad_to: PadTo,
}

/// A padded batch: `ids` and `mask` are `rows × len`, row-major.
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
    pub rows: usize,
    pub len: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, cutting texts at `max_len` tokens (special tokens included).
    pub fn load(path: &Path, max_len: usize, pad_id: u32, pad_to: PadTo) -> Result<TextTokenizer> {
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load the tokenizer {}: {e}", path.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("tokenizer {}: {e}", path.display()))?;
        Ok(TextTokenizer {
            tokenizer,
            pad_id,
            pad_to,
        })
    }

    /// The id of a token of the vocabulary, if it has one.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Token ids of each text, special tokens added, unpadded.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Pads already encoded texts into one batch.
    pub fn pad(&self, encoded: &[&[u32]]) -> TokenBatch {
        let len = match self.pad_to {
            PadTo::Longest => encoded.iter().map(|e| e.len()).max().unwrap_or(0).max(1),
            PadTo::Fixed(n) => n,
        };
        let mut ids = vec![self.pad_id; encoded.len() * len];
        let mut mask = vec![0u32; encoded.len() * len];
        for (r, e) in encoded.iter().enumerate() {
            let n = e.len().min(len);
            ids[r * len..r * len + n].copy_from_slice(&e[..n]);
            mask[r * len..r * len + n].fill(1);
        }
        TokenBatch {
            ids,
            mask,
            rows: encoded.len(),
            len,
        }
    }
}
