//! msae: reproducible sparse-autoencoder experiments on CLIP embeddings.
//!
//! Two legs that meet in `cli` (the layers in docs/architecture.md, checked by
//! `tests/layers.rs`): the engine — `report` → `runner` → `experiment` → `store`, `diagnostic` —
//! and the domain — `kinds` (one file per step kind) → `analysis`, `embed` → `interop` → `sae`,
//! `data`, `metrics`, `assignment` → `matmul`. Both use the step contract (`step`) and nothing
//! of each other.

// Diagnostics carry a quoted source line and are built only on the error path; boxing them
// would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod analysis;
pub mod assignment;
pub mod cli;
pub mod data;
pub mod diagnostic;
pub mod embed;
pub mod experiment;
pub mod interop;
pub mod kinds;
pub mod matmul;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod sae;
pub mod step;
pub mod store;
