//! `zero_shot`: zero-shot classification recovered through an SAE. Each row of `data` is
//! classified as CLIP does it — logits `logit_scale · cos(x, t_c)` against one embedding per
//! class (`classes`, e.g. an `embed` step over the class names with prompt templates), the
//! prediction their argmax — and so are the SAE's dense reconstruction of the row and its
//! reconstructions from the k largest code entries, all in the original embedding space
//! (standardised, encoded, decoded, un-standardised). Accuracy against `labels`, mean
//! cross-entropy at the true class, agreement with the original predictions and the accuracy
//! recovered (reconstruction over original) say how much of the class information the SAE keeps.
//! The arithmetic is `analysis::zero_shot`.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};

use crate::analysis::zero_shot::{cosine_logits, unit_rows, Scores, Tally};
use crate::data::npy::Matrix;
use crate::kinds::import::read_lines;
use crate::kinds::sae_common::{device, open_sae_matrix};
use crate::kinds::sae_eval::{
    for_each_topk_reconstruction, standardization_for, standardized_batch, stats_source,
    unstandardize, EVAL_PARAMS,
};
use crate::kinds::train::load_model;
use crate::metrics::{topk_list, MatRef};
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Metrics, Step, StepContext};

pub struct ZeroShot;

static PARAMS: &[ParamSpec] = &[
    EVAL_PARAMS[0],
    ParamSpec { name: "data", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the embeddings to classify, e.g. \"images.matrix\"", ..ParamSpec::BASE },
    ParamSpec { name: "labels", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the class name of each row of `data`, one per line, e.g. \"images.labels\"; every one must be among `class_names`", ..ParamSpec::BASE },
    ParamSpec { name: "classes", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "one embedding per class, [C, d], e.g. an `embed` step over the class names with `templates`", ..ParamSpec::BASE },
    ParamSpec { name: "class_names", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the name of each row of `classes`, one per line, e.g. \"classes.texts\"", ..ParamSpec::BASE },
    ParamSpec { name: "ks", ty: ParamType::IntList, default: Default::Absent, min: Some(1.0), doc: "also classify the reconstructions from the k largest code entries, for these k (default 16, 32, … doubling, then n)", ..ParamSpec::BASE },
    ParamSpec { name: "logit_scale", ty: ParamType::Float, default: Default::Float(100.0), min: Some(0.0), doc: "the logits are logit_scale · cosine (CLIP's learned scale is 100); changes the cross-entropy, not the predictions", ..ParamSpec::BASE },
    ParamSpec { name: "batch_size", ty: ParamType::Int, default: Default::Int(4096), min: Some(1.0), doc: "rows per evaluation batch (reference BatchTopK inference uses the batch)", ..ParamSpec::BASE },
    EVAL_PARAMS[4],
    EVAL_PARAMS[5],
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "report",
    optional: false,
    doc: "classes, rows, and accuracy, cross-entropy, agreement and accuracy recovered of the original rows, the dense and each top-k reconstruction (JSON)",
}];

/// The class index of every label, through the names of the class rows; a label that names no
/// class is an error naming the row, the label and both inputs.
fn class_indices(
    labels: &[String],
    names: &[String],
    labels_from: &str,
    names_from: &str,
) -> Result<Vec<u32>> {
    let mut index: HashMap<&str, u32> = HashMap::new();
    for (c, name) in names.iter().enumerate() {
        if let Some(first) = index.insert(name.as_str(), c as u32) {
            bail!(
                "`class_names` (from {names_from}) names class `{name}` twice (rows {first} and {c}); each class needs one name"
            );
        }
    }
    labels
        .iter()
        .enumerate()
        .map(|(row, label)| {
            index.get(label.as_str()).copied().ok_or_else(|| {
                anyhow!(
                    "label `{label}` (row {row} of `labels`, from {labels_from}) is not among the {} `class_names` (from {names_from}); zero-shot classification has no class for it",
                    names.len()
                )
            })
        })
        .collect()
}

