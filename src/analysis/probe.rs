//! Semantic preservation with a linear probe (docs/reference.md §8.5, `linear_eval.py`).
//!
//! A linear classifier is trained on standardised embeddings (each row divided
//! by its L2 norm) to predict class labels. The dictionary's reconstructions
//! are then fed to the same probe: the KL divergence between the class
//! distributions of an original row and of its reconstruction, and whether
//! their argmax classes agree, measure how much of the class-relevant content
//! survives the autoencoder.
//!
//! Training runs in candle on the device the caller passes; the training loop
//! keeps data and parameters on that device and only reads back one loss per
//! epoch and the evaluation predictions.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{AnalysisError, Result};
use crate::metrics::{MatRef, MeanStd};

/// Smallest row norm used when normalising probe inputs: a zero row becomes a
/// zero input instead of NaN.
const NORM_EPS: f64 = 1e-12;

/// Class names indexed in order of first appearance in the training labels;
/// identical names are one class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Classes {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Classes {
    /// Indexes the classes of the training labels.
    pub fn from_labels(labels: &[String]) -> Result<Self> {
        let mut classes = Classes::default();
        for label in labels {
            if !classes.index.contains_key(label) {
                let id = u32::try_from(classes.names.len())
                    .map_err(|_| AnalysisError::invalid("probe", "too many classes"))?;
                classes.index.insert(label.clone(), id);
                classes.names.push(label.clone());
            }
        }
        Ok(classes)
    }

    /// Class index of every label; a label without a class is an error.
    pub fn encode(&self, labels: &[String]) -> Result<Vec<u32>> {
        labels
            .iter()
            .enumerate()
            .map(|(row, l)| {
                self.index
                    .get(l)
                    .copied()
                    .ok_or_else(|| AnalysisError::UnknownLabel {
                        label: l.clone(),
                        row,
                    })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Embeddings (already standardised by the caller) with one label per row.
#[derive(Clone, Copy, Debug)]
pub struct LabelledSet<'a> {
    pub x: MatRef<'a>,
    pub labels: &'a [String],
}

/// PyTorch's `ReduceLROnPlateau(mode="max")` with its default relative
/// threshold: the learning rate is multiplied by `factor` once the monitored
/// F1 has not exceeded `best·(1 + threshold)` for more than `patience` epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub factor: f64,
    pub patience: usize,
    pub threshold: f64,
}

impl Default for Plateau {
    fn default() -> Self {
        Self {
            factor: 0.5,
            patience: 5,
            threshold: 1e-4,
        }
    }
}

/// Running state of [`Plateau`].
#[derive(Clone, Debug)]
struct PlateauState {
    cfg: Plateau,
    best: f64,
    bad: usize,
}

impl PlateauState {
    fn new(cfg: Plateau) -> Self {
        Self {
            cfg,
            best: f64::NEG_INFINITY,
            bad: 0,
        }
    }

    /// Records one epoch's F1; returns the reduced learning rate when the
    /// plateau has lasted more than `patience` epochs.
    fn step(&mut self, f1: f64, lr: f64) -> Option<f64> {
        if f1 > self.best * (1.0 + self.cfg.threshold) {
            self.best = f1;
            self.bad = 0;
            return None;
        }
        self.bad += 1;
        if self.bad > self.cfg.patience {
            self.bad = 0;
            return Some(lr * self.cfg.factor);
        }
        None
    }
}

/// Probe training settings; the defaults are the reference's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeOptions {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (PyTorch AdamW semantics; its default 0.01 is
    /// active in the reference).
    pub weight_decay: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// Stop once the evaluation macro-F1 has not strictly improved for this
    /// many consecutive epochs.
    pub patience: usize,
    /// Learning-rate reduction on a plateau of the evaluation F1. With the
    /// reference settings it cannot act before early stopping except when F1
    /// keeps improving by less than the relative threshold.
    pub plateau: Option<Plateau>,
    /// Seeds initialisation and shuffling.
    pub seed: u64,
    /// Rows per forward pass when evaluating (speed only).
    pub eval_batch_size: usize,
    /// Use the last epoch's probe instead of the best epoch's. The reference
    /// keeps the "best" state by reference rather than copying it, so it ends
    /// up using the last epoch's weights; set this to reproduce that. By
    /// default a copy of the best epoch's weights is kept and used.
    pub use_last_epoch: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            batch_size: 512,
            max_epochs: 100,
            patience: 5,
            plateau: Some(Plateau::default()),
            seed: 42,
            eval_batch_size: 4096,
            use_last_epoch: false,
        }
    }
}

