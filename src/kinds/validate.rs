//! `validate`: per-epoch validation of a training run on any matrix (docs/reference.md §6.5),
//! computed from the run's epoch snapshots. Because it is its own step, adding or removing a
//! validation set never retrains the SAE: the weights' key does not depend on it.
//!
//! Each validation matrix is standardised with its own statistics (docs/reference.md §3.3:
//! training-time validation sets use their own μ and s). Per epoch: the reference's unweighted
//! means over batches of the dense loss, FVU, cosine, L2 distance and zero fraction, for the
//! sparse and the dense outputs, and the decoder orthogonality. For Matryoshka models the same
//! means for every nesting level (docs/reference.md §4.8), plus the level's active latents per
//! sample.

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::data::npy::Matrix;
use crate::kinds::sae_common::{device, standardization_of, stats_options};
use crate::kinds::snapshots::Snapshots;
use crate::metrics::{
    cknna, cosine_per_sample, decoder_orthogonality, fvu_per_sample, l0_count_per_sample,
    l2_distance_per_sample, sparsity_fraction_per_sample, MatRef, CKNNA_TOPK,
};
use crate::sae::Sae;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Metrics, Step, StepContext};

pub struct Validate;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "sae",
        ty: ParamType::Str,
        role: Role::Input,
        default: Default::Required,
        doc: "a training run's epoch snapshots, e.g. \"sae.snapshots\"",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "data",
        ty: ParamType::Str,
        role: Role::Input,
        default: Default::Required,
        doc: "the validation matrix",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "batch_size",
        ty: ParamType::Int,
        default: Default::Int(4096),
        min: Some(1.0),
        doc: "rows per batch; metrics are unweighted means over batches as in the reference",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "cknna",
        ty: ParamType::Bool,
        default: Default::Bool(false),
        doc: "also CKNNA(x̂, x) per batch (slow on the CPU)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "mean_center",
        ty: ParamType::Bool,
        default: Default::Bool(true),
        doc: "subtract the validation set's mean",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "target_norm",
        ty: ParamType::Float,
        default: Default::Absent,
        min: Some(0.0),
        doc: "target norm of the scale (default √d)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "scale_rule",
        ty: ParamType::Choice(&["reference", "corrected"]),
        default: Default::Str("reference"),
        doc: "scale formula of the validation set's own statistics",
        ..ParamSpec::BASE
    },
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "epochs",
    optional: false,
    doc: "per-epoch validation metrics (JSON)",
}];

#[derive(Debug, Default, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub fvu_sparse: f64,
    pub fvu_dense: f64,
    pub cos_sparse: f64,
    pub cos_dense: f64,
    pub l2_sparse: f64,
    pub l2_dense: f64,
    pub zero_fraction_sparse: f64,
    pub zero_fraction_dense: f64,
    pub cknna_sparse: Option<f64>,
    pub cknna_dense: Option<f64>,
    pub orthogonality: f64,
    pub batches: usize,
    /// Matryoshka only: one entry per nesting level, smallest k first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<LevelMetrics>,
}

