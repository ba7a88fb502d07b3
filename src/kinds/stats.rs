//! `stats`: the standardisation statistics of a matrix — mean μ and scale s, applied as
//! `x ↦ (x − μ)·s` — computed once and cached, because training, extraction and scoring all need
//! them. The reference's scale divides by the mean *squared* norm; that stays the default so
//! numbers compare with the published code, and `scale_rule = "corrected"` divides by its root.

use anyhow::Result;

use crate::data::npy::Matrix;
use crate::metrics::stats::{dataset_stats, ScaleRule, StatsOptions, STATS_CHUNK_ROWS};
use crate::metrics::stats_file;
use crate::metrics::MatRef;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::{Metrics, Step, StepContext};

pub struct Stats;

static PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "data", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the matrix, e.g. \"data.train\"", ..ParamSpec::BASE },
    ParamSpec { name: "mean_center", ty: ParamType::Bool, default: Default::Bool(true), gridable: true, doc: "subtract the mean row", ..ParamSpec::BASE },
    ParamSpec { name: "target_norm", ty: ParamType::Float, default: Default::Absent, min: Some(0.0), doc: "target norm of the scale (default √d; 0 disables scaling)", ..ParamSpec::BASE },
    ParamSpec { name: "scale_rule", ty: ParamType::Choice(&["reference", "corrected"]), default: Default::Str("reference"), gridable: true, doc: "`reference`: s = target / mean‖x−μ‖² (as published); `corrected`: s = target / sqrt(mean‖x−μ‖²)", ..ParamSpec::BASE },
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "stats",
    optional: false,
    doc: "μ, s and the target norm (safetensors)",
}];

impl Step for Stats {
    step_info!(kind: "stats", version: 1, about: "standardisation statistics (mean and scale) of a matrix");

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let input = ctx.input("data")?;
        let m = Matrix::open(&input.path)?;
        let opts = StatsOptions {
            mean_center: ctx
                .params
                .get("mean_center")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
            target_norm: ctx.params.get("target_norm").and_then(|v| v.as_float()),
            scale_rule: match ctx.str("scale_rule")? {
                "corrected" => ScaleRule::Corrected,
                _ => ScaleRule::Reference,
            },
            chunk_rows: STATS_CHUNK_ROWS,
        };
        let mut src = MatRef::new(m.data(), m.rows(), m.cols())?;
        let stats = dataset_stats(&mut src, &opts)?;
        stats_file::save(&ctx.output_path("stats"), &stats)?;
        let mut metrics = Metrics::new();
        metrics.insert("rows".into(), m.rows().into());
        metrics.insert("scale".into(), stats.scale.into());
        metrics.insert("target_norm".into(), stats.target_norm.into());
        if let Some(sq) = stats.mean_sq_norm {
            metrics.insert("mean_sq_norm".into(), sq.into());
        }
        Ok(metrics)
    }
}