impl ProbeOptions {
    fn adamw_params(&self) -> ParamsAdamW {
        ParamsAdamW {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    fn check(&self) -> Result<()> {
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(AnalysisError::invalid(
                "probe",
                "batch sizes must be at least 1",
            ));
        }
        if self.max_epochs == 0 {
            return Err(AnalysisError::invalid(
                "probe",
                "max_epochs must be at least 1",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(AnalysisError::invalid(
                "probe",
                format!("learning rate must be positive, got {}", self.lr),
            ));
        }
        Ok(())
    }
}

/// One epoch of probe training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Unweighted mean of the batch losses (cross-entropy).
    pub loss: f64,
    /// Macro-F1 on the evaluation set after the epoch.
    pub macro_f1: f64,
    /// Learning rate used during the epoch.
    pub lr: f64,
}

/// What probe training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub classes: usize,
    pub train_rows: usize,
    pub eval_rows: usize,
    pub epochs: Vec<EpochRecord>,
    /// 1-based epoch with the highest evaluation macro-F1 (first on ties).
    pub best_epoch: usize,
    pub best_macro_f1: f64,
    pub stopped_early: bool,
    pub used_last_epoch: bool,
    /// Macro-F1 of the probe that is returned (equals `best_macro_f1` unless
    /// `use_last_epoch`).
    pub final_macro_f1: f64,
    pub seconds: f64,
}

/// Mean and population standard deviation of the per-sample KL divergence
/// and argmax agreement between originals and reconstructions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreservationReport {
    pub rows: usize,
    /// `KL(p‖q)`, p from the original row, q from its reconstruction (nats).
    pub kl_mean: f64,
    pub kl_std: f64,
    /// Fraction of rows whose predicted class is unchanged (the reference
    /// logs this ×100 as a percentage).
    pub agreement_mean: f64,
    pub agreement_std: f64,
}

/// Probe training plus preservation on the training and evaluation sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearEvalReport {
    pub class_names: Vec<String>,
    pub probe: ProbeReport,
    pub train: PreservationReport,
    pub eval: PreservationReport,
}

/// An affine map `d → C` applied to unit-norm rows.
#[derive(Clone, Debug)]
pub struct ProbeWeights {
    /// `[C, d]`.
    weight: Tensor,
    /// `[C]`.
    bias: Tensor,
}

/// Divides every row of `x` (`[b, d]`) by its L2 norm.
fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(NORM_EPS)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Rows `start..end` of a matrix, row-major.
fn rows_of<'a>(x: MatRef<'a>, start: usize, end: usize) -> &'a [f32] {
    &x.data()[start * x.cols()..end * x.cols()]
}

/// Uploads a host matrix as an f32 tensor `[rows, cols]`.
fn upload(x: MatRef<'_>, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(x.data(), (x.rows(), x.cols()), device)?)
}

impl ProbeWeights {
    /// A probe from host weights (`weight` row-major `[classes, dim]`).
    pub fn from_host(
        weight: &[f32],
        bias: &[f32],
        classes: usize,
        dim: usize,
        device: &Device,
    ) -> Result<Self> {
        if weight.len() != classes * dim || bias.len() != classes {
            return Err(AnalysisError::invalid(
                "probe",
                format!(
                    "weights of {} and bias of {} values do not fit {classes} classes × {dim} dimensions",
                    weight.len(),
                    bias.len()
                ),
            ));
        }
        Ok(Self {
            weight: Tensor::from_slice(weight, (classes, dim), device)?,
            bias: Tensor::from_slice(bias, classes, device)?,
        })
    }

    /// PyTorch's default `nn.Linear` initialisation: weight and bias uniform
    /// in `(−1/√d, 1/√d)` (kaiming-uniform with a = √5 gives this bound).
    fn init(classes: usize, dim: usize, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        let bound = 1.0 / (dim.max(1) as f64).sqrt();
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect()
        };
        let w = draw(classes * dim);
        let b = draw(classes);
        Self::from_host(&w, &b, classes, dim, device)
    }

    pub fn classes(&self) -> usize {
        self.bias.dims1().unwrap_or(0)
    }

    pub fn dim(&self) -> usize {
        self.weight.dims2().map(|(_, d)| d).unwrap_or(0)
    }

    pub fn device(&self) -> &Device {
        self.weight.device()
    }

    /// Weight `[classes, dim]` row-major and bias, copied to the host.
    pub fn to_host(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.weight.flatten_all()?.to_vec1()?, self.bias.to_vec1()?))
    }

    /// Logits of rows that are already unit-norm (`[b, d]` → `[b, C]`).
    fn logits_unit(&self, x_unit: &Tensor) -> Result<Tensor> {
        Ok(x_unit
            .matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?)
    }

    /// Logits of raw (standardised) rows: each row is divided by its norm first.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.logits_unit(&unit_rows(x)?)
    }

    fn check_dim(&self, cols: usize) -> Result<()> {
        if cols != self.dim() {
            return Err(AnalysisError::invalid(
                "probe",
                format!("rows have {cols} dimensions, the probe {}", self.dim()),
            ));
        }
        Ok(())
    }

    /// Predicted class of every row of an on-device unit-norm matrix.
    fn predict_unit(&self, x_unit: &Tensor, batch: usize) -> Result<Vec<u32>> {
        let n = x_unit.dims2()?.0;
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let logits = self.logits_unit(&x_unit.narrow(0, start, len)?)?;
            out.extend(logits.argmax(1)?.to_vec1::<u32>()?);
            start += len;
        }
        Ok(out)
    }

    /// Predicted class (argmax of the logits) of every row of `x`.
    pub fn predict(&self, x: MatRef<'_>, batch: usize) -> Result<Vec<u32>> {
        self.check_dim(x.cols())?;
        let batch = batch.max(1);
        let mut out = Vec::with_capacity(x.rows());
        let mut start = 0;
        while start < x.rows() {
            let end = (start + batch).min(x.rows());
            let rows = MatRef::new(rows_of(x, start, end), end - start, x.cols())?;
            let t = unit_rows(&upload(rows, self.device())?)?;
            out.extend(self.logits_unit(&t)?.argmax(1)?.to_vec1::<u32>()?);
            start = end;
        }
        Ok(out)
    }
}