/// Validation metrics of one Matryoshka nesting level: code `Z = cap(TopK_k(P))`, reconstruction
/// `Z·W_dec + b_pre`. The first level is the sparse output, the last (k = n) the dense one.
#[derive(Debug, Default, Serialize)]
pub struct LevelMetrics {
    pub k: usize,
    pub fvu: f64,
    pub cos: f64,
    pub l2: f64,
    pub zero_fraction: f64,
    /// Non-zero latents per sample (a count, at most k).
    pub active: f64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The reference's per-epoch validation of one model on one standardised matrix.
fn validate_epoch(
    sae: &Sae,
    m: &Matrix,
    batch: usize,
    with_cknna: bool,
    epoch: usize,
    std: &crate::sae::Standardization,
) -> Result<EpochMetrics> {
    let dev = sae.device().clone();
    let mut acc: [Vec<f64>; 10] = std::array::from_fn(|_| Vec::new());
    // Per level: batch means of FVU, cosine, L2 distance, zero fraction, active latents.
    let mut level_acc: Vec<[Vec<f64>; 5]> = sae
        .levels
        .iter()
        .map(|_| std::array::from_fn(|_| Vec::new()))
        .collect();
    for start in (0..m.rows()).step_by(batch) {
        let end = (start + batch).min(m.rows());
        let rows = end - start;
        let x = crate::kinds::sae_eval::standardized_batch(m, start, end, std, &dev)?;
        let out = sae.forward_eval(&x).map_err(|e| anyhow!("{e}"))?;
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let xm = MatRef::new(&xs, rows, sae.d)?;
        for (slot, (recon, code)) in [
            (&out.sparse_recon, &out.sparse_code),
            (&out.dense_recon, &out.dense_code),
        ]
        .into_iter()
        .enumerate()
        {
            let r: Vec<f32> = recon.flatten_all()?.to_vec1()?;
            let z: Vec<f32> = code.flatten_all()?.to_vec1()?;
            let rm = MatRef::new(&r, rows, sae.d)?;
            acc[slot].push(mean(&fvu_per_sample(xm, rm)?));
            acc[2 + slot].push(mean(&cosine_per_sample(xm, rm, 0.0)?));
            acc[4 + slot].push(mean(&l2_distance_per_sample(xm, rm)?));
            acc[6 + slot].push(mean(&sparsity_fraction_per_sample(MatRef::new(
                &z, rows, sae.n,
            )?)));
            if with_cknna && rows >= 4 {
                acc[8 + slot].push(cknna(rm, xm, CKNNA_TOPK.min(rows - 1))?);
            }
        }
        for (level, out) in level_acc
            .iter_mut()
            .zip(sae.level_outputs(&x).map_err(|e| anyhow!("{e}"))?)
        {
            let (_, code, recon) = out.map_err(|e| anyhow!("{e}"))?;
            let r: Vec<f32> = recon.flatten_all()?.to_vec1()?;
            let z: Vec<f32> = code.flatten_all()?.to_vec1()?;
            let rm = MatRef::new(&r, rows, sae.d)?;
            let zm = MatRef::new(&z, rows, sae.n)?;
            level[0].push(mean(&fvu_per_sample(xm, rm)?));
            level[1].push(mean(&cosine_per_sample(xm, rm, 0.0)?));
            level[2].push(mean(&l2_distance_per_sample(xm, rm)?));
            level[3].push(mean(&sparsity_fraction_per_sample(zm)));
            let active: Vec<f64> = l0_count_per_sample(zm).iter().map(|&c| c as f64).collect();
            level[4].push(mean(&active));
        }
    }
    let dec: Vec<f32> = sae.decoder.flatten_all()?.to_vec1()?;
    let opt = |v: &Vec<f64>| (!v.is_empty()).then(|| mean(v));
    Ok(EpochMetrics {
        epoch,
        fvu_sparse: mean(&acc[0]),
        fvu_dense: mean(&acc[1]),
        cos_sparse: mean(&acc[2]),
        cos_dense: mean(&acc[3]),
        l2_sparse: mean(&acc[4]),
        l2_dense: mean(&acc[5]),
        zero_fraction_sparse: mean(&acc[6]),
        zero_fraction_dense: mean(&acc[7]),
        cknna_sparse: opt(&acc[8]),
        cknna_dense: opt(&acc[9]),
        orthogonality: decoder_orthogonality(MatRef::new(&dec, sae.n, sae.d)?)?,
        batches: acc[0].len(),
        levels: sae
            .levels
            .iter()
            .zip(&level_acc)
            .map(|(&k, a)| LevelMetrics {
                k,
                fvu: mean(&a[0]),
                cos: mean(&a[1]),
                l2: mean(&a[2]),
                zero_fraction: mean(&a[3]),
                active: mean(&a[4]),
            })
            .collect(),
    })
}

impl Step for Validate {
    step_info!(kind: "validate", version: 3, about: "per-epoch validation metrics of a training run on any matrix (from its epoch snapshots)");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let input = ctx.input("sae")?;
        let snaps = Snapshots::open(&input.path)
            .map_err(|e| anyhow!("{e:#}\n  = help: `sae` must be a train step's snapshots output, e.g. \"sae.snapshots\""))?;
        let m = Matrix::open(&ctx.input("data")?.path)?;
        let (std, _) = standardization_of(&m, &stats_options(ctx)?)?;
        let batch = ctx.usize("batch_size")?;
        let with_cknna = ctx
            .params
            .get("cknna")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let bar = ctx
            .progress
            .bar(snaps.epochs() as u64, &format!("validate {}", ctx.instance));
        let mut epochs = Vec::with_capacity(snaps.epochs());
        for e in 0..snaps.epochs() {
            let sae = Sae::load_bytes(snaps.epoch(e), &input.path, &dev)
                .map_err(|err| anyhow!("{err}"))?;
            if sae.d != m.cols() {
                anyhow::bail!(
                    "the validation matrix has {} columns but the SAE expects {}",
                    m.cols(),
                    sae.d
                );
            }
            epochs.push(validate_epoch(&sae, &m, batch, with_cknna, e, &std)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        std::fs::write(
            ctx.output_path("epochs"),
            serde_json::to_vec_pretty(&epochs)?,
        )?;
        let last = epochs
            .last()
            .ok_or_else(|| anyhow!("the run has no epoch"))?;
        let mut metrics = Metrics::new();
        metrics.insert("epochs".into(), epochs.len().into());
        metrics.insert("fvu_sparse".into(), last.fvu_sparse.into());
        metrics.insert("fvu_dense".into(), last.fvu_dense.into());
        metrics.insert("cos_sparse".into(), last.cos_sparse.into());
        metrics.insert(
            "zero_fraction_sparse".into(),
            last.zero_fraction_sparse.into(),
        );
        metrics.insert("orthogonality".into(), last.orthogonality.into());
        for l in &last.levels {
            metrics.insert(format!("level_fvu@{}", l.k), l.fvu.into());
            metrics.insert(format!("level_cos@{}", l.k), l.cos.into());
            metrics.insert(format!("level_active@{}", l.k), l.active.into());
        }
        Ok(metrics)
    }
}
