//! `recovery`: how well an SAE's decoder recovers a planted dictionary (e.g. `synth`'s).
//!
//! For every true direction, the best cosine with any learned decoder row; reported as the mean
//! ("mean max cosine") and the share above 0.9. Also the optimal one-to-one matching of true and
//! learned directions (linear assignment), whose mean cosine cannot count one latent twice.

use anyhow::{bail, Result};

use crate::assignment::solve_max;
use crate::data::npy::Matrix;
use crate::kinds::sae_common::device;
use crate::kinds::train::load_model;
use crate::metrics::similarity::{normalized_rows, row_dot_products};
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::{Metrics, Step, StepContext};

pub struct Recovery;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "sae",
        ty: ParamType::Str,
        role: Role::Input,
        default: Default::Required,
        doc: "the trained SAE",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "truth",
        ty: ParamType::Str,
        role: Role::Input,
        default: Default::Required,
        doc: "the true dictionary [features, d], e.g. \"data.dictionary\"",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "threshold",
        ty: ParamType::Float,
        default: Default::Float(0.9),
        min: Some(-1.0),
        max: Some(1.0),
        doc: "a true direction counts as recovered above this cosine",
        ..ParamSpec::BASE
    },
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "matches",
    optional: false,
    doc: "per true feature: best latent, its cosine, assigned latent and cosine (JSON)",
}];

impl Step for Recovery {
    step_info!(kind: "recovery", version: 2, about: "how well an SAE's decoder recovers a known dictionary (mean max cosine, optimal matching)");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let sae = load_model(&ctx.input("sae")?.path, &dev)?;
        let truth = Matrix::open(&ctx.input("truth")?.path)?;
        if truth.cols() != sae.d {
            bail!(
                "the dictionary has {} columns but the SAE's inputs have {}",
                truth.cols(),
                sae.d
            );
        }
        let dec: Vec<f32> = sae.decoder.flatten_all()?.to_vec1()?;
        let d = sae.d;
        let t = normalized_rows(truth.data(), d);
        let l = normalized_rows(&dec, d);
        let (f, n) = (truth.rows(), sae.n);
        let c = row_dot_products(&t, &l, d);
        let threshold = ctx.float("threshold")? as f32;
        let mut best = Vec::with_capacity(f);
        for row in c.chunks(n) {
            let (j, v) = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc },
                );
            best.push((j, v));
        }
        let mean_max = best.iter().map(|b| b.1 as f64).sum::<f64>() / f as f64;
        let recovered = best.iter().filter(|b| b.1 > threshold).count() as f64 / f as f64;
        let assignment = solve_max(&c, f, n)?;
        let pairs = assignment.pairs();
        let assigned_mean = assignment.total / pairs.len().max(1) as f64;
        let matches: Vec<serde_json::Value> = (0..f)
            .map(|i| {
                let assigned = assignment.row_to_col[i];
                serde_json::json!({
                    "feature": i,
                    "best_latent": best[i].0,
                    "best_cos": best[i].1,
                    "assigned_latent": assigned,
                    "assigned_cos": assigned.map(|j| c[i * n + j]),
                })
            })
            .collect();
        std::fs::write(ctx.output_path("matches"), serde_json::to_vec(&matches)?)?;
        let mut metrics = Metrics::new();
        metrics.insert("mean_max_cos".into(), mean_max.into());
        metrics.insert("recovered".into(), recovered.into());
        metrics.insert("assigned_mean_cos".into(), assigned_mean.into());
        Ok(metrics)
    }
}
