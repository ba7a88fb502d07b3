//! `recovery`: how well an SAE's decoder recovers a known dictionary (`synth`'s, or any imported
//! matrix of true directions), with SynthSAEBench's ground-truth metrics
//! ([`crate::analysis::ground_truth`]): MCC over the optimal one-to-one matching of `|cos|`,
//! uniqueness, and per true feature its best latent. With `data`, what the SAE does to those
//! rows (L0, dead latents, shrinkage, explained variance); with their true `firing` as well, each
//! latent as a detector of its best feature's firing (precision, recall, F1, accuracy).

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use serde_json::json;

use crate::analysis::ground_truth::firing::{FiringCounts, TrueFiring};
use crate::analysis::ground_truth::samples::SampleTotals;
use crate::analysis::ground_truth::{mcc, uniqueness, AbsCosines};
use crate::data::csr::read_csr;
use crate::data::npy::Matrix;
use crate::kinds::sae_common::{device, open_sae_matrix};
use crate::kinds::sae_eval::{standardized_batch, unstandardize};
use crate::kinds::train::load_model;
use crate::sae::Sae;
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
        doc: "the true directions [features, d], e.g. \"data.dictionary\" or an import's matrix",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "data",
        ty: ParamType::Str,
        role: Role::Input,
        default: Default::Absent,
        doc: "rows to encode, e.g. \"data.test\": adds SAE L0, dead latents, shrinkage, explained variance",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "firing",
        ty: ParamType::Str,
        role: Role::Input,
        default: Default::Absent,
        doc: "the true activations of `data`'s rows, e.g. \"data.test_codes\" (CSR) or a [rows, features] .npy: adds precision, recall, F1, accuracy",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "batch_size",
        ty: ParamType::Int,
        default: Default::Int(10000),
        min: Some(1.0),
        doc: "rows of `data` encoded at a time (as `extract`'s, which matters for BatchTopK)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "threshold",
        ty: ParamType::Float,
        default: Default::Float(0.9),
        min: Some(0.0),
        max: Some(1.0),
        doc: "a true direction counts as recovered when its best |cosine| is above this",
        ..ParamSpec::BASE
    },
];

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "matches",
        optional: false,
        doc: "per true feature: best latent and its |cosine|, latent matched by the MCC matching and its |cosine| (JSON)",
    },
    OutputSpec {
        name: "latents",
        optional: false,
        doc: "per latent: best feature and its |cosine|; with `firing`, TP, FP, FN, TN, precision, recall, F1 (JSON)",
    },
];

/// The true firing input: CSR codes (a safetensors file) or a dense matrix.
fn open_firing(path: &std::path::Path) -> Result<Box<dyn TrueFiring>> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("cannot read {}", path.display()))?;
    // A safetensors file starts with its 8-byte header length, then the JSON header.
    if n == 9 && head[8] == b'{' {
        Ok(Box::new(read_csr(path)?))
    } else {
        Ok(Box::new(Matrix::open(path)?))
    }
}

/// Encodes `data` batch by batch: the sample totals, and the firing counts when `firing` is given.
fn encode_rows(
    ctx: &StepContext,
    dev: &Device,
    sae: &Sae,
    data: &Matrix,
    firing: Option<(&dyn TrueFiring, &mut FiringCounts)>,
) -> Result<SampleTotals> {
    let batch = ctx.usize("batch_size")?;
    let std = &sae.standardization;
    let mut totals = SampleTotals::new(sae.n, sae.d);
    let mut firing = firing;
    let rows = data.rows();
    let bar = ctx
        .progress
        .bar(rows as u64, &format!("recovery {}", ctx.instance));
    for start in (0..rows).step_by(batch) {
        let end = (start + batch).min(rows);
        let x = standardized_batch(data, start, end, std, dev)?;
        let code = sae.eval_code(&x, false).map_err(|e| anyhow!("{e}"))?;
        let x_hat = unstandardize(&sae.decode(&code).map_err(|e| anyhow!("{e}"))?, std)?;
        let z: Vec<f32> = code.flatten_all()?.to_vec1()?;
        totals.add(data.rows_slice(start, end), &x_hat, &z);
        if let Some((truth, counts)) = firing.as_mut() {
            counts.add(&z, start, *truth);
        }
        bar.set_position(end as u64);
    }
    bar.finish_and_clear();
    Ok(totals)
}

