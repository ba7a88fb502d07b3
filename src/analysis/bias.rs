//! Bias analysis of a linear classifier through the concepts of an SAE: which concepts a
//! classifier leans on (the CelebA study of "Interpreting CLIP with Hierarchical Sparse
//! Autoencoders"). One latent's code entry is changed in every row where it fires, the row moves
//! by the change of the decoder's output (`x' = x + dec(z') − dec(z)`, the reconstruction error
//! kept), and the classifier's class probabilities before and after are compared: the mean change
//! of each class's probability, the share of rows whose prediction changes (flip rate) and the
//! change of accuracy, each with a percentile bootstrap interval over rows, next to the same
//! numbers for random latents of the same firing frequency (the control).
//!
//! Everything here is float64 on the host. The probe ([`HostProbe`]) is the one `linear_probe`
//! trains: rows standardised with its training statistics, divided by their norm, then an affine
//! map to class logits.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::{AnalysisError, Result};
use crate::metrics::MatRef;

/// A linear classifier of rows of the original embedding space: `v = (x − mean)·scale`,
/// `logits = weight · v / max(‖v‖, norm_eps) + bias`.
#[derive(Clone, Debug)]
pub struct HostProbe {
    classes: usize,
    dim: usize,
    /// Row-major `[classes, dim]`.
    weight: Vec<f64>,
    bias: Vec<f64>,
    mean: Vec<f64>,
    scale: f64,
    norm_eps: f64,
}

