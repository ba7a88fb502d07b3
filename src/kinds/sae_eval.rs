//! Evaluation of an SAE on a matrix: standardise a batch, encode, decode, measure — the shared
//! core of `score_topk`, `extract` and `validate` (docs/reference.md §8.1–§8.2).

use anyhow::{anyhow, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::data::npy::Matrix;
use crate::metrics::stats::{dataset_stats, ScaleRule, StatsOptions, STATS_CHUNK_ROWS};
use crate::metrics::{
    cknna, cosine_per_sample, fvu_per_sample, keep_topk_per_row, l0_count_per_sample,
    normalized_mae_per_sample, sparsity_fraction_per_sample, ActivationCounter, MatRef, MeanStd,
    CKNNA_TOPK,
};
use crate::sae::{Sae, Standardization};
use crate::step::spec::{Default, ParamSpec, ParamType, Role};

/// The six parameters every evaluation of a trained SAE on a matrix declares (`extract` and
/// `score_topk` take exactly these, `score_topk` adds `ks`), written once: the SAE, the matrix,
/// the batch size, CKNNA on or off, and which statistics standardise the matrix.
pub const EVAL_PARAMS: [ParamSpec; 6] = [
    ParamSpec { name: "sae", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the trained SAE, e.g. \"sae\" (a train step's model)", ..ParamSpec::BASE },
    ParamSpec { name: "data", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the matrix to evaluate on, e.g. \"data.test\"", ..ParamSpec::BASE },
    ParamSpec { name: "batch_size", ty: ParamType::Int, default: Default::Int(10000), min: Some(1.0), doc: "rows per evaluation batch (CKNNA and reference BatchTopK use full batches of this size)", ..ParamSpec::BASE },
    ParamSpec { name: "cknna", ty: ParamType::Bool, default: Default::Bool(false), doc: "compute CKNNA on full batches as the reference does (slow on the CPU)", ..ParamSpec::BASE },
    ParamSpec { name: "statistics", ty: ParamType::Choice(&["model", "data"]), default: Default::Str("model"), gridable: true, doc: "standardise with the model's training statistics or the data's own (reference: same vs cross modality)", ..ParamSpec::BASE },
    ParamSpec { name: "scale_rule", ty: ParamType::Choice(&["reference", "corrected"]), default: Default::Str("reference"), doc: "scale formula when statistics = \"data\"", ..ParamSpec::BASE },
];

/// Which statistics standardise the evaluated data (docs/reference.md §3.3).
#[derive(Clone, Copy, PartialEq)]
pub enum StatsSource {
    /// The model's training μ and s ("same modality").
    Model,
    /// The data's own statistics, mean-centred iff the model's μ is non-zero, with the model's
    /// target norm ("cross modality").
    Data(ScaleRule),
}

pub fn stats_source(name: &str, rule: &str) -> StatsSource {
    let rule = if rule == "corrected" {
        ScaleRule::Corrected
    } else {
        ScaleRule::Reference
    };
    if name == "data" {
        StatsSource::Data(rule)
    } else {
        StatsSource::Model
    }
}

/// The standardisation to apply to `m` when evaluating `sae` on it.
pub fn standardization_for(sae: &Sae, m: &Matrix, source: StatsSource) -> Result<Standardization> {
    match source {
        StatsSource::Model => Ok(sae.standardization.clone()),
        StatsSource::Data(rule) => {
            let mean_center = sae.standardization.mean.iter().any(|v| *v != 0.0);
            let mut src = MatRef::new(m.data(), m.rows(), m.cols())?;
            let stats = dataset_stats(
                &mut src,
                &StatsOptions {
                    mean_center,
                    target_norm: Some(sae.target_norm as f64),
                    scale_rule: rule,
                    chunk_rows: STATS_CHUNK_ROWS,
                },
            )?;
            Ok(Standardization {
                mean: stats.mean,
                scale: stats.scale as f32,
            })
        }
    }
}

/// Rows `start..end` of `m`, standardised, on the device.
pub fn standardized_batch(
    m: &Matrix,
    start: usize,
    end: usize,
    std: &Standardization,
    dev: &Device,
) -> Result<Tensor> {
    let x = Tensor::from_slice(m.rows_slice(start, end), (end - start, m.cols()), dev)?;
    std.apply(&x).map_err(|e| anyhow!("{e}"))
}

/// Back to the original embedding space: `y / s + μ`, as host rows.
pub fn unstandardize(y: &Tensor, std: &Standardization) -> Result<Vec<f32>> {
    let mu = Tensor::from_slice(&std.mean, std.mean.len(), y.device())?;
    let raw = (y / std.scale as f64)?.broadcast_add(&mu)?;
    Ok(raw.flatten_all()?.to_vec1::<f32>()?)
}

/// For each `k` of `ks` in turn: the batch's code kept to its `k` largest entries per row (ties
/// to the lower latent, as `keep_topk_per_row`) and its reconstruction in the original embedding
/// space, handed to `each(position in ks, code, x̂ rows)`. `x` is the standardised batch of
/// `rows` rows. The dense code is computed once and copied per `k`, so scoring several `k`s costs
/// one encoder product, and every step that scores "top-k reconstructions" shares one definition.
pub fn for_each_topk_reconstruction(
    sae: &Sae,
    x: &Tensor,
    std: &Standardization,
    ks: &[usize],
    mut each: impl FnMut(usize, &[f32], &[f32]) -> Result<()>,
) -> Result<()> {
    if ks.is_empty() {
        return Ok(());
    }
    let rows = x.dim(0)?;
    let dense: Vec<f32> = sae
        .dense_code_topk(x, None)
        .map_err(|e| anyhow!("{e}"))?
        .flatten_all()?
        .to_vec1()?;
    for (i, &k) in ks.iter().enumerate() {
        let mut z = dense.clone();
        keep_topk_per_row(&mut z, rows, sae.n, k)?;
        let zt = Tensor::from_slice(&z, (rows, sae.n), x.device())?;
        let recon = sae.decode(&zt).map_err(|e| anyhow!("{e}"))?;
        let x_hat = unstandardize(&recon, std)?;
        each(i, &z, &x_hat)?;
    }
    Ok(())
}

/// Mean and population std of each per-sample metric, plus dead latents, of one (x, x̂, z) pair
/// stream (docs/reference.md §8.1 aggregation).
pub struct PairMetrics {
    fvu: MeanStd,
    nmae: MeanStd,
    cos: MeanStd,
    zero_fraction: MeanStd,
    l0: MeanStd,
    cknna: MeanStd,
    counter: ActivationCounter,
    cknna_batch: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairSummary {
    pub fvu: [f64; 2],
    pub mae: [f64; 2],
    pub cs: [f64; 2],
    /// Fraction of zero latents (what the reference calls "L0").
    pub l0: [f64; 2],
    /// Active latents per sample (a count).
    pub active: [f64; 2],
    pub cknnas: [f64; 2],
    pub number_of_dead_neurons: usize,
}

impl PairMetrics {
    /// `cknna_batch`: compute CKNNA(x, z) on batches of exactly this many rows (the reference
    /// computes it only on full batches); `None` skips it (it is slow on the CPU).
    pub fn new(n_latents: usize, cknna_batch: Option<usize>) -> Self {
        PairMetrics {
            fvu: MeanStd::new(),
            nmae: MeanStd::new(),
            cos: MeanStd::new(),
            zero_fraction: MeanStd::new(),
            l0: MeanStd::new(),
            cknna: MeanStd::new(),
            counter: ActivationCounter::new(n_latents),
            cknna_batch,
        }
    }

    /// Adds a batch: `x` and `x_hat` in the original space, `z` the code ([rows, n]).
    pub fn push(&mut self, x: &[f32], x_hat: &[f32], z: &[f32], rows: usize) -> Result<()> {
        let d = x.len() / rows.max(1);
        let n = z.len() / rows.max(1);
        let xm = MatRef::new(x, rows, d)?;
        let hm = MatRef::new(x_hat, rows, d)?;
        let zm = MatRef::new(z, rows, n)?;
        self.fvu.extend_from(&fvu_per_sample(xm, hm)?);
        self.nmae.extend_from(&normalized_mae_per_sample(xm, hm)?);
        self.cos.extend_from(&cosine_per_sample(xm, hm, 1e-8)?);
        self.zero_fraction
            .extend_from(&sparsity_fraction_per_sample(zm));
        let counts: Vec<f64> = l0_count_per_sample(zm).iter().map(|&c| c as f64).collect();
        self.l0.extend_from(&counts);
        self.counter.update(zm)?;
        if self.cknna_batch == Some(rows) {
            self.cknna.push(cknna(xm, zm, CKNNA_TOPK)?);
        }
        Ok(())
    }

    pub fn summary(&self) -> PairSummary {
        PairSummary {
            fvu: self.fvu.mean_std(),
            mae: self.nmae.mean_std(),
            cs: self.cos.mean_std(),
            l0: self.zero_fraction.mean_std(),
            active: self.l0.mean_std(),
            cknnas: self.cknna.mean_std(),
            number_of_dead_neurons: self.counter.never_active(),
        }
    }
}

/// What an evaluation step starts from: the SAE from input `sae`, the matrix from input `data`
/// (checked to have the SAE's width) and the standardisation chosen by the `statistics` and
/// `scale_rule` parameters.
pub struct Evaluation {
    pub device: Device,
    pub sae: Sae,
    pub data: Matrix,
    pub std: Standardization,
}

impl Evaluation {
    pub fn open(ctx: &crate::step::StepContext) -> Result<Evaluation> {
        let device = crate::kinds::sae_common::device(ctx.device)?;
        let sae = crate::kinds::train::load_model(&ctx.input("sae")?.path, &device)?;
        let data = Matrix::open(&ctx.input("data")?.path)?;
        if data.cols() != sae.d {
            anyhow::bail!(
                "the data has {} columns but the SAE expects {}",
                data.cols(),
                sae.d
            );
        }
        let source = stats_source(ctx.str("statistics")?, ctx.str("scale_rule")?);
        let std = standardization_for(&sae, &data, source)?;
        Ok(Evaluation {
            device,
            sae,
            data,
            std,
        })
    }
}