/// Macro-averaged F1 as scikit-learn's `f1_score(average="macro")`: the mean
/// over every class occurring in `y_true` or `y_pred` of the per-class F1
/// `2·TP / (2·TP + FP + FN)` (0 for a class that is never predicted correctly,
/// including one that is predicted but absent from the truth).
pub fn macro_f1(y_true: &[u32], y_pred: &[u32]) -> Result<f64> {
    if y_true.len() != y_pred.len() {
        return Err(AnalysisError::invalid(
            "macro-F1",
            format!(
                "{} true labels but {} predictions",
                y_true.len(),
                y_pred.len()
            ),
        ));
    }
    if y_true.is_empty() {
        return Err(AnalysisError::invalid("macro-F1", "no samples"));
    }
    let classes = y_true.iter().chain(y_pred).copied().max().unwrap_or(0) as usize + 1;
    let (mut tp, mut fp, mut fn_) = (
        vec![0u64; classes],
        vec![0u64; classes],
        vec![0u64; classes],
    );
    let mut present = vec![false; classes];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        present[t as usize] = true;
        present[p as usize] = true;
        if t == p {
            tp[t as usize] += 1;
        } else {
            fp[p as usize] += 1;
            fn_[t as usize] += 1;
        }
    }
    let (sum, count) = (0..classes)
        .filter(|&c| present[c])
        .map(|c| {
            let denom = 2 * tp[c] + fp[c] + fn_[c];
            if denom == 0 {
                0.0
            } else {
                2.0 * tp[c] as f64 / denom as f64
            }
        })
        .fold((0.0, 0usize), |(s, n), f| (s + f, n + 1));
    Ok(sum / count as f64)
}

/// Checks a labelled set against itself and the expected dimension.
fn check_set(what: &'static str, set: &LabelledSet<'_>, dim: Option<usize>) -> Result<()> {
    if set.x.rows() != set.labels.len() {
        return Err(AnalysisError::invalid(
            "probe",
            format!(
                "{what}: {} rows but {} labels",
                set.x.rows(),
                set.labels.len()
            ),
        ));
    }
    if set.x.rows() == 0 {
        return Err(AnalysisError::invalid("probe", format!("{what}: no rows")));
    }
    if u32::try_from(set.x.rows()).is_err() {
        return Err(AnalysisError::invalid(
            "probe",
            format!("{what}: more than {} rows", u32::MAX),
        ));
    }
    if let Some(d) = dim {
        if set.x.cols() != d {
            return Err(AnalysisError::invalid(
                "probe",
                format!(
                    "{what}: rows have {} dimensions, the training rows {d}",
                    set.x.cols()
                ),
            ));
        }
    }
    Ok(())
}

/// A trained probe with its classes and training log.
#[derive(Clone, Debug)]
pub struct TrainedProbe {
    pub probe: ProbeWeights,
    pub classes: Classes,
    pub report: ProbeReport,
}