impl HostProbe {
    /// A probe from its float32 tensors (`weight` row-major `[classes, dim]`).
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        mean: &[f32],
        scale: f32,
        norm_eps: f64,
    ) -> Result<Self> {
        let (classes, dim) = (bias.len(), mean.len());
        if classes == 0 || dim == 0 || weight.len() != classes * dim {
            return Err(AnalysisError::invalid(
                "probe",
                format!(
                    "{} weights, {classes} biases and a mean of {dim} values do not make a probe",
                    weight.len()
                ),
            ));
        }
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        Ok(HostProbe {
            classes,
            dim,
            weight: wide(weight),
            bias: wide(bias),
            mean: wide(mean),
            scale: scale as f64,
            norm_eps,
        })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `c` of the weight.
    fn class_weight(&self, c: usize) -> &[f64] {
        &self.weight[c * self.dim..(c + 1) * self.dim]
    }

    /// The probe's input `v = (x − mean)·scale` of a row.
    fn standardise(&self, x: &[f32], v: &mut [f64]) {
        for ((v, &x), &m) in v.iter_mut().zip(x).zip(&self.mean) {
            *v = (x as f64 - m) * self.scale;
        }
    }

    /// `weight · v` (before the division by the norm).
    fn project(&self, v: &[f64], out: &mut [f64]) {
        for (c, o) in out.iter_mut().enumerate() {
            *o = dot(self.class_weight(c), v);
        }
    }

    /// Logits from `weight · v` and `‖v‖`.
    fn logits_from(&self, wv: &[f64], norm: f64, out: &mut [f64]) {
        let norm = norm.max(self.norm_eps);
        for ((o, &w), &b) in out.iter_mut().zip(wv).zip(&self.bias) {
            *o = w / norm + b;
        }
    }

    /// The logits of one row of the original space.
    pub fn logits(&self, x: &[f32]) -> Vec<f64> {
        let mut v = vec![0.0; self.dim];
        self.standardise(x, &mut v);
        let mut wv = vec![0.0; self.classes];
        self.project(&v, &mut wv);
        let mut out = vec![0.0; self.classes];
        self.logits_from(&wv, dot(&v, &v).sqrt(), &mut out);
        out
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Logits to probabilities, in place.
fn softmax(l: &mut [f64]) {
    let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in l.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    l.iter_mut().for_each(|v| *v /= sum);
}

/// The first largest entry (ties go to the lower class, as `argmax` does everywhere in msae).
fn argmax(v: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The probe on the unchanged rows: what every intervention is compared with.
pub struct Baseline {
    classes: usize,
    /// `weight · v` per row, `[rows, classes]`.
    wv: Vec<f64>,
    /// `‖v‖` per row.
    norm: Vec<f64>,
    /// Class probabilities per row, `[rows, classes]`.
    prob: Vec<f64>,
    pred: Vec<u32>,
    truth: Vec<u32>,
}

/// Mean class probabilities and accuracy of the unchanged rows of a population.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineSummary {
    pub rows: usize,
    pub accuracy: f64,
    /// Mean probability of each class.
    pub probability: Vec<f64>,
}

impl Baseline {
    /// Applies the probe to every row of `x` (the original space); `truth` is each row's class.
    pub fn new(probe: &HostProbe, x: MatRef<'_>, truth: &[u32]) -> Result<Self> {
        if x.cols() != probe.dim() || truth.len() != x.rows() {
            return Err(AnalysisError::invalid(
                "bias",
                format!(
                    "{} rows of {} columns with {} labels for a probe of {} dimensions",
                    x.rows(),
                    x.cols(),
                    truth.len(),
                    probe.dim()
                ),
            ));
        }
        let (n, c) = (x.rows(), probe.classes());
        let mut base = Baseline {
            classes: c,
            wv: vec![0.0; n * c],
            norm: vec![0.0; n],
            prob: vec![0.0; n * c],
            pred: vec![0; n],
            truth: truth.to_vec(),
        };
        let mut v = vec![0.0; probe.dim()];
        for r in 0..n {
            probe.standardise(x.row(r), &mut v);
            base.norm[r] = dot(&v, &v).sqrt();
            let wv = &mut base.wv[r * c..(r + 1) * c];
            probe.project(&v, wv);
            let p = &mut base.prob[r * c..(r + 1) * c];
            probe.logits_from(wv, base.norm[r], p);
            softmax(p);
            base.pred[r] = argmax(p);
        }
        Ok(base)
    }

    pub fn rows(&self) -> usize {
        self.pred.len()
    }

    /// The probe's prediction for each unchanged row.
    pub fn predictions(&self) -> &[u32] {
        &self.pred
    }

    /// Mean probabilities and accuracy over `rows`.
    pub fn summary(&self, rows: &[u32]) -> BaselineSummary {
        let c = self.classes;
        let mut probability = vec![0.0; c];
        let mut correct = 0usize;
        for &r in rows {
            let r = r as usize;
            for (s, p) in probability.iter_mut().zip(&self.prob[r * c..(r + 1) * c]) {
                *s += p;
            }
            correct += usize::from(self.pred[r] == self.truth[r]);
        }
        let m = rows.len().max(1) as f64;
        probability.iter_mut().for_each(|s| *s /= m);
        BaselineSummary {
            rows: rows.len(),
            accuracy: correct as f64 / m,
            probability,
        }
    }
}

/// What one intervention changes, row by row, for the rows it touches (every other row is
/// unchanged): per row `classes + 2` values — the change of each class's probability, 1 when the
/// prediction changed (else 0), and the change of correctness (−1, 0 or 1).
#[derive(Clone, Debug, PartialEq)]
pub struct RowChanges {
    width: usize,
    rows: Vec<u32>,
    values: Vec<f64>,
}

impl RowChanges {
    /// Values per row: the number of classes plus 2.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows touched, ascending.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// The values of the `i`-th touched row.
    pub fn values(&self, i: usize) -> &[f64] {
        &self.values[i * self.width..(i + 1) * self.width]
    }
}

/// Scales one latent's code by `factor` in every row where it fires and measures the probe.
///
/// `direction` is the latent's decoder row (the SAE's standardised space), `sae_scale` the SAE's
/// standardisation scale s, `firing` the latent's `(row, code)` pairs. With z' the changed code,
/// `dec(z') − dec(z) = (factor − 1)·z·direction` in standardised space, which is
/// `(factor − 1)·z·direction / s` in the original space (un-standardising, `y/s + μ`, adds μ to
/// both sides) and `(factor − 1)·z·direction·scale_probe / s` in the probe's input space. The
/// probe's logits are linear in its input before the division by the norm, so the changed row's
/// `weight · v'` is the baseline's plus that multiple of `weight · direction`; its norm is taken
/// from `v'` itself. A factor of 1 changes nothing, exactly.
pub fn intervene(
    probe: &HostProbe,
    base: &Baseline,
    x: MatRef<'_>,
    direction: &[f32],
    sae_scale: f64,
    firing: &[(u32, f32)],
    factor: f64,
) -> Result<RowChanges> {
    if direction.len() != probe.dim() || x.cols() != probe.dim() || x.rows() != base.rows() {
        return Err(AnalysisError::invalid(
            "bias",
            format!(
                "a direction of {} values, rows of {} columns and a probe of {} dimensions do not fit",
                direction.len(),
                x.cols(),
                probe.dim()
            ),
        ));
    }
    if !(sae_scale.is_finite() && sae_scale > 0.0) {
        return Err(AnalysisError::invalid(
            "bias",
            format!("the SAE's standardisation scale must be positive, not {sae_scale}"),
        ));
    }
    let (c, d) = (probe.classes(), probe.dim());
    let g: Vec<f64> = direction
        .iter()
        .map(|&v| v as f64 * probe.scale / sae_scale)
        .collect();
    let mut wg = vec![0.0; c];
    probe.project(&g, &mut wg);
    let width = c + 2;
    let mut out = RowChanges {
        width,
        rows: Vec::with_capacity(firing.len()),
        values: Vec::with_capacity(firing.len() * width),
    };
    let (mut v, mut wv, mut p) = (vec![0.0; d], vec![0.0; c], vec![0.0; c]);
    for &(r, z) in firing {
        let r = r as usize;
        if r >= base.rows() {
            return Err(AnalysisError::invalid(
                "bias",
                format!(
                    "row {r} of a latent's code is beyond the {} rows",
                    base.rows()
                ),
            ));
        }
        let a = (factor - 1.0) * z as f64;
        probe.standardise(x.row(r), &mut v);
        v.iter_mut().zip(&g).for_each(|(v, g)| *v += a * g);
        for ((w, &w0), &dg) in wv.iter_mut().zip(&base.wv[r * c..(r + 1) * c]).zip(&wg) {
            *w = w0 + a * dg;
        }
        // With a = 0 the norm is recomputed from the same values as the baseline's, so the
        // logits and every change are exactly zero.
        probe.logits_from(&wv, dot(&v, &v).sqrt(), &mut p);
        softmax(&mut p);
        let pred = argmax(&p);
        out.rows.push(r as u32);
        let p0 = &base.prob[r * c..(r + 1) * c];
        out.values.extend(p.iter().zip(p0).map(|(a, b)| a - b));
        out.values.push(f64::from(u8::from(pred != base.pred[r])));
        let truth = base.truth[r];
        out.values
            .push(f64::from(u8::from(pred == truth)) - f64::from(u8::from(base.pred[r] == truth)));
    }
    Ok(out)
}

/// A mean and its percentile bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// The estimates of one intervention over a population of rows: the mean change of each class's
/// probability, the flip rate and the change of accuracy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimates {
    pub probability: Vec<Interval>,
    pub flip_rate: Interval,
    pub accuracy: Interval,
}

/// A concept's estimates, its control's, and their difference (concept − control).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub concept: Estimates,
    pub control: Estimates,
    pub difference: Estimates,
}

