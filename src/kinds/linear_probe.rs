//! `linear_probe`: semantic preservation measured with a linear probe (docs/reference.md §8.5).
//!
//! Both matrices are standardised with the SAE's statistics (or their own, `statistics =
//! "data"`); a linear classifier is trained on the standardised training rows (each divided by
//! its L2 norm, done inside the probe) and selected by macro-F1 on the evaluation rows. The SAE's
//! dense reconstructions — kept in standardised space, as the reference does — and optionally its
//! top-k reconstructions are then fed to the same probe: KL(p_orig‖p_recon) and the argmax
//! agreement say how much class information survives the autoencoder.
//!
//! The trained probe itself is written as `probe` (safetensors, [`save_probe`]): its weights,
//! bias, class names and the standardisation of its training rows, so that a later step (`bias`)
//! applies exactly the classifier that was trained here ([`load_probe`]).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;

use crate::analysis::probe::{
    macro_f1, semantic_preservation, train_probe, LabelledSet, PreservationReport, ProbeOptions,
};
use crate::data::npy::Matrix;
use crate::kinds::import::read_lines;
use crate::kinds::sae_common::device;
use crate::kinds::sae_eval::{standardization_for, standardized_batch, stats_source};
use crate::kinds::train::load_model;
use crate::metrics::MatRef;
use crate::sae::model::{read_safetensors, serialize_host, write_atomic, HostTensor};
use crate::sae::{Sae, Standardization};
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Metrics, Step, StepContext};

pub struct LinearProbe;

static PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "sae", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the trained SAE, e.g. \"sae\" (a train step's model)", ..ParamSpec::BASE },
    ParamSpec { name: "train", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "probe training embeddings, e.g. \"train\" (an import's matrix)", ..ParamSpec::BASE },
    ParamSpec { name: "train_labels", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "one class label per training row, e.g. \"train.labels\"", ..ParamSpec::BASE },
    ParamSpec { name: "eval", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "evaluation embeddings (probe selection and the reported metrics)", ..ParamSpec::BASE },
    ParamSpec { name: "eval_labels", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "one class label per evaluation row; every label must occur in the training labels (see `unseen_labels`)", ..ParamSpec::BASE },
    ParamSpec { name: "unseen_labels", ty: ParamType::Choice(&["error", "drop"]), default: Default::Str("error"), doc: "evaluation rows whose label never occurs in training: `error` stops with a message, `drop` leaves them out and counts them in the report (small datasets with rare classes)", ..ParamSpec::BASE },
    ParamSpec { name: "ks", ty: ParamType::IntList, default: Default::Absent, min: Some(1.0), doc: "also measure the reconstructions from the k largest code entries, for these k", ..ParamSpec::BASE },
    ParamSpec { name: "max_epochs", ty: ParamType::Int, default: Default::Int(100), min: Some(1.0), doc: "probe training epochs at most", ..ParamSpec::BASE },
    ParamSpec { name: "patience", ty: ParamType::Int, default: Default::Int(5), min: Some(1.0), doc: "stop after this many epochs without a better evaluation macro-F1", ..ParamSpec::BASE },
    ParamSpec { name: "batch_size", ty: ParamType::Int, default: Default::Int(512), min: Some(1.0), doc: "probe training batch size", ..ParamSpec::BASE },
    ParamSpec { name: "lr", ty: ParamType::Float, default: Default::Float(1e-3), min: Some(0.0), doc: "AdamW learning rate", ..ParamSpec::BASE },
    ParamSpec { name: "weight_decay", ty: ParamType::Float, default: Default::Float(0.01), min: Some(0.0), doc: "AdamW decoupled weight decay (PyTorch's default, active in the reference)", ..ParamSpec::BASE },
    ParamSpec { name: "seed", ty: ParamType::Int, default: Default::ExperimentSeed, gridable: true, min: Some(0.0), doc: "probe initialisation and shuffling seed (defaults to the experiment's seed)", ..ParamSpec::BASE },
    ParamSpec { name: "use_last_epoch", ty: ParamType::Bool, default: Default::Bool(false), doc: "use the last epoch's probe instead of the best one (what the reference ends up doing)", ..ParamSpec::BASE },
    ParamSpec { name: "statistics", ty: ParamType::Choice(&["model", "data"]), default: Default::Str("model"), gridable: true, doc: "standardise with the model's training statistics or each matrix's own (reference: same vs cross modality)", ..ParamSpec::BASE },
    ParamSpec { name: "scale_rule", ty: ParamType::Choice(&["reference", "corrected"]), default: Default::Str("reference"), doc: "scale formula when statistics = \"data\"", ..ParamSpec::BASE },
];

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "report",
        optional: false,
        doc: "probe training log, classes, KL and agreement for the dense and each top-k reconstruction (JSON)",
    },
    OutputSpec {
        name: "probe",
        optional: false,
        doc: "the trained probe: weight [C, d], bias [C], the mean and scale that standardised its training rows, class names in the metadata (safetensors)",
    },
];

