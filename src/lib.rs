//! msae: reproducible sparse-autoencoder experiments on CLIP embeddings.
//!
//! Layers, each using only those below it (the list in README.md, checked by `tests/layers.rs`):
//! `cli` → `report` (tables, graphs, figures, the report page) → `runner` (walk the DAG, cache,
//! resume) → `experiment` (TOML → instances) → `steps` (one file per step kind) → `analysis`,
//! `embed` → `interop` → `sae`, `data` (matrix files), `metrics`, `store` (sled index +
//! content-addressed objects), `assignment`, `diagnostic`.

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
pub mod matmul;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod sae;
pub mod steps;
pub mod store;