/// One concept's intervention and those of its control latents (each alone, the same factor).
pub struct Comparand<'a> {
    pub concept: &'a RowChanges,
    pub controls: Vec<&'a RowChanges>,
}

/// Bootstrap settings.
#[derive(Clone, Debug)]
pub struct BootstrapOptions {
    pub resamples: usize,
    /// Two-sided coverage, e.g. 0.95 for the 2.5th and 97.5th percentiles.
    pub confidence: f64,
    pub seed: u64,
}

/// The `q`-quantile of sorted values, interpolating linearly between order statistics at
/// position `q·(len − 1)` (NumPy's default rule).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        len => {
            let h = q.clamp(0.0, 1.0) * (len - 1) as f64;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(len - 1);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

/// `Σ counts[row]·values(row) / m` over the touched rows, into `out`.
fn weighted_mean(ch: &RowChanges, counts: &[u32], m: f64, out: &mut [f64]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for (i, &r) in ch.rows.iter().enumerate() {
        let w = counts[r as usize];
        if w > 0 {
            let w = w as f64;
            for (o, v) in out.iter_mut().zip(ch.values(i)) {
                *o += w * v;
            }
        }
    }
    out.iter_mut().for_each(|o| *o /= m);
}

/// Concept, control and difference values of one draw of rows (and of control latents).
/// `picks` are indices into the comparand's controls (all of them once for the estimate).
fn one_draw(cmp: &Comparand<'_>, counts: &[u32], m: f64, picks: &[usize], out: &mut [Vec<f64>; 3]) {
    let w = cmp.concept.width;
    weighted_mean(cmp.concept, counts, m, &mut out[0]);
    out[1].iter_mut().for_each(|o| *o = 0.0);
    let mut one = vec![0.0; w];
    for &j in picks {
        weighted_mean(cmp.controls[j], counts, m, &mut one);
        for (o, v) in out[1].iter_mut().zip(&one) {
            *o += v / picks.len() as f64;
        }
    }
    let [concept, control, difference] = out;
    for ((d, a), b) in difference
        .iter_mut()
        .zip(concept.iter())
        .zip(control.iter())
    {
        *d = a - b;
    }
}

