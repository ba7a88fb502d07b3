//! `validate`: per-epoch validation of a training run on any matrix (reference §6.5), computed
//! from the run's epoch snapshots. Because it is its own step, adding or removing a validation
//! set never retrains the SAE: the weights' key does not depend on it.
//!
//! Each validation matrix is standardised with its own statistics (reference §3.3: training-time
//! validation sets use their own μ and s). Per epoch: the reference's unweighted means over
//! batches of the dense loss, FVU, cosine, L2 distance and zero fraction, for the sparse and the
//! dense outputs, and the decoder orthogonality.

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::data::npy::Matrix;
use crate::experiment::value::Value;
use crate::metrics::{
    cknna, cosine_per_sample, decoder_orthogonality, fvu_per_sample, l2_distance_per_sample,
    sparsity_fraction_per_sample, MatRef, CKNNA_TOPK,
};
use crate::sae::Sae;
use crate::steps::sae_common::{device, standardization_of, stats_options};
use crate::steps::snapshots::Snapshots;
use crate::steps::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::steps::{Metrics, Step, StepContext};

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
    for start in (0..m.rows()).step_by(batch) {
        let end = (start + batch).min(m.rows());
        let rows = end - start;
        let x = crate::steps::sae_eval::standardized_batch(m, start, end, std, &dev)?;
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
    })
}

impl Step for Validate {
    step_info!(kind: "validate", version: 1, about: "per-epoch validation metrics of a training run on any matrix (from its epoch snapshots)");

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
        Ok(metrics)
    }
}