impl Step for ZeroShot {
    step_info!(kind: "zero_shot", version: 1, about: "zero-shot classification (cosine to class embeddings) of embeddings and of their SAE reconstructions: accuracy, cross-entropy, agreement, accuracy recovered");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let sae = load_model(&ctx.input("sae")?.path, &dev)?;
        let (m, data_in) = open_sae_matrix(ctx, "data", sae.d)?;
        let classes_in = ctx.input("classes")?;
        let classes = Matrix::open(&classes_in.path)?;
        if classes.cols() != sae.d {
            bail!(
                "`classes` (from {}) has {} columns but the SAE and `data` have {}; the class embeddings must come from the same embedding space",
                classes_in.from,
                classes.cols(),
                sae.d
            );
        }
        let n_classes = classes.rows();
        if n_classes == 0 {
            bail!("`classes` (from {}) has no rows", classes_in.from);
        }
        let names_in = ctx.input("class_names")?;
        let names = read_lines(&names_in.path)?;
        if names.len() != n_classes {
            bail!(
                "`class_names` (from {}) has {} names but `classes` (from {}) has {n_classes} rows; they must match one to one",
                names_in.from,
                names.len(),
                classes_in.from
            );
        }
        let labels_in = ctx.input("labels")?;
        let labels = read_lines(&labels_in.path)?;
        if labels.len() != m.rows() {
            bail!(
                "`labels` (from {}) has {} labels but `data` (from {}) has {} rows; they must match one to one",
                labels_in.from,
                labels.len(),
                data_in.from,
                m.rows()
            );
        }
        let targets = class_indices(&labels, &names, &labels_in.from, &names_in.from)?;
        let mut ks: Vec<usize> = match ctx.params.get("ks") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(Value::as_int)
                .map(|k| (k as usize).min(sae.n))
                .collect(),
            _ => topk_list(sae.n),
        };
        let mut seen = std::collections::HashSet::new();
        ks.retain(|k| seen.insert(*k));
        let logit_scale = ctx.float("logit_scale")?;
        let batch = ctx.usize("batch_size")?;
        let source = stats_source(ctx.str("statistics")?, ctx.str("scale_rule")?);
        let std = standardization_for(&sae, &m, source)?;

        let d = sae.d;
        let unit = unit_rows(MatRef::new(classes.data(), n_classes, d)?);
        let unit = MatRef::new(&unit, n_classes, d)?;
        let logits_of = |x: &[f32], rows: usize| -> Result<Vec<f64>> {
            cosine_logits(MatRef::new(x, rows, d)?, unit, logit_scale).map_err(|e| anyhow!("{e}"))
        };
        let err = |e: crate::sae::SaeError| anyhow!("{e}");
        let mut original = Tally::default();
        let mut dense = Tally::default();
        let mut per_k: Vec<Tally> = ks.iter().map(|_| Tally::default()).collect();
        let bar = ctx
            .progress
            .bar(m.rows() as u64, &format!("zero_shot {}", ctx.instance));
        for start in (0..m.rows()).step_by(batch) {
            let end = (start + batch).min(m.rows());
            let rows = end - start;
            let t = &targets[start..end];
            let raw = m.rows_slice(start, end);
            // The original predictions are the reference of every reconstruction (and agree
            // with themselves).
            let l = logits_of(raw, rows)?;
            let reference = crate::analysis::zero_shot::argmax_rows(&l, n_classes);
            original
                .push(&l, n_classes, t, &reference)
                .map_err(|e| anyhow!("{e}"))?;
            let x = standardized_batch(&m, start, end, &std, &dev)?;
            let out = sae.forward_eval(&x).map_err(err)?;
            let x_hat = unstandardize(&out.dense_recon, &std)?;
            dense
                .push(&logits_of(&x_hat, rows)?, n_classes, t, &reference)
                .map_err(|e| anyhow!("{e}"))?;
            for_each_topk_reconstruction(&sae, &x, &std, &ks, |i, _, x_hat| {
                per_k[i]
                    .push(&logits_of(x_hat, rows)?, n_classes, t, &reference)
                    .map_err(|e| anyhow!("{e}"))?;
                Ok(())
            })?;
            bar.set_position(end as u64);
        }
        bar.finish_and_clear();

        let base = original.accuracy();
        let original = original.scores(base);
        let dense = dense.scores(base);
        let per_k: Vec<(usize, Scores)> = ks
            .iter()
            .zip(&per_k)
            .map(|(&k, t)| (k, t.scores(base)))
            .collect();
        let mut metrics = Metrics::new();
        metrics.insert("accuracy".into(), original.accuracy.into());
        metrics.insert("dense_accuracy".into(), dense.accuracy.into());
        metrics.insert("dense_recovered".into(), dense.accuracy_recovered.into());
        metrics.insert("dense_agreement".into(), dense.agreement.into());
        let mut topk = serde_json::Map::new();
        for (k, s) in &per_k {
            metrics.insert(format!("accuracy@{k}"), s.accuracy.into());
            metrics.insert(format!("recovered@{k}"), s.accuracy_recovered.into());
            topk.insert(k.to_string(), serde_json::to_value(s)?);
        }
        let report = serde_json::json!({
            "classes": n_classes,
            "class_names": names,
            "rows": m.rows(),
            "logit_scale": logit_scale,
            "ks": ks,
            "original": original,
            "dense": dense,
            "topk": topk,
        });
        std::fs::write(
            ctx.output_path("report"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        Ok(metrics)
    }
}