/// Estimates with percentile bootstrap intervals for each comparand over the rows of
/// `population` (row indices below `n_rows`).
///
/// The estimate of a concept is the mean of its per-row changes over the population (rows it
/// does not touch count as zero). The control's is the mean over its control latents of each
/// one's estimate: the expected effect of changing one random latent of the concept's firing
/// frequency. Each of the `resamples` bootstrap replicates draws the population's rows with
/// replacement (one draw shared by the concept and its controls, so the difference is paired)
/// and, for the control, draws its control latents with replacement too, so that the control's
/// interval covers both which rows and which latents happened to be chosen. The interval is the
/// replicates' percentile interval. The random numbers come from ChaCha8 seeded with
/// `opts.seed` on stream `stream`: the same call gives the same bytes.
pub fn bootstrap(
    population: &[u32],
    n_rows: usize,
    comparands: &[Comparand<'_>],
    opts: &BootstrapOptions,
    stream: u64,
) -> Result<Vec<Comparison>> {
    let m = population.len();
    if m == 0 || opts.resamples == 0 {
        return Err(AnalysisError::invalid(
            "bootstrap",
            format!(
                "{m} rows and {} resamples: nothing to estimate",
                opts.resamples
            ),
        ));
    }
    if population.iter().any(|&r| r as usize >= n_rows) {
        return Err(AnalysisError::invalid(
            "bootstrap",
            "a population row beyond the data",
        ));
    }
    for cmp in comparands {
        if cmp.controls.is_empty() || cmp.controls.iter().any(|c| c.width != cmp.concept.width) {
            return Err(AnalysisError::invalid(
                "bootstrap",
                "every concept needs controls of its own width",
            ));
        }
    }
    let mf = m as f64;
    let widths: Vec<usize> = comparands.iter().map(|c| c.concept.width).collect();
    let mut counts = vec![0u32; n_rows];
    let mut buf: Vec<[Vec<f64>; 3]> = widths
        .iter()
        .map(|&w| [vec![0.0; w], vec![0.0; w], vec![0.0; w]])
        .collect();

    // The estimates: every population row once, every control latent once.
    for &r in population {
        counts[r as usize] = 1;
    }
    let estimates: Vec<[Vec<f64>; 3]> = comparands
        .iter()
        .zip(buf.iter_mut())
        .map(|(cmp, out)| {
            let all: Vec<usize> = (0..cmp.controls.len()).collect();
            one_draw(cmp, &counts, mf, &all, out);
            out.clone()
        })
        .collect();

    // Replicates, stored as [comparand][kind][column][replicate].
    let b = opts.resamples;
    let mut samples: Vec<[Vec<f64>; 3]> = widths
        .iter()
        .map(|&w| [vec![0.0; w * b], vec![0.0; w * b], vec![0.0; w * b]])
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    rng.set_stream(stream);
    // The random numbers of a replicate are drawn in one sequence (rows, then each comparand's
    // control latents); the comparands are then evaluated in parallel, which cannot change them.
    let mut picks: Vec<Vec<usize>> = comparands.iter().map(|_| Vec::new()).collect();
    for rep in 0..b {
        for &r in population {
            counts[r as usize] = 0;
        }
        for _ in 0..m {
            counts[population[rng.random_range(0..m)] as usize] += 1;
        }
        for (cmp, p) in comparands.iter().zip(picks.iter_mut()) {
            let k = cmp.controls.len();
            p.clear();
            p.extend((0..k).map(|_| rng.random_range(0..k)));
        }
        comparands
            .par_iter()
            .zip(buf.par_iter_mut())
            .zip(samples.par_iter_mut())
            .zip(picks.par_iter())
            .for_each(|(((cmp, out), store), p)| {
                one_draw(cmp, &counts, mf, p, out);
                for (kind, values) in out.iter().enumerate() {
                    for (col, v) in values.iter().enumerate() {
                        store[kind][col * b + rep] = *v;
                    }
                }
            });
    }

    let alpha = (1.0 - opts.confidence).clamp(0.0, 1.0);
    Ok(estimates
        .iter()
        .zip(samples.iter_mut())
        .map(|(est, store)| {
            let mut kinds = (0..3).map(|kind| {
                let w = est[kind].len();
                let iv: Vec<Interval> = (0..w)
                    .map(|col| {
                        let s = &mut store[kind][col * b..(col + 1) * b];
                        s.sort_by(f64::total_cmp);
                        Interval {
                            mean: est[kind][col],
                            low: percentile(s, alpha / 2.0),
                            high: percentile(s, 1.0 - alpha / 2.0),
                        }
                    })
                    .collect();
                Estimates {
                    probability: iv[..w - 2].to_vec(),
                    flip_rate: iv[w - 2],
                    accuracy: iv[w - 1],
                }
            });
            Comparison {
                concept: kinds.next().unwrap_or_else(empty_estimates),
                control: kinds.next().unwrap_or_else(empty_estimates),
                difference: kinds.next().unwrap_or_else(empty_estimates),
            }
        })
        .collect())
}

fn empty_estimates() -> Estimates {
    let nan = Interval {
        mean: f64::NAN,
        low: f64::NAN,
        high: f64::NAN,
    };
    Estimates {
        probability: Vec::new(),
        flip_rate: nan,
        accuracy: nan,
    }
}

/// How many latents closest in firing frequency form the pool that a concept's controls are
/// drawn from, per control.
pub const CONTROL_POOL_FACTOR: usize = 5;

/// Up to `count` control latents for `concept`, drawn at random (without replacement) from the
/// `CONTROL_POOL_FACTOR·count` latents closest to it in firing frequency — closeness as the
/// ratio of frequencies, |ln f_j − ln f_concept|, ties to the lower index — among the latents
/// that fire on the data at all, are not the concept and are not `excluded` (the other concepts).
/// Returned in ascending order; fewer than `count` only when fewer latents qualify.
pub fn matched_controls(
    frequency: &[f64],
    concept: usize,
    excluded: &[bool],
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    // A floor below any real frequency keeps the logarithm finite for a silent concept, whose
    // nearest latents are then the rarest ones.
    let ln = |f: f64| f.max(1e-300).ln();
    let target = ln(frequency[concept]);
    let mut pool: Vec<(f64, usize)> = frequency
        .iter()
        .enumerate()
        .filter(|&(j, &f)| j != concept && f > 0.0 && !excluded.get(j).copied().unwrap_or(false))
        .map(|(j, &f)| ((ln(f) - target).abs(), j))
        .collect();
    pool.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    pool.truncate(CONTROL_POOL_FACTOR * count);
    let mut chosen: Vec<usize> = pool.choose_multiple(rng, count).map(|&(_, j)| j).collect();
    chosen.sort_unstable();
    chosen
}

/// The cosine of each latent's decoder row with the direction that raises class `target`'s
/// probability: `weight[target] − mean_c weight[c]` (the softmax ignores a shift shared by all
/// classes, so only the weight's difference from the mean moves one class against the others).
/// A decoder row is a direction of the SAE's standardised space; in the probe's input space it
/// is the same direction times a positive factor (scale_probe / s), so the cosine is the same.
pub fn probe_alignment(decoder: MatRef<'_>, probe: &HostProbe, target: usize) -> Result<Vec<f64>> {
    if decoder.cols() != probe.dim() || target >= probe.classes() {
        return Err(AnalysisError::invalid(
            "bias",
            format!(
                "a decoder of width {} and class {target} for a probe of {} classes × {} dimensions",
                decoder.cols(),
                probe.classes(),
                probe.dim()
            ),
        ));
    }
    let c = probe.classes() as f64;
    let dir: Vec<f64> = (0..probe.dim())
        .map(|i| {
            let mean = (0..probe.classes())
                .map(|k| probe.class_weight(k)[i])
                .sum::<f64>()
                / c;
            probe.class_weight(target)[i] - mean
        })
        .collect();
    let dn = dot(&dir, &dir).sqrt();
    Ok((0..decoder.rows())
        .map(|j| {
            let row: Vec<f64> = decoder.row(j).iter().map(|&v| v as f64).collect();
            let rn = dot(&row, &row).sqrt();
            if rn == 0.0 || dn == 0.0 {
                f64::NAN
            } else {
                dot(&row, &dir) / (rn * dn)
            }
        })
        .collect())
}

/// The Pearson correlation, over all `rows`, of each latent's activation (its `(row, code)`
/// pairs; zero elsewhere) with membership of the group (`member[row]`). NaN where either side is
/// constant.
pub fn group_correlation(columns: &[Vec<(u32, f32)>], member: &[bool]) -> Vec<f64> {
    let n = member.len() as f64;
    let p = member.iter().filter(|&&m| m).count() as f64 / n;
    let sd_m = (p * (1.0 - p)).sqrt();
    columns
        .iter()
        .map(|col| {
            let mean = col.iter().map(|&(_, z)| z as f64).sum::<f64>() / n;
            // Two passes: the rows where the latent is silent contribute (0 − mean)² each.
            let var = (col
                .iter()
                .map(|&(_, z)| (z as f64 - mean).powi(2))
                .sum::<f64>()
                + (n - col.len() as f64) * mean * mean)
                / n;
            let in_group = col
                .iter()
                .filter(|&&(r, _)| member[r as usize])
                .map(|&(_, z)| z as f64)
                .sum::<f64>()
                / n;
            let cov = in_group - mean * p;
            if var <= 0.0 || sd_m == 0.0 {
                f64::NAN
            } else {
                cov / (var.sqrt() * sd_m)
            }
        })
        .collect()
}

/// The `n` eligible latents with the highest scores (NaN never), highest first, ties to the
/// lower index.
pub fn top_by_score(scores: &[f64], eligible: &[bool], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len())
        .filter(|&j| eligible[j] && !scores[j].is_nan())
        .collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(n);
    order
}

