//! `align`: how similar the dictionaries of two SAEs are (docs/reference.md §8.4, after "Sparse
//! Autoencoders Trained on the Same Data Learn Different Features").
//!
//! The unit-normalised directions of the two models (decoder rows, or encoder columns) give a
//! cosine matrix `[n_a, n_b]` (NaN → 0); the optimal one-to-one matching maximising the total
//! cosine pairs `min(n_a, n_b)` latents, and the mean cosine over the pairs is the score.

use crate::analysis::alignment::align;
use crate::kinds::sae_common::device;
use crate::kinds::train::load_model;
use crate::metrics::similarity::normalized_rows;
use crate::sae::Sae;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::{Metrics, Step, StepContext};
use anyhow::{anyhow, bail, Result};

pub struct Align;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "a",
        ty: ParamType::Str,
        role: Role::Input,
        default: Default::Required,
        doc: "the first SAE, e.g. \"sae[seed=1]\"",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "b",
        ty: ParamType::Str,
        role: Role::Input,
        default: Default::Required,
        doc: "the second SAE, e.g. \"sae[seed=2]\"",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "directions",
        ty: ParamType::Choice(&["decoder", "encoder"]),
        default: Default::Str("decoder"),
        gridable: true,
        doc: "compare decoder rows or encoder columns (one per latent)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "block_rows",
        ty: ParamType::Int,
        role: Role::Exec,
        default: Default::Int(512),
        min: Some(1.0),
        doc: "rows of the cosine matrix computed per block",
        ..ParamSpec::BASE
    },
];

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "assignment",
        optional: false,
        doc: "the matched latent pairs with their cosines (JSON)",
    },
    OutputSpec {
        name: "histogram",
        optional: false,
        doc: "20 bins over [−1, 1] of the matched cosines (JSON)",
    },
];

const BINS: usize = 20;

/// One latent direction per row, `[n, d]`, unit-normalised.
fn directions(sae: &Sae, which: &str) -> Result<Vec<f32>> {
    let raw: Vec<f32> = if which == "encoder" {
        sae.encoder.t()?.contiguous()?.flatten_all()?.to_vec1()?
    } else {
        sae.decoder.flatten_all()?.to_vec1()?
    };
    Ok(normalized_rows(&raw, sae.d))
}

/// Counts of `values` in `BINS` equal bins over [−1, 1] (values outside are clamped into the end
/// bins).
pub fn histogram(values: &[f32]) -> Vec<usize> {
    let mut counts = vec![0usize; BINS];
    for &v in values {
        let pos = ((v as f64 + 1.0) / 2.0 * BINS as f64).floor();
        let bin = if pos.is_nan() {
            continue;
        } else {
            pos.clamp(0.0, (BINS - 1) as f64) as usize
        };
        counts[bin] += 1;
    }
    counts
}

fn median(values: &[f32]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl Step for Align {
    step_info!(kind: "align", version: 2, about: "optimal one-to-one matching of two SAEs' latents by direction cosine (dictionary alignment)");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let a = load_model(&ctx.input("a")?.path, &dev)?;
        let b = load_model(&ctx.input("b")?.path, &dev)?;
        if a.d != b.d {
            bail!(
                "the SAEs work on inputs of different widths ({} for `a`, {} for `b`); only SAEs of the same embedding space can be aligned",
                a.d,
                b.d
            );
        }
        let which = ctx.str("directions")?;
        let (ua, ub) = (directions(&a, which)?, directions(&b, which)?);
        let (na, nb, d) = (a.n, b.n, a.d);
        let aligned = align(&ua, &ub, d, ctx.usize("block_rows")?).map_err(|e| anyhow!("{e}"))?;
        let (pairs, matched) = (&aligned.pairs, &aligned.matched);
        let json: Vec<serde_json::Value> = pairs
            .iter()
            .zip(matched.iter())
            .map(|(&(i, j), &cos)| serde_json::json!({"a": i, "b": j, "cos": cos}))
            .collect();
        std::fs::write(
            ctx.output_path("assignment"),
            serde_json::to_vec(&serde_json::json!({
                "directions": which,
                "n_a": na,
                "n_b": nb,
                "pairs": json,
            }))?,
        )?;
        let edges: Vec<f64> = (0..=BINS)
            .map(|i| -1.0 + 2.0 * i as f64 / BINS as f64)
            .collect();
        std::fs::write(
            ctx.output_path("histogram"),
            serde_json::to_vec_pretty(&serde_json::json!({
                "edges": edges,
                "counts": histogram(matched),
            }))?,
        )?;
        let mut metrics = Metrics::new();
        metrics.insert("mean_matched_cos".into(), aligned.mean().into());
        metrics.insert("median_matched_cos".into(), median(matched).into());
        metrics.insert("n_pairs".into(), pairs.len().into());
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_cover_minus_one_to_one() {
        let h = histogram(&[-1.0, -0.85, 0.0, 0.99, 1.0, f32::NAN]);
        assert_eq!(h.len(), BINS);
        assert_eq!(h[0], 1);
        assert_eq!(h[1], 1);
        assert_eq!(h[10], 1);
        assert_eq!(h[19], 2);
        assert_eq!(h.iter().sum::<usize>(), 5);
    }

    #[test]
    fn median_of_even_and_odd_lists() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
