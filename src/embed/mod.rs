//! Embedding raw data with a pretrained encoder: the machinery behind the `embed` step.
//!
//! * [`source`]: where items come from (text files, image folders, WebDataset and parquet
//!   shards), in a deterministic order, with unreadable items reported instead of fatal.
//! * [`image`]: decoding and the reference's preprocessing with Pillow's resampling semantics.
//! * encoders (CLIP, SigLIP, sentence-transformers BERT) and their tokenizers, through
//!   candle-transformers and `tokenizers`.
//! * [`clip_bpe`]: CLIP's tokenizer built from its BPE merges file.
//! * [`random_clip`]: small CLIP models with random weights in the Hugging Face layout, for tests.
//!
//! This layer knows nothing about experiments or the store; the step in `steps::embed` drives it.

pub mod clip_bpe;
pub mod image;
pub mod random_clip;
pub mod source;