/// Appends a block of a sparse code to per-latent lists: each latent gets the `(row, code)`
/// pairs where it is non-zero. `code` is row-major `[rows, n]` (n = `columns.len()`) and
/// `first_row` the index of its first row, so blocks added in order keep every list ascending.
pub fn add_code_rows(columns: &mut [Vec<(u32, f32)>], code: &[f32], first_row: usize) {
    let n = columns.len().max(1);
    for (i, row) in code.chunks(n).enumerate() {
        for (j, &z) in row.iter().enumerate() {
            if z != 0.0 {
                columns[j].push(((first_row + i) as u32, z));
            }
        }
    }
}

/// The rows holding each of `names` in `groups` (one list per name, rows ascending).
pub fn rows_by_group(groups: &[String], names: &[String]) -> Vec<Vec<u32>> {
    names
        .iter()
        .map(|name| {
            groups
                .iter()
                .enumerate()
                .filter(|(_, g)| *g == name)
                .map(|(r, _)| r as u32)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::probe::ProbeWeights;
    use candle_core::{Device, Tensor};
    use rand_distr::{Distribution, Normal};

    fn normal(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = Normal::new(0.0, 1.0).unwrap();
        (0..n).map(|_| d.sample(&mut rng) as f32).collect()
    }

    /// A probe of 3 classes × 5 dimensions with a non-trivial standardisation.
    fn probe() -> (HostProbe, Vec<f32>, Vec<f32>, Vec<f32>, f32) {
        let (w, b, mean) = (normal(15, 1), normal(3, 2), normal(5, 3));
        let scale = 0.7;
        (
            HostProbe::new(&w, &b, &mean, scale, 1e-12).unwrap(),
            w,
            b,
            mean,
            scale,
        )
    }

    #[test]
    fn the_host_probe_gives_the_trained_probes_logits() {
        let (host, w, b, mean, scale) = probe();
        let x = normal(4 * 5, 4);
        let trained = ProbeWeights::from_host(&w, &b, 3, 5, &Device::Cpu).unwrap();
        // The trained probe takes standardised rows.
        let v: Vec<f32> = x
            .chunks(5)
            .flat_map(|r| {
                r.iter()
                    .zip(&mean)
                    .map(|(x, m)| (x - m) * scale)
                    .collect::<Vec<_>>()
            })
            .collect();
        let t = Tensor::from_slice(&v, (4, 5), &Device::Cpu).unwrap();
        let want: Vec<f32> = trained
            .logits(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (r, row) in x.chunks(5).enumerate() {
            for (c, got) in host.logits(row).iter().enumerate() {
                assert!((got - want[r * 3 + c] as f64).abs() < 1e-5, "{r} {c}");
            }
        }
    }

    #[test]
    fn an_intervention_equals_changing_the_row_and_a_factor_of_one_changes_nothing() {
        let (host, ..) = probe();
        let rows = 6;
        let x = normal(rows * 5, 5);
        let xm = MatRef::new(&x, rows, 5).unwrap();
        let truth = [0, 1, 2, 0, 1, 2];
        let base = Baseline::new(&host, xm, &truth).unwrap();
        let dir = normal(5, 6);
        let sae_scale = 1.7;
        let firing = [(1u32, 0.8f32), (4, 2.5)];
        for factor in [0.0, 0.5, 3.0] {
            let ch = intervene(&host, &base, xm, &dir, sae_scale, &firing, factor).unwrap();
            assert_eq!(ch.rows(), &[1, 4]);
            for (i, &(r, z)) in firing.iter().enumerate() {
                // The row itself, moved by (factor − 1)·z·direction / s in the original space.
                let moved: Vec<f32> = xm
                    .row(r as usize)
                    .iter()
                    .zip(&dir)
                    .map(|(x, d)| {
                        (*x as f64 + (factor - 1.0) * z as f64 * *d as f64 / sae_scale) as f32
                    })
                    .collect();
                let mut p = host.logits(&moved);
                softmax(&mut p);
                let mut p0 = host.logits(xm.row(r as usize));
                softmax(&mut p0);
                let v = ch.values(i);
                for c in 0..3 {
                    assert!(
                        (v[c] - (p[c] - p0[c])).abs() < 1e-6,
                        "factor {factor} row {r}"
                    );
                }
                let flipped = argmax(&p) != argmax(&p0);
                assert_eq!(v[3], if flipped { 1.0 } else { 0.0 });
                let t = truth[r as usize];
                let dc = (argmax(&p) == t) as i32 - (argmax(&p0) == t) as i32;
                assert_eq!(v[4], dc as f64);
            }
        }
        let same = intervene(&host, &base, xm, &dir, sae_scale, &firing, 1.0).unwrap();
        assert!(same.values.iter().all(|&v| v == 0.0), "{:?}", same.values);
    }

    #[test]
    fn percentiles_interpolate_as_numpy_does() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert_eq!(percentile(&v, 0.25), 1.75);
        assert!((percentile(&v, 0.975) - 3.925).abs() < 1e-12);
        assert_eq!(percentile(&[5.0], 0.3), 5.0);
    }

    /// Row changes of width 3 (one class, flip, accuracy) with the given first values.
    fn changes(rows: &[u32], first: &[f64]) -> RowChanges {
        RowChanges {
            width: 3,
            rows: rows.to_vec(),
            values: first.iter().flat_map(|&v| [v, 0.0, 0.0]).collect(),
        }
    }

    #[test]
    fn the_bootstrap_covers_the_sampling_spread_and_is_reproducible() {
        // 2000 rows, the concept changes the first 600 by 1 (mean 0.3, sd √(0.3·0.7)); the
        // controls change nothing but one control row.
        let n = 2000;
        let concept = changes(&(0..600).collect::<Vec<_>>(), &[1.0; 600]);
        let quiet = changes(&[7], &[0.5]);
        let silent = changes(&[], &[]);
        let cmp = [Comparand {
            concept: &concept,
            controls: vec![&quiet, &silent],
        }];
        let pop: Vec<u32> = (0..n as u32).collect();
        let opts = BootstrapOptions {
            resamples: 2000,
            confidence: 0.95,
            seed: 11,
        };
        let out = bootstrap(&pop, n, &cmp, &opts, 1).unwrap();
        let c = &out[0].concept.probability[0];
        assert!((c.mean - 0.3).abs() < 1e-12);
        // The normal approximation: ±1.96·sd/√n.
        let half = 1.96 * (0.3f64 * 0.7 / n as f64).sqrt();
        assert!(
            (c.high - c.low - 2.0 * half).abs() < 0.15 * 2.0 * half,
            "{c:?} vs ±{half}"
        );
        assert!(c.low < c.mean && c.mean < c.high);
        // The control is the mean of its latents' estimates; the difference is paired.
        let k = &out[0].control.probability[0];
        assert!((k.mean - 0.5 / n as f64 / 2.0).abs() < 1e-15, "{k:?}");
        let d = &out[0].difference.probability[0];
        assert!((d.mean - (c.mean - k.mean)).abs() < 1e-15);
        assert_eq!(out, bootstrap(&pop, n, &cmp, &opts, 1).unwrap());
        assert_ne!(out, bootstrap(&pop, n, &cmp, &opts, 2).unwrap());
        // A population of some rows only: rows outside it never count.
        let half_pop: Vec<u32> = (300..n as u32).collect();
        let part = bootstrap(&half_pop, n, &cmp, &opts, 1).unwrap();
        assert!((part[0].concept.probability[0].mean - 300.0 / 1700.0).abs() < 1e-12);
        assert!(bootstrap(&[], n, &cmp, &opts, 1).is_err());
    }

    #[test]
    fn controls_come_from_the_nearest_firing_frequencies() {
        // Frequencies 0.01·j for latents 1..30, latent 0 silent.
        let freq: Vec<f64> = (0..30).map(|j| 0.01 * j as f64).collect();
        let mut excluded = vec![false; 30];
        excluded[11] = true;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let chosen = matched_controls(&freq, 10, &excluded, 2, &mut rng);
        assert_eq!(chosen.len(), 2);
        // The pool: the 10 nearest by ratio, never 10 itself, 11 (excluded) or 0 (silent).
        let pool = [6, 7, 8, 9, 12, 13, 14, 15, 16, 17];
        for j in &chosen {
            assert!(pool.contains(j), "{chosen:?}");
        }
        let mut again = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(
            chosen,
            matched_controls(&freq, 10, &excluded, 2, &mut again)
        );
        let all = matched_controls(&freq, 10, &excluded, 100, &mut again);
        assert_eq!(all.len(), 27);
    }

    #[test]
    fn group_correlation_is_pearsons() {
        let rows = 7;
        let dense = [[0.0f32, 1.0, 0.0, 2.0, 0.0, 0.5, 0.0], [0.0; 7]];
        let member = [true, true, false, true, false, false, true];
        let columns: Vec<Vec<(u32, f32)>> = dense
            .iter()
            .map(|col| {
                col.iter()
                    .enumerate()
                    .filter(|(_, z)| **z != 0.0)
                    .map(|(r, z)| (r as u32, *z))
                    .collect()
            })
            .collect();
        let got = group_correlation(&columns, &member);
        let z: Vec<f64> = dense[0].iter().map(|&v| v as f64).collect();
        let m: Vec<f64> = member.iter().map(|&b| f64::from(u8::from(b))).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / rows as f64;
        let (mz, mm) = (mean(&z), mean(&m));
        let cov: f64 = z.iter().zip(&m).map(|(a, b)| (a - mz) * (b - mm)).sum();
        let sz: f64 = z.iter().map(|a| (a - mz).powi(2)).sum::<f64>().sqrt();
        let sm: f64 = m.iter().map(|b| (b - mm).powi(2)).sum::<f64>().sqrt();
        assert!((got[0] - cov / (sz * sm)).abs() < 1e-12);
        assert!(got[1].is_nan());
        assert_eq!(top_by_score(&got, &[true, true], 5), vec![0]);
    }
}
