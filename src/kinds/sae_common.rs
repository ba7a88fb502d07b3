//! Glue shared by the SAE steps: matrices as training sources, the candle device, statistics.

use anyhow::{bail, Context, Result};
use candle_core::Device;

use crate::data::npy::Matrix;
use crate::data::reader::RowReader;
use crate::metrics::stats::{dataset_stats, ScaleRule, StatsOptions, STATS_CHUNK_ROWS};
use crate::sae::training::source::RowSource;
use crate::sae::Standardization;
use crate::step::{InputArtifact, StepContext};

/// A matrix file as a source of training rows: each batch is gathered with positioned reads,
/// so only the batch itself is ever held in memory (see [`RowReader`]).
pub struct MatrixRows(pub RowReader);

impl RowSource for MatrixRows {
    fn n_rows(&self) -> usize {
        self.0.rows()
    }

    fn dim(&self) -> usize {
        self.0.cols()
    }

    fn gather(&self, rows: &[usize], out: &mut [f32]) -> crate::sae::Result<()> {
        self.0
            .gather(rows, out)
            .map_err(|e| crate::sae::SaeError::Data(format!("{e:#}")))
    }
}

/// Statistics read the file in chunks through the same positioned reads.
struct StatsRows(RowReader);

impl crate::metrics::stats::SequentialRows for StatsRows {
    fn rows(&self) -> usize {
        self.0.rows()
    }

    fn dim(&self) -> usize {
        self.0.cols()
    }

    fn read(
        &mut self,
        start: usize,
        end: usize,
    ) -> std::result::Result<&[f32], Box<dyn std::error::Error + Send + Sync>> {
        self.0.chunk(start, end).map_err(|e| e.into())
    }
}

/// The candle device named by `--device` (already validated by the CLI).
pub fn device(name: &str) -> Result<Device> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = name.strip_prefix("cuda:") {
        let ordinal: usize = n.parse().context("GPU number")?;
        return Device::new_cuda(ordinal)
            .with_context(|| format!("cannot open GPU {ordinal}; is a CUDA driver installed?"));
    }
    bail!("unknown device `{name}`")
}

/// The standardisation parameters every SAE step shares (docs/reference.md §3).
pub fn stats_options(ctx: &StepContext) -> Result<StatsOptions> {
    Ok(StatsOptions {
        mean_center: ctx
            .params
            .get("mean_center")
            .and_then(|v| v.as_bool())
            .unwrap_or(true),
        target_norm: ctx.params.get("target_norm").and_then(|v| v.as_float()),
        scale_rule: match ctx.params.get("scale_rule").and_then(|v| v.as_str()) {
            Some("corrected") => ScaleRule::Corrected,
            _ => ScaleRule::Reference,
        },
        chunk_rows: STATS_CHUNK_ROWS,
    })
}

/// μ and s of a matrix as the model's standardisation.
pub fn standardization_of(m: &Matrix, opts: &StatsOptions) -> Result<(Standardization, f64)> {
    let mut src = StatsRows(RowReader::new(m)?);
    let stats = dataset_stats(&mut src, opts)?;
    Ok((
        Standardization {
            mean: stats.mean,
            scale: stats.scale as f32,
        },
        stats.target_norm,
    ))
}

/// Opens the matrix input `param` and checks that it is non-empty and has the SAE's width `d`.
pub fn open_sae_matrix(
    ctx: &StepContext,
    param: &str,
    d: usize,
) -> Result<(Matrix, InputArtifact)> {
    let input = ctx.input(param)?.clone();
    let m = Matrix::open(&input.path)?;
    if m.cols() != d {
        bail!(
            "`{param}` (from {}) has {} columns but the SAE expects {d}; it must come from the embedding space the SAE was trained on",
            input.from,
            m.cols()
        );
    }
    if m.rows() == 0 {
        bail!("`{param}` (from {}) has no rows", input.from);
    }
    Ok((m, input))
}
