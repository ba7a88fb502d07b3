//! Metrics and dataset statistics of the MSAE studies, on host data.
//!
//! Inputs are row-major `f32` matrices ([`MatRef`]: rows are samples); all
//! accumulation is in f64 unless a reference precision is reproduced on
//! purpose (the float32 dataset mean, see [`stats`]). Definitions follow the
//! reference implementation; where its names mislead, the functions here are
//! named for what they compute:
//!
//! | reference name / log label | here |
//! |---|---|
//! | `explained_variance(_full)`, "FVU" | [`fvu_per_sample`] (not [`fvu_dataset`]) |
//! | "Cosine similarity" | [`cosine_per_sample`] (`eps` 0 in training, 1e-8 in extract) |
//! | "MAE Distance" | [`l2_distance_per_sample`] |
//! | `normalized_mean_absolute_error` | [`normalized_mae_per_sample`] |
//! | `normalized_mean_squared_error` | [`normalized_mse_per_sample`] |
//! | `l0_messure`, "L0" | [`sparsity_fraction_per_sample`] (fraction of zeros; the count is [`l0_count_per_sample`]) |
//! | `orthogonal_decoder` | [`decoder_orthogonality`] |
//! | `identify_dead_neurons`, dead counts | [`ActivationCounter`], [`identify_dead`] |
//! | `cknna(…, topk=10)` | [`cknna`] |
//! | `SAEDataset` mean / scaling factor | [`dataset_stats`] |
//!
//! Per-sample metrics return one value per row; [`MeanStd`] turns a stream of
//! them into the mean and population standard deviation that extract and
//! score_topk report.

mod aggregate;
mod cknna;
mod dead;
mod error;
mod gemm;
mod matrix;
mod neighbours;
mod orthogonality;
mod reconstruction;
pub mod similarity;
mod sparsity;
pub mod stats;
pub mod stats_file;
mod torch_sum;

pub use aggregate::MeanStd;
pub use cknna::{cknna, cknna_from_neighbours, CKNNA_TOPK};
pub use dead::{identify_dead, ActivationCounter, DEAD_FREQUENCY_THRESHOLD};
pub use error::{MetricsError, Result};
pub use matrix::MatRef;
pub use neighbours::{linear_kernel_neighbours, KernelNeighbours, NeighboursBuilder};
pub use orthogonality::decoder_orthogonality;
pub use reconstruction::{
    cosine_per_sample, fvu_dataset, fvu_per_sample, l2_distance_per_sample,
    normalized_mae_per_sample, normalized_mse_per_sample, FvuDataset,
};
pub use sparsity::{
    check_k, keep_topk_per_row, l0_count_per_sample, sparsity_fraction_per_sample, topk_list,
};
pub use stats::{
    dataset_stats, DatasetStats, ScaleRule, SequentialRows, StatsOptions, STATS_CHUNK_ROWS,
};
pub use torch_sum::torch_column_sums;
