//! Sparse autoencoders on embedding matrices, in three parts: the models ([`model`]: parameters,
//! activations, losses, forward and backward passes, files), their training ([`training`]: one
//! step, the loop, checkpoints, schedule) and the CPU kernels both use ([`kernels`]); with the
//! configuration ([`config`]) and the optimiser ([`optim`]) they share (specification:
//! docs/reference.md §3–§6).
//!
//! All heavy computation runs on candle tensors on a caller-chosen [`candle_core::Device`]; the
//! CPU gets hand-written kernels (top-k selection, sparse products), other devices fall back to
//! generic candle operations.
//!
//! Typical use:
//!
//! ```no_run
//! use candle_core::Device;
//! use msae::sae::training::{train, MatrixSource, TrainOptions};
//! use msae::sae::{Arch, Sae, Standardization, TrainConfig};
//!
//! # fn main() -> msae::sae::Result<()> {
//! let data = MatrixSource::new(vec![0.0; 64 * 8], 8)?; // any `RowSource`
//! let std = Standardization { mean: vec![0.0; 8], scale: 1.0 }; // μ and s from the caller
//! let cfg = TrainConfig { arch: Arch::Msae, n_latents: Some(16), nesting_start: 4,
//!                         ..Default::default() };
//! let opts = TrainOptions { checkpoint_dir: Some("ckpt".into()),
//!                           checkpoint_every_secs: Some(600), resume: true,
//!                           ..Default::default() };
//! let out = train(&cfg, &data, &std, &[], &Device::Cpu, &opts, &mut |p| {
//!     let _ = (p.step, p.total_steps, p.loss); // progress bar
//! })?;
//! out.model.save(std::path::Path::new("model.safetensors"))?; // + model.json
//! let model = Sae::load(std::path::Path::new("model.safetensors"), &Device::Cpu)?;
//! # let _ = model; Ok(()) }
//! ```

pub mod config;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod training;

#[cfg(test)]
pub(crate) mod test_support {
    use candle_core::{Device, Tensor};

    /// A CPU matrix from literal rows.
    pub(crate) fn rows(rows: &[&[f32]]) -> Tensor {
        let n = rows[0].len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), n), &Device::Cpu).unwrap()
    }
}

pub use config::{Arch, TrainConfig};
pub use model::Sae;
pub use model::Standardization;
pub use training::{train, RowSource, TrainOptions, TrainOutcome, ValidationSet};

/// Errors of the SAE library.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("stopped on request after step {0}; its checkpoint holds the work so far")]
    Stopped(u64),
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
