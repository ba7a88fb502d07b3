//! msae: reproducible sparse-autoencoder experiments on CLIP embeddings.
//!
//! Layers, each using only those below it: `cli` → `experiment` (TOML → instances) → `runner`
//! (walk the DAG, cache, resume) → `store` (sled index + content-addressed objects) and `steps`
//! (one file per step kind) → `data` (matrix files). `report` renders tables, graphs, figures
//! and the report page.

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
pub mod metrics;
pub mod report;
pub mod runner;
pub mod sae;
pub mod steps;
pub mod store;