impl Step for Recovery {
    step_info!(kind: "recovery", version: 3, about: "how well an SAE's decoder recovers known true features: MCC, uniqueness, per-latent precision, recall and F1 (SynthSAEBench's metrics)");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let sae = load_model(&ctx.input("sae")?.path, &dev)?;
        let truth_in = ctx.input("truth")?.clone();
        let truth = Matrix::open(&truth_in.path)?;
        if truth.cols() != sae.d {
            bail!(
                "`truth` (from {}) has {} columns but the SAE's inputs have {}",
                truth_in.from,
                truth.cols(),
                sae.d
            );
        }
        if truth.rows() == 0 {
            bail!("`truth` (from {}) has no rows", truth_in.from);
        }
        let (has_data, has_firing) = (
            ctx.inputs.contains_key("data"),
            ctx.inputs.contains_key("firing"),
        );
        if has_firing && !has_data {
            bail!("`firing` needs `data`: the rows whose true activations it holds");
        }

        let dec: Vec<f32> = sae.decoder.flatten_all()?.to_vec1()?;
        let a = AbsCosines::new(&dec, truth.data(), sae.d);
        let matching = mcc(&a)?;
        let best_feature = a.best_feature_per_latent();
        let best_latent = a.best_latent_per_feature();
        let threshold = ctx.float("threshold")?;
        let f = truth.rows();
        let mean_max = best_latent.iter().map(|b| b.1).sum::<f64>() / f as f64;
        let recovered = best_latent.iter().filter(|b| b.1 > threshold).count() as f64 / f as f64;

        let mut metrics = Metrics::new();
        metrics.insert("mcc".into(), matching.mcc.into());
        metrics.insert("uniqueness".into(), uniqueness(&best_feature).into());
        metrics.insert("mean_max_abs_cos".into(), mean_max.into());
        metrics.insert("recovered_abs".into(), recovered.into());

        let mut counts = None;
        if has_data {
            let (data, data_in) = open_sae_matrix(ctx, "data", sae.d)?;
            let firing = match ctx.inputs.get("firing") {
                Some(input) => {
                    let firing = open_firing(&input.path)?;
                    if firing.rows() != data.rows() || firing.features() != f {
                        bail!(
                            "`firing` (from {}) holds {} rows of {} features, but `data` (from {}) has {} rows and `truth` {} features; it must be the true activations of exactly those rows",
                            input.from,
                            firing.rows(),
                            firing.features(),
                            data_in.from,
                            data.rows(),
                            f
                        );
                    }
                    Some(firing)
                }
                None => None,
            };
            let mut c = firing
                .as_ref()
                .map(|_| FiringCounts::new(best_feature.clone()));
            let pair = firing.as_deref().zip(c.as_mut());
            let s = encode_rows(ctx, &dev, &sae, &data, pair)?.summary();
            metrics.insert("sae_l0".into(), s.sae_l0.into());
            metrics.insert("dead_latents".into(), s.dead_latents.into());
            metrics.insert("shrinkage".into(), s.shrinkage.into());
            metrics.insert("explained_variance".into(), s.explained_variance.into());
            if let Some(c) = &c {
                let m = c.means();
                metrics.insert("true_l0".into(), c.true_l0().into());
                metrics.insert("precision".into(), m.precision.into());
                metrics.insert("recall".into(), m.recall.into());
                metrics.insert("f1".into(), m.f1.into());
                metrics.insert("accuracy".into(), m.accuracy.into());
            }
            counts = c;
        }

        let mut assigned = vec![None; f];
        for &(i, j) in &matching.pairs {
            assigned[j] = Some(i);
        }
        let matches: Vec<serde_json::Value> = (0..f)
            .map(|j| {
                json!({
                    "feature": j,
                    "best_latent": best_latent[j].0,
                    "best_abs_cos": best_latent[j].1,
                    "assigned_latent": assigned[j],
                    "assigned_abs_cos": assigned[j].map(|i| a.get(i, j)),
                })
            })
            .collect();
        std::fs::write(ctx.output_path("matches"), serde_json::to_vec(&matches)?)?;
        let latents: Vec<serde_json::Value> = best_feature
            .iter()
            .enumerate()
            .map(|(i, &j)| {
                let mut e = json!({
                    "latent": i,
                    "best_feature": j,
                    "best_abs_cos": a.get(i, j),
                });
                if let Some(c) = &counts {
                    let (tp, fp, fn_, tn) = c.counts(i);
                    let s = c.scores(i);
                    e["tp"] = tp.into();
                    e["fp"] = fp.into();
                    e["fn"] = fn_.into();
                    e["tn"] = tn.into();
                    e["precision"] = s.precision.into();
                    e["recall"] = s.recall.into();
                    e["f1"] = s.f1.into();
                }
                e
            })
            .collect();
        std::fs::write(ctx.output_path("latents"), serde_json::to_vec(&latents)?)?;
        Ok(metrics)
    }
}