/// Trains the probe on `train`, selecting the epoch by macro-F1 on `eval`.
pub fn train_probe(
    train: LabelledSet<'_>,
    eval: LabelledSet<'_>,
    opts: &ProbeOptions,
    device: &Device,
) -> Result<TrainedProbe> {
    let started = Instant::now();
    opts.check()?;
    check_set("training set", &train, None)?;
    let d = train.x.cols();
    check_set("evaluation set", &eval, Some(d))?;
    let classes = Classes::from_labels(train.labels)?;
    let y_tr = classes.encode(train.labels)?;
    let y_ev = classes.encode(eval.labels)?;
    let n = train.x.rows();
    let c = classes.len();

    let x_tr = unit_rows(&upload(train.x, device)?)?;
    let x_ev = unit_rows(&upload(eval.x, device)?)?;
    let y_tr = Tensor::from_slice(&y_tr, n, device)?;

    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let init = ProbeWeights::init(c, d, &mut rng, device)?;
    let w = Var::from_tensor(&init.weight)?;
    let b = Var::from_tensor(&init.bias)?;
    let mut opt = AdamW::new(vec![w.clone(), b.clone()], opts.adamw_params())?;

    let mut epochs = Vec::new();
    let mut best_f1 = f64::NEG_INFINITY;
    let mut best_epoch = 0;
    // A deep copy: `Var::set` overwrites the parameter storage in place, so a
    // clone of the tensor handle would follow later updates (the reference's
    // mistake of keeping the best state by reference).
    let mut best: Option<ProbeWeights> = None;
    let mut bad_epochs = 0;
    let mut plateau = opts.plateau.clone().map(PlateauState::new);
    let mut lr = opts.lr;
    let mut stopped_early = false;
    let mut order: Vec<u32> = (0..n as u32).collect();

    for epoch in 1..=opts.max_epochs {
        order.shuffle(&mut rng);
        let perm = Tensor::from_slice(&order, n, device)?;
        let mut loss_sum = Tensor::zeros((), DType::F32, device)?;
        let mut batches = 0usize;
        let mut start = 0;
        while start < n {
            let len = opts.batch_size.min(n - start);
            let idx = perm.narrow(0, start, len)?;
            let xb = x_tr.index_select(&idx, 0)?;
            let yb = y_tr.index_select(&idx, 0)?;
            let logits = xb
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            let loss = candle_nn::loss::cross_entropy(&logits, &yb)?;
            opt.backward_step(&loss)?;
            loss_sum = (loss_sum + loss.detach())?;
            batches += 1;
            start += len;
        }
        let loss = loss_sum.to_scalar::<f32>()? as f64 / batches as f64;
        let current = ProbeWeights {
            weight: w.as_tensor().detach(),
            bias: b.as_tensor().detach(),
        };
        let f1 = macro_f1(&y_ev, &current.predict_unit(&x_ev, opts.eval_batch_size)?)?;
        epochs.push(EpochRecord {
            epoch,
            loss,
            macro_f1: f1,
            lr,
        });
        tracing::debug!(epoch, loss, macro_f1 = f1, "probe epoch");

        if let Some(new_lr) = plateau.as_mut().and_then(|p| p.step(f1, lr)) {
            lr = new_lr;
            opt.set_learning_rate(lr);
        }
        if f1 > best_f1 {
            best_f1 = f1;
            best_epoch = epoch;
            bad_epochs = 0;
            if !opts.use_last_epoch {
                best = Some(ProbeWeights {
                    weight: w.as_tensor().copy()?.detach(),
                    bias: b.as_tensor().copy()?.detach(),
                });
            }
        } else {
            bad_epochs += 1;
            if bad_epochs >= opts.patience {
                stopped_early = true;
                break;
            }
        }
    }

    let last = ProbeWeights {
        weight: w.as_tensor().copy()?.detach(),
        bias: b.as_tensor().copy()?.detach(),
    };
    let probe = match best {
        Some(best) if !opts.use_last_epoch => best,
        _ => last,
    };
    let final_macro_f1 = macro_f1(&y_ev, &probe.predict_unit(&x_ev, opts.eval_batch_size)?)?;
    let report = ProbeReport {
        classes: c,
        train_rows: n,
        eval_rows: eval.x.rows(),
        epochs,
        best_epoch,
        best_macro_f1: best_f1,
        stopped_early,
        used_last_epoch: opts.use_last_epoch,
        final_macro_f1,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(TrainedProbe {
        probe,
        classes,
        report,
    })
}

/// Per-sample KL divergence `KL(p‖q)` (from log-softmax for stability) and
/// argmax agreement between the probe's predictions for the rows of `x` and
/// of their reconstructions `x_hat`, processed `batch` rows at a time.
pub fn semantic_preservation(
    probe: &ProbeWeights,
    x: MatRef<'_>,
    x_hat: MatRef<'_>,
    batch: usize,
) -> Result<PreservationReport> {
    if x.rows() != x_hat.rows() || x.cols() != x_hat.cols() {
        return Err(AnalysisError::invalid(
            "semantic preservation",
            format!(
                "originals are {}×{} but reconstructions {}×{}",
                x.rows(),
                x.cols(),
                x_hat.rows(),
                x_hat.cols()
            ),
        ));
    }
    probe.check_dim(x.cols())?;
    let batch = batch.max(1);
    let device = probe.device();
    let (mut kl_stats, mut agree_stats) = (MeanStd::new(), MeanStd::new());
    let mut start = 0;
    while start < x.rows() {
        let end = (start + batch).min(x.rows());
        let rows = end - start;
        let xo = MatRef::new(rows_of(x, start, end), rows, x.cols())?;
        let xr = MatRef::new(rows_of(x_hat, start, end), rows, x.cols())?;
        let lo = probe.logits(&upload(xo, device)?)?;
        let lr = probe.logits(&upload(xr, device)?)?;
        let lp = candle_nn::ops::log_softmax(&lo, 1)?;
        let lq = candle_nn::ops::log_softmax(&lr, 1)?;
        let kl = (lp.exp()? * (&lp - &lq)?)?.sum(1)?.to_vec1::<f32>()?;
        let agree = lo
            .argmax(1)?
            .eq(&lr.argmax(1)?)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        kl.iter().for_each(|&v| kl_stats.push(v as f64));
        agree.iter().for_each(|&v| agree_stats.push(v as f64));
        start = end;
    }
    let [kl_mean, kl_std] = kl_stats.mean_std();
    let [agreement_mean, agreement_std] = agree_stats.mean_std();
    Ok(PreservationReport {
        rows: x.rows(),
        kl_mean,
        kl_std,
        agreement_mean,
        agreement_std,
    })
}

/// The whole of `linear_eval.py`: trains the probe, then measures semantic
/// preservation on the training and the evaluation set. `train_recon` and
/// `eval_recon` are the dictionary's reconstructions of the two sets, in the
/// same (standardised) space and row order as the originals.
pub fn linear_eval(
    train: LabelledSet<'_>,
    eval: LabelledSet<'_>,
    train_recon: MatRef<'_>,
    eval_recon: MatRef<'_>,
    opts: &ProbeOptions,
    device: &Device,
) -> Result<LinearEvalReport> {
    let trained = train_probe(train, eval, opts, device)?;
    let train_pres = semantic_preservation(&trained.probe, train.x, train_recon, opts.batch_size)?;
    let eval_pres = semantic_preservation(&trained.probe, eval.x, eval_recon, opts.batch_size)?;
    Ok(LinearEvalReport {
        class_names: trained.classes.names().to_vec(),
        probe: trained.report,
        train: train_pres,
        eval: eval_pres,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn macro_f1_hand_examples() {
        // Classes 0, 1, 2 in truth; class 2 never predicted.
        // y_true = [0, 0, 1, 1, 2], y_pred = [0, 1, 1, 1, 0]
        // class 0: TP 1, FP 1, FN 1 → 2/4 = 0.5
        // class 1: TP 2, FP 1, FN 0 → 4/5 = 0.8
        // class 2: TP 0, FN 1 → 0
        let f = macro_f1(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0]).unwrap();
        assert!((f - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-12, "{f}");
        // Class 3 predicted but absent from the truth still counts (F1 0).
        // y_true = [0, 1, 1], y_pred = [0, 1, 3]
        // class 0: 1; class 1: TP 1, FN 1 → 2/3; class 3: FP 1 → 0.
        let f = macro_f1(&[0, 1, 1], &[0, 1, 3]).unwrap();
        assert!((f - (1.0 + 2.0 / 3.0 + 0.0) / 3.0).abs() < 1e-12, "{f}");
        assert_eq!(macro_f1(&[2, 2], &[2, 2]).unwrap(), 1.0);
        assert!(macro_f1(&[0], &[0, 1]).is_err());
        assert!(macro_f1(&[], &[]).is_err());
    }

    #[test]
    fn classes_follow_first_appearance_and_merge_duplicates() {
        let train = strings(&["dog", "cat", "dog", "crane", "crane"]);
        let c = Classes::from_labels(&train).unwrap();
        assert_eq!(c.names(), &strings(&["dog", "cat", "crane"])[..]);
        assert_eq!(c.encode(&train).unwrap(), vec![0, 1, 0, 2, 2]);
        match c.encode(&strings(&["cat", "emu"])) {
            Err(AnalysisError::UnknownLabel { label, row }) => {
                assert_eq!((label.as_str(), row), ("emu", 1))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kl_and_agreement_match_a_float64_computation() {
        // Probe with 3 classes in d = 2; rows are normalised before the probe.
        let w = [1.0f32, 0.5, -0.3, 2.0, 0.7, -1.2];
        let b = [0.1f32, -0.2, 0.05];
        let probe = ProbeWeights::from_host(&w, &b, 3, 2, &Device::Cpu).unwrap();
        let x = [3.0f32, 4.0, -1.0, 2.0, 0.5, -0.5];
        let xh = [2.5f32, 4.5, 1.0, 1.0, 0.4, -0.6];
        let rep = semantic_preservation(
            &probe,
            MatRef::new(&x, 3, 2).unwrap(),
            MatRef::new(&xh, 3, 2).unwrap(),
            2,
        )
        .unwrap();
        let log_softmax = |row: &[f32]| -> Vec<f64> {
            let n = ((row[0] as f64).powi(2) + (row[1] as f64).powi(2)).sqrt();
            let z: Vec<f64> = (0..3)
                .map(|c| {
                    (w[2 * c] as f64 * row[0] as f64 + w[2 * c + 1] as f64 * row[1] as f64) / n
                        + b[c] as f64
                })
                .collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            z.iter().map(|v| v - lse).collect()
        };
        let argmax = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        let (mut kls, mut agrees) = (vec![], vec![]);
        for i in 0..3 {
            let lp = log_softmax(&x[2 * i..2 * i + 2]);
            let lq = log_softmax(&xh[2 * i..2 * i + 2]);
            kls.push((0..3).map(|c| lp[c].exp() * (lp[c] - lq[c])).sum::<f64>());
            agrees.push(if argmax(&lp) == argmax(&lq) { 1.0 } else { 0.0 });
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let std = |v: &[f64]| {
            let m = mean(v);
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        assert!(kls.iter().all(|&k| k > 0.0));
        assert!((rep.kl_mean - mean(&kls)).abs() < 1e-6, "{rep:?} {kls:?}");
        assert!((rep.kl_std - std(&kls)).abs() < 1e-6);
        assert_eq!(rep.agreement_mean, mean(&agrees));
        assert_eq!(rep.agreement_std, std(&agrees));
        assert_eq!(rep.rows, 3);
        // Identical inputs: KL 0, full agreement.
        let same = semantic_preservation(
            &probe,
            MatRef::new(&x, 3, 2).unwrap(),
            MatRef::new(&x, 3, 2).unwrap(),
            512,
        )
        .unwrap();
        assert!(same.kl_mean.abs() < 1e-7);
        assert_eq!((same.agreement_mean, same.agreement_std), (1.0, 0.0));
        assert!(semantic_preservation(
            &probe,
            MatRef::new(&x, 3, 2).unwrap(),
            MatRef::new(&x[..4], 2, 2).unwrap(),
            2
        )
        .is_err());
    }

    #[test]
    fn adamw_steps_match_pytorch_formulas() {
        // PyTorch AdamW (decoupled decay): θ ← θ(1 − lr·λ); m ← β1 m + (1−β1) g;
        // v ← β2 v + (1−β2) g²; θ ← θ − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε).
        let opts = ProbeOptions::default();
        let theta0 = [1.0f64, -2.0, 0.3];
        let grads = [[0.5f64, -0.25, 2.0], [-0.1, 0.4, 1.0]];
        let var = Var::from_slice(
            &theta0.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            3,
            &Device::Cpu,
        )
        .unwrap();
        let mut opt = AdamW::new(vec![var.clone()], opts.adamw_params()).unwrap();
        let (mut theta, mut m, mut v) = (theta0.to_vec(), [0.0f64; 3], [0.0f64; 3]);
        for (t, g) in grads.iter().enumerate() {
            let gt = Tensor::from_slice(&g.map(|x| x as f32), 3, &Device::Cpu).unwrap();
            // loss = Σ g·θ has gradient g.
            let loss = (var.as_tensor() * &gt).unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
            let step = (t + 1) as i32;
            let (b1, b2) = (opts.beta1, opts.beta2);
            for i in 0..3 {
                theta[i] *= 1.0 - opts.lr * opts.weight_decay;
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let denom = v[i].sqrt() / (1.0 - b2.powi(step)).sqrt() + opts.eps;
                theta[i] -= opts.lr / (1.0 - b1.powi(step)) * m[i] / denom;
            }
            let got = var.as_tensor().to_vec1::<f32>().unwrap();
            for i in 0..3 {
                assert!(
                    (got[i] as f64 - theta[i]).abs() < 1e-6,
                    "step {step}: {got:?} vs {theta:?}"
                );
            }
        }
    }

    #[test]
    fn plateau_reduces_after_more_than_patience_bad_epochs() {
        let mut p = PlateauState::new(Plateau::default());
        assert_eq!(p.step(0.5, 1e-3), None);
        // Improvements below the relative threshold 1e-4 count as bad epochs,
        // so the rate can drop although F1 kept (slightly) increasing.
        let mut f1 = 0.5;
        for _ in 0..5 {
            f1 += 1e-6;
            assert_eq!(p.step(f1, 1e-3), None);
        }
        assert_eq!(p.step(f1 + 1e-6, 1e-3), Some(5e-4));
        assert_eq!(p.step(0.9, 5e-4), None);
    }

    #[test]
    fn linear_eval_reports_preservation_of_noisy_reconstructions() {
        let d = 8;
        let (xtr, ltr) = blobs(4, d, 64, 0.5, 21);
        let (xev, lev) = blobs(4, d, 32, 0.5, 22);
        let noisy = |x: &[f32], seed: u64| -> Vec<f32> {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let noise = Normal::new(0.0, 1.5).unwrap();
            x.iter()
                .map(|&v| v + noise.sample(&mut rng) as f32)
                .collect()
        };
        let (rtr, rev) = (noisy(&xtr, 1), noisy(&xev, 2));
        let rep = linear_eval(
            LabelledSet {
                x: MatRef::new(&xtr, 256, d).unwrap(),
                labels: &ltr,
            },
            LabelledSet {
                x: MatRef::new(&xev, 128, d).unwrap(),
                labels: &lev,
            },
            MatRef::new(&rtr, 256, d).unwrap(),
            MatRef::new(&rev, 128, d).unwrap(),
            &ProbeOptions {
                lr: 1e-2,
                max_epochs: 20,
                ..Default::default()
            },
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(rep.class_names, strings(&["c0", "c1", "c2", "c3"]));
        for p in [&rep.train, &rep.eval] {
            assert!(p.kl_mean > 0.0 && p.kl_std > 0.0, "{p:?}");
            assert!(p.agreement_mean > 0.3 && p.agreement_mean < 1.0, "{p:?}");
        }
        assert_eq!((rep.train.rows, rep.eval.rows), (256, 128));
        let json = serde_json::to_value(&rep).unwrap();
        assert!(json["eval"]["kl_mean"].is_number());
    }

    /// `k` Gaussian blobs in `d` dimensions, `per` rows each, labels "c0"….
    fn blobs(k: usize, d: usize, per: usize, spread: f64, seed: u64) -> (Vec<f32>, Vec<String>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Normal::new(0.0, spread).unwrap();
        let mut x = Vec::with_capacity(k * per * d);
        let mut labels = Vec::with_capacity(k * per);
        for i in 0..k * per {
            let class = i % k;
            for j in 0..d {
                let centre = if j == class { 3.0 } else { 0.0 };
                x.push((centre + noise.sample(&mut rng)) as f32);
            }
            labels.push(format!("c{class}"));
        }
        (x, labels)
    }

    #[test]
    fn learns_separable_blobs() {
        let d = 8;
        let (xtr, ltr) = blobs(4, d, 256, 0.5, 1);
        let (xev, lev) = blobs(4, d, 64, 0.5, 2);
        let opts = ProbeOptions {
            lr: 1e-2,
            max_epochs: 30,
            ..Default::default()
        };
        let t = Instant::now();
        let trained = train_probe(
            LabelledSet {
                x: MatRef::new(&xtr, 1024, d).unwrap(),
                labels: &ltr,
            },
            LabelledSet {
                x: MatRef::new(&xev, 256, d).unwrap(),
                labels: &lev,
            },
            &opts,
            &Device::Cpu,
        )
        .unwrap();
        let rep = &trained.report;
        assert!(rep.best_macro_f1 > 0.97, "{rep:?}");
        assert_eq!(rep.final_macro_f1, rep.best_macro_f1);
        assert_eq!(rep.classes, 4);
        assert!(rep.epochs[0].loss > rep.epochs.last().unwrap().loss);
        let pred = trained
            .probe
            .predict(MatRef::new(&xev, 256, d).unwrap(), 100)
            .unwrap();
        let truth = trained.classes.encode(&lev).unwrap();
        assert_eq!(macro_f1(&truth, &pred).unwrap(), rep.final_macro_f1);
        assert!(t.elapsed().as_secs_f64() < 10.0);
        // The report serialises.
        let json = serde_json::to_string(rep).unwrap();
        assert!(json.contains("best_epoch"));
    }

    #[test]
    fn training_is_reproducible_and_checks_its_inputs() {
        let d = 4;
        let (x, l) = blobs(2, d, 32, 1.0, 3);
        let set = LabelledSet {
            x: MatRef::new(&x, 64, d).unwrap(),
            labels: &l,
        };
        let opts = ProbeOptions {
            max_epochs: 3,
            ..Default::default()
        };
        let a = train_probe(set, set, &opts, &Device::Cpu).unwrap();
        let b = train_probe(set, set, &opts, &Device::Cpu).unwrap();
        assert_eq!(a.probe.to_host().unwrap(), b.probe.to_host().unwrap());
        assert_eq!(a.report.epochs, b.report.epochs);

        let other = strings(&["c0"; 64]);
        let mut unknown = l.clone();
        unknown[5] = "zebra".into();
        let bad_eval = LabelledSet {
            x: set.x,
            labels: &unknown,
        };
        assert!(matches!(
            train_probe(set, bad_eval, &opts, &Device::Cpu),
            Err(AnalysisError::UnknownLabel { row: 5, .. })
        ));
        let short = LabelledSet {
            x: set.x,
            labels: &other[..10],
        };
        assert!(train_probe(short, set, &opts, &Device::Cpu).is_err());
        let narrow = LabelledSet {
            x: MatRef::new(&x[..64 * 2], 64, 2).unwrap(),
            labels: &l,
        };
        assert!(train_probe(set, narrow, &opts, &Device::Cpu).is_err());
        let zero_batch = ProbeOptions {
            batch_size: 0,
            ..Default::default()
        };
        assert!(train_probe(set, set, &zero_batch, &Device::Cpu).is_err());
        let no_epochs = ProbeOptions {
            max_epochs: 0,
            ..Default::default()
        };
        assert!(train_probe(set, set, &no_epochs, &Device::Cpu).is_err());
    }

    #[test]
    fn best_epoch_copy_differs_from_last_epoch() {
        // Overlapping blobs, a small evaluation set and a large learning rate
        // make the evaluation F1 fluctuate; look for a seed where the last
        // epoch is worse than the best one.
        let d = 6;
        let (xtr, ltr) = blobs(3, d, 64, 2.0, 11);
        let (xev, lev) = blobs(3, d, 10, 2.0, 12);
        let train = LabelledSet {
            x: MatRef::new(&xtr, 192, d).unwrap(),
            labels: &ltr,
        };
        let eval = LabelledSet {
            x: MatRef::new(&xev, 30, d).unwrap(),
            labels: &lev,
        };
        let truth = Classes::from_labels(&ltr).unwrap().encode(&lev).unwrap();
        let mut found = false;
        for seed in 0..30 {
            let opts = ProbeOptions {
                lr: 0.2,
                batch_size: 32,
                max_epochs: 40,
                seed,
                ..Default::default()
            };
            let best = train_probe(train, eval, &opts, &Device::Cpu).unwrap();
            let last_f1 = best.report.epochs.last().unwrap().macro_f1;
            // The returned probe is the best epoch's, whatever happened later.
            let f1 = macro_f1(&truth, &best.probe.predict(eval.x, 64).unwrap()).unwrap();
            assert_eq!(f1, best.report.best_macro_f1);
            assert_eq!(
                best.report.epochs[best.report.best_epoch - 1].macro_f1,
                best.report.best_macro_f1
            );
            if last_f1 < best.report.best_macro_f1 {
                let last = train_probe(
                    train,
                    eval,
                    &ProbeOptions {
                        use_last_epoch: true,
                        ..opts
                    },
                    &Device::Cpu,
                )
                .unwrap();
                assert!(last.report.used_last_epoch);
                assert_eq!(last.report.epochs, best.report.epochs);
                let f1_last = macro_f1(&truth, &last.probe.predict(eval.x, 64).unwrap()).unwrap();
                assert_eq!(f1_last, last_f1);
                assert_eq!(last.report.final_macro_f1, last_f1);
                assert_ne!(last.probe.to_host().unwrap(), best.probe.to_host().unwrap());
                found = true;
                break;
            }
        }
        assert!(found, "no seed produced an early F1 peak");
    }

    /// Real data: the 40-class WordNet lexname probe, skipped when the shared
    /// data folder is absent.
    #[test]
    fn lexname_probe_on_real_embeddings() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        let tr_path = dir.join("wordnet_lexname_train_14670_384.npy");
        if !tr_path.exists() {
            eprintln!("skipping: {} not found", tr_path.display());
            return;
        }
        use crate::data::npy::Matrix;
        use crate::metrics::{dataset_stats, StatsOptions};
        let tr = Matrix::open(&tr_path).unwrap();
        let ev = Matrix::open(&dir.join("wordnet_lexname_test_3667_384.npy")).unwrap();
        let ltr =
            super::super::read_lines(&dir.join("wordnet_lexname_train_14670.labels.txt"), true)
                .unwrap();
        let lev = super::super::read_lines(&dir.join("wordnet_lexname_test_3667.labels.txt"), true)
            .unwrap();
        let d = tr.cols();
        let mut src = MatRef::new(tr.data(), tr.rows(), d).unwrap();
        let stats = dataset_stats(&mut src, &StatsOptions::default()).unwrap();
        let mut xtr = tr.data().to_vec();
        let mut xev = ev.data().to_vec();
        stats.standardize(&mut xtr).unwrap();
        stats.standardize(&mut xev).unwrap();
        let t = Instant::now();
        let trained = train_probe(
            LabelledSet {
                x: MatRef::new(&xtr, tr.rows(), d).unwrap(),
                labels: &ltr,
            },
            LabelledSet {
                x: MatRef::new(&xev, ev.rows(), d).unwrap(),
                labels: &lev,
            },
            &ProbeOptions {
                max_epochs: 30,
                ..Default::default()
            },
            &Device::Cpu,
        )
        .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let rep = &trained.report;
        eprintln!(
            "lexname probe: {} classes, {} epochs in {secs:.1} s, best epoch {} macro-F1 {:.4}",
            rep.classes,
            rep.epochs.len(),
            rep.best_epoch,
            rep.best_macro_f1
        );
        assert_eq!(rep.classes, 40);
        assert!(rep.best_macro_f1 > 0.3, "{rep:?}");
        // A reconstruction equal to the original preserves everything.
        let x = MatRef::new(&xev, ev.rows(), d).unwrap();
        let same = semantic_preservation(&trained.probe, x, x, 512).unwrap();
        assert!(same.kl_mean.abs() < 1e-6 && same.agreement_mean == 1.0);
    }
}
