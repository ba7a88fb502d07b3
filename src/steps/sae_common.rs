//! Glue shared by the SAE steps: matrices as training sources, the candle device, statistics.

use anyhow::{bail, Context, Result};
use candle_core::Device;

use crate::data::npy::Matrix;
use crate::metrics::stats::{dataset_stats, ScaleRule, StatsOptions, STATS_CHUNK_ROWS};
use crate::metrics::MatRef;
use crate::sae::train::RowSource;
use crate::sae::Standardization;
use crate::steps::StepContext;

/// A memory-mapped matrix as a source of training rows: batches are gathered row by row from
/// the map, so only the batch itself is ever copied into memory.
pub struct MatrixRows<'a>(pub &'a Matrix);

impl RowSource for MatrixRows<'_> {
    fn n_rows(&self) -> usize {
        self.0.rows()
    }

    fn dim(&self) -> usize {
        self.0.cols()
    }

    fn gather(&self, rows: &[usize], out: &mut [f32]) -> crate::sae::Result<()> {
        let d = self.0.cols();
        if out.len() != rows.len() * d {
            return Err(crate::sae::SaeError::Data(
                "gather buffer has the wrong size".into(),
            ));
        }
        for (o, &r) in out.chunks_mut(d).zip(rows) {
            if r >= self.0.rows() {
                return Err(crate::sae::SaeError::Data(format!("row {r} out of range")));
            }
            o.copy_from_slice(self.0.row(r));
        }
        Ok(())
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

/// The standardisation parameters every SAE step shares (reference §3).
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
    let mut src = MatRef::new(m.data(), m.rows(), m.cols())?;
    let stats = dataset_stats(&mut src, opts)?;
    Ok((
        Standardization {
            mean: stats.mean,
            scale: stats.scale as f32,
        },
        stats.target_norm,
    ))
}
