//! Sparse autoencoders on embedding matrices: models, activations, losses, optimiser, schedule,
//! training loop and checkpoints (specification: REFERENCE.md §3–§6).
//!
//! All heavy computation runs on candle tensors on a caller-chosen [`candle_core::Device`]; the
//! CPU gets hand-written kernels (top-k selection, sparse products), other devices fall back to
//! generic candle operations.

pub mod activation;
pub mod checkpoint;
pub mod config;
pub mod loss;
pub mod model;
pub mod optim;
pub mod schedule;
mod sparse;
pub mod train;

pub use config::{Arch, TrainConfig};
pub use model::Sae;
pub use train::{train, RowSource, Standardization, TrainOptions, TrainOutcome, ValidationSet};

/// Errors of the SAE library.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid file {path}: {msg}")]
    Format {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("data error: {0}")]
    Data(String),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, SaeError>;
