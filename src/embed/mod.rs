//! Embedding raw data with a pretrained encoder: the machinery behind the `embed` step.
//!
//! * [`source`]: where items come from (text files, image folders, WebDataset and parquet
//!   shards), in a deterministic order, with unreadable items reported instead of fatal.
//! * [`image`]: decoding and the reference's preprocessing with Pillow's resampling semantics.
//! * [`model_files`]: a model's files, from a folder or the Hugging Face hub cache.
//! * [`encoder`]: CLIP, SigLIP and sentence-transformers BERT through candle-transformers, with
//!   the models' own `tokenizer.json` under the reference pipelines' length rules.
//! * [`pipeline`]: the resumable, part-wise embed loop with decoding overlapped with the model.
//! * [`thumbnails`]: the per-part thumbnail files and the one archive they are joined into.
//! * [`clip_bpe`]: CLIP's tokenizer built from its BPE merges file.
//! * `random_clip`, `random_siglip` (feature `test-models`): small CLIP and SigLIP models with
//!   random weights in the Hugging Face layout, for the tests and benchmarks.
//!
//! This layer knows nothing about experiments or the store; the step in `kinds::embed` drives it.

pub mod clip_bpe;
pub mod encoder;
pub mod image;
pub mod model_files;
pub mod pipeline;
#[cfg(any(test, feature = "test-models"))]
pub mod random_clip;
#[cfg(any(test, feature = "test-models"))]
pub mod random_siglip;
pub mod source;
pub mod thumbnails;