/// The `format` of a probe file's metadata.
pub const PROBE_FORMAT: &str = "msae-probe-v1";

/// The floor on a row's norm before the probe divides by it: `analysis::probe` trains and
/// applies the probe with this value, so a zero row is a zero input, never NaN.
pub const PROBE_NORM_EPS: f64 = 1e-12;

/// A linear probe as `linear_probe` trained it, on the host. It classifies a row `x` of the
/// original embedding space as `argmax(weight · u + bias)` with `v = (x − mean)·scale` and
/// `u = v / max(‖v‖, norm_eps)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedProbe {
    pub classes: Vec<String>,
    /// Row-major `[classes, dim]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// The standardisation of the probe's training rows (the SAE's statistics, or the training
    /// matrix's own with `statistics = "data"`).
    pub mean: Vec<f32>,
    pub scale: f32,
    pub norm_eps: f64,
}

impl SavedProbe {
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// The JSON in a probe file's header (`__metadata__.msae`).
#[derive(serde::Serialize, serde::Deserialize)]
struct ProbeMeta {
    format: String,
    classes: Vec<String>,
    dim: usize,
    norm_eps: f64,
    /// How the tensors are applied, for readers of the file without msae.
    applied_as: String,
}

/// Writes a probe file: tensors `weight` `[C, d]`, `bias` `[C]`, `mean` `[d]`, `scale` `[1]`
/// (float32), and the metadata (format, class names, width, norm floor) as JSON under `msae`.
pub fn save_probe(path: &Path, probe: &SavedProbe) -> Result<()> {
    let (c, d) = (probe.classes.len(), probe.dim());
    if probe.weight.len() != c * d || probe.bias.len() != c {
        bail!("a probe of {c} classes × {d} dimensions needs {} weights and {c} biases, not {} and {}", c * d, probe.weight.len(), probe.bias.len());
    }
    let tensors = vec![
        (
            "weight".to_string(),
            HostTensor::F32(probe.weight.clone(), vec![c, d]),
        ),
        (
            "bias".to_string(),
            HostTensor::F32(probe.bias.clone(), vec![c]),
        ),
        (
            "mean".to_string(),
            HostTensor::F32(probe.mean.clone(), vec![d]),
        ),
        (
            "scale".to_string(),
            HostTensor::F32(vec![probe.scale], vec![1]),
        ),
    ];
    let meta = ProbeMeta {
        format: PROBE_FORMAT.into(),
        classes: probe.classes.clone(),
        dim: d,
        norm_eps: probe.norm_eps,
        applied_as:
            "v = (x - mean) * scale; u = v / max(|v|, norm_eps); logits = weight @ u + bias".into(),
    };
    let info = HashMap::from([("msae".to_string(), serde_json::to_string(&meta)?)]);
    let bytes = serialize_host(&tensors, Some(info), path)?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads a probe file written by [`save_probe`]; `from` names where it came from (the step
/// instance), for errors.
pub fn load_probe(path: &Path, from: &str) -> Result<SavedProbe> {
    let not_probe = || {
        format!("`probe` (from {from}) is not a probe file; give a `linear_probe` step's `probe` output, e.g. probe = \"probe.probe\"")
    };
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (meta, tensors) = read_safetensors(&bytes, path).with_context(not_probe)?;
    let meta: ProbeMeta = meta
        .get("msae")
        .and_then(|m| serde_json::from_str(m).ok())
        .filter(|m: &ProbeMeta| m.format == PROBE_FORMAT)
        .ok_or_else(|| anyhow!(not_probe()))?;
    let (c, d) = (meta.classes.len(), meta.dim);
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        match tensors.get(name) {
            Some(HostTensor::F32(v, s)) if s == shape => Ok(v.clone()),
            _ => bail!("`probe` (from {from}) lacks a float32 tensor `{name}` of shape {shape:?}"),
        }
    };
    Ok(SavedProbe {
        weight: get("weight", &[c, d])?,
        bias: get("bias", &[c])?,
        mean: get("mean", &[d])?,
        scale: get("scale", &[1])?[0],
        classes: meta.classes,
        norm_eps: meta.norm_eps,
    })
}

/// Rows standardised and reconstructed per forward pass.
const BATCH_ROWS: usize = 4096;

/// A matrix standardised for the SAE, with its dense and top-k reconstructions (all host rows in
/// standardised space).
struct Prepared {
    x: Vec<f32>,
    dense: Vec<f32>,
    topk: Vec<Vec<f32>>,
}

impl Prepared {
    /// Keeps only the rows in `keep` (ascending row indices) of every matrix.
    fn keep_rows(&mut self, keep: &[usize], d: usize) {
        let select = |v: &mut Vec<f32>| {
            *v = keep
                .iter()
                .flat_map(|&r| v[r * d..(r + 1) * d].iter().copied())
                .collect();
        };
        select(&mut self.x);
        select(&mut self.dense);
        self.topk.iter_mut().for_each(select);
    }
}

fn prepare(
    sae: &Sae,
    m: &Matrix,
    std: &Standardization,
    ks: &[usize],
    dev: &Device,
) -> Result<Prepared> {
    let mut p = Prepared {
        x: Vec::with_capacity(m.rows() * m.cols()),
        dense: Vec::with_capacity(m.rows() * m.cols()),
        topk: ks.iter().map(|_| Vec::new()).collect(),
    };
    let err = |e: crate::sae::SaeError| anyhow!("{e}");
    for start in (0..m.rows()).step_by(BATCH_ROWS) {
        let end = (start + BATCH_ROWS).min(m.rows());
        let x = standardized_batch(m, start, end, std, dev)?;
        p.x.extend(x.flatten_all()?.to_vec1::<f32>()?);
        let out = sae.forward_eval(&x).map_err(err)?;
        p.dense
            .extend(out.dense_recon.flatten_all()?.to_vec1::<f32>()?);
        for (k, acc) in ks.iter().zip(p.topk.iter_mut()) {
            let z = sae.dense_code_topk(&x, Some(*k)).map_err(err)?;
            let r = sae.decode(&z).map_err(err)?;
            acc.extend(r.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(p)
}

fn labels_for(ctx: &StepContext, input: &str, matrix: &str, rows: usize) -> Result<Vec<String>> {
    let art = ctx.input(input)?;
    let labels = read_lines(&art.path)?;
    if labels.len() != rows {
        bail!(
            "`{input}` ({}) has {} labels but `{matrix}` has {rows} rows; they must match one to one",
            art.from,
            labels.len()
        );
    }
    Ok(labels)
}

fn pres_json(train: &PreservationReport, eval: &PreservationReport) -> serde_json::Value {
    serde_json::json!({ "train": train, "eval": eval })
}

impl Step for LinearProbe {
    step_info!(kind: "linear_probe", version: 5, about: "semantic preservation: a linear probe's KL and agreement between embeddings and their SAE reconstructions");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let sae = load_model(&ctx.input("sae")?.path, &dev)?;
        let train_m = Matrix::open(&ctx.input("train")?.path)?;
        let eval_m = Matrix::open(&ctx.input("eval")?.path)?;
        for (name, m) in [("train", &train_m), ("eval", &eval_m)] {
            if m.cols() != sae.d {
                bail!(
                    "`{name}` has {} columns but the SAE expects {}",
                    m.cols(),
                    sae.d
                );
            }
        }
        let train_labels = labels_for(ctx, "train_labels", "train", train_m.rows())?;
        let mut eval_labels = labels_for(ctx, "eval_labels", "eval", eval_m.rows())?;
        // With `unseen_labels = "drop"`, the evaluation rows whose class the probe never sees in
        // training are left out; with "error" the probe's own check reports them.
        let seen: std::collections::HashSet<&str> =
            train_labels.iter().map(String::as_str).collect();
        let keep: Vec<usize> = (0..eval_labels.len())
            .filter(|&r| seen.contains(eval_labels[r].as_str()))
            .collect();
        let dropped = match ctx.str("unseen_labels")? {
            "drop" => eval_labels.len() - keep.len(),
            _ => 0,
        };
        if dropped > 0 {
            if keep.is_empty() {
                bail!(
                    "no evaluation label occurs in the training labels: nothing left to evaluate"
                );
            }
            eval_labels = keep.iter().map(|&r| eval_labels[r].clone()).collect();
        }
        let source = stats_source(ctx.str("statistics")?, ctx.str("scale_rule")?);
        let ks: Vec<usize> = match ctx.params.get("ks") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(Value::as_int)
                .map(|k| (k as usize).min(sae.n))
                .collect(),
            _ => Vec::new(),
        };
        let bar = ctx.progress.bar(2, &format!("probe {}", ctx.instance));
        let train_std = standardization_for(&sae, &train_m, source)?;
        let eval_std = standardization_for(&sae, &eval_m, source)?;
        let tr = prepare(&sae, &train_m, &train_std, &ks, &dev)?;
        let mut ev = prepare(&sae, &eval_m, &eval_std, &ks, &dev)?;
        if dropped > 0 {
            ev.keep_rows(&keep, sae.d);
        }
        bar.set_position(1);

        let d = sae.d;
        let opts = ProbeOptions {
            lr: ctx.float("lr")?,
            weight_decay: ctx.float("weight_decay")?,
            batch_size: ctx.usize("batch_size")?,
            max_epochs: ctx.usize("max_epochs")?,
            patience: ctx.usize("patience")?,
            seed: ctx.int("seed")? as u64,
            use_last_epoch: ctx
                .params
                .get("use_last_epoch")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            ..ProbeOptions::default()
        };
        let (n_tr, n_ev) = (train_m.rows(), eval_labels.len());
        let trained = train_probe(
            LabelledSet {
                x: MatRef::new(&tr.x, n_tr, d)?,
                labels: &train_labels,
            },
            LabelledSet {
                x: MatRef::new(&ev.x, n_ev, d)?,
                labels: &eval_labels,
            },
            &opts,
            &dev,
        )
        .map_err(|e| anyhow!("{e}"))?;
        let preserve = |x: &[f32], recon: &[f32], rows: usize| -> Result<PreservationReport> {
            let (x, recon) = (MatRef::new(x, rows, d)?, MatRef::new(recon, rows, d)?);
            semantic_preservation(&trained.probe, x, recon, opts.batch_size)
                .map_err(|e| anyhow!("{e}"))
        };
        let dense_tr = preserve(&tr.x, &tr.dense, n_tr)?;
        let dense_ev = preserve(&ev.x, &ev.dense, n_ev)?;
        let mut metrics = Metrics::new();
        metrics.insert("macro_f1".into(), trained.report.final_macro_f1.into());
        metrics.insert("kl".into(), dense_ev.kl_mean.into());
        metrics.insert("agreement".into(), dense_ev.agreement_mean.into());
        if dropped > 0 {
            metrics.insert("eval_dropped".into(), dropped.into());
        }
        // The probe's macro-F1 on the evaluation reconstructions: how much of the class
        // information survives keeping k latents (the probe itself never sees reconstructions).
        let eval_classes = trained
            .classes
            .encode(&eval_labels)
            .map_err(|e| anyhow!("{e}"))?;
        let f1_of = |recon: &[f32]| -> Result<f64> {
            let pred = trained
                .probe
                .predict(MatRef::new(recon, n_ev, d)?, opts.batch_size)
                .map_err(|e| anyhow!("{e}"))?;
            macro_f1(&eval_classes, &pred).map_err(|e| anyhow!("{e}"))
        };
        let mut topk = serde_json::Map::new();
        for (i, k) in ks.iter().enumerate() {
            let t = preserve(&tr.x, &tr.topk[i], n_tr)?;
            let e = preserve(&ev.x, &ev.topk[i], n_ev)?;
            let f1 = f1_of(&ev.topk[i])?;
            metrics.insert(format!("kl@{k}"), e.kl_mean.into());
            metrics.insert(format!("agreement@{k}"), e.agreement_mean.into());
            metrics.insert(format!("macro_f1@{k}"), f1.into());
            let mut entry = pres_json(&t, &e);
            entry["eval_macro_f1"] = f1.into();
            topk.insert(k.to_string(), entry);
        }
        bar.finish_and_clear();
        let report = serde_json::json!({
            "class_names": trained.classes.names(),
            "probe": trained.report,
            "dense": pres_json(&dense_tr, &dense_ev),
            "topk": topk,
            "eval_rows_dropped_unseen_label": dropped,
        });
        std::fs::write(
            ctx.output_path("report"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        let (weight, bias) = trained.probe.to_host().map_err(|e| anyhow!("{e}"))?;
        save_probe(
            &ctx.output_path("probe"),
            &SavedProbe {
                classes: trained.classes.names().to_vec(),
                weight,
                bias,
                mean: train_std.mean.clone(),
                scale: train_std.scale,
                norm_eps: PROBE_NORM_EPS,
            },
        )?;
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_file_reads_back_as_written_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe");
        let probe = SavedProbe {
            classes: vec!["a".into(), "b".into()],
            weight: vec![0.5, -1.0, 2.0, 0.25, 3.0, -0.125],
            bias: vec![0.1, -0.2],
            mean: vec![1.0, 2.0, 3.0],
            scale: 0.3,
            norm_eps: PROBE_NORM_EPS,
        };
        save_probe(&path, &probe).unwrap();
        assert_eq!(load_probe(&path, "p").unwrap(), probe);
        std::fs::write(&path, b"not a probe").unwrap();
        let e = load_probe(&path, "p").unwrap_err().to_string();
        assert!(e.contains("`probe` (from p) is not a probe file"), "{e}");
    }
}
