//! Per-sample reconstruction metrics (docs/reference.md §7.1–§7.5) and the
//! dataset-level fraction of variance unexplained.
//!
//! All sums run in f64 over f32 inputs. Per-sample functions return one value
//! per row, in row order, so the caller can feed them to [`super::MeanStd`].
//! Rows with zero spread or zero norm give the IEEE result of the formula
//! (inf or NaN) rather than an error, as the reference does.

use rayon::prelude::*;

use super::error::Result;
use super::matrix::{same_shape, MatRef};

/// Applies `f` to each pair of corresponding rows, in parallel.
fn per_row_pair<F>(what: &'static str, x: MatRef<'_>, y: MatRef<'_>, f: F) -> Result<Vec<f64>>
where
    F: Fn(&[f32], &[f32]) -> f64 + Sync,
{
    same_shape(what, "first input", &x, "second input", &y)?;
    Ok((0..x.rows())
        .into_par_iter()
        .map(|i| f(x.row(i), y.row(i)))
        .collect())
}

/// Per-sample FVU as used everywhere in the reference (docs/reference.md §7.2):
/// `Var_j(x_ij − x̂_ij) / Var_j(x_ij)`, variances over the features of one
/// sample. Each variance is centred on that sample's own mean, so a constant
/// offset in the error costs nothing; the N−1 factors cancel, so population
/// variances are used. Not the same quantity as [`fvu_dataset`].
pub fn fvu_per_sample(x: MatRef<'_>, x_hat: MatRef<'_>) -> Result<Vec<f64>> {
    per_row_pair("per-sample FVU", x, x_hat, |x, x_hat| {
        let n = x.len() as f64;
        let err_mean = x
            .iter()
            .zip(x_hat)
            .map(|(&a, &b)| a as f64 - b as f64)
            .sum::<f64>()
            / n;
        let x_mean = x.iter().map(|&a| a as f64).sum::<f64>() / n;
        let err_ss: f64 = x
            .iter()
            .zip(x_hat)
            .map(|(&a, &b)| (a as f64 - b as f64 - err_mean).powi(2))
            .sum();
        let x_ss: f64 = x.iter().map(|&a| (a as f64 - x_mean).powi(2)).sum();
        err_ss / x_ss
    })
}

/// Cosine similarity of corresponding rows, `a·b / (max(‖a‖, eps) · max(‖b‖, eps))`.
///
/// `eps = 0` is the training-time metric of the reference (rows normalised
/// without a guard, so a zero row gives NaN); `eps = 1e-8` is
/// `torch.nn.functional.cosine_similarity` as used by extract and score_topk,
/// which clamps each norm separately.
pub fn cosine_per_sample(a: MatRef<'_>, b: MatRef<'_>, eps: f64) -> Result<Vec<f64>> {
    per_row_pair("cosine similarity", a, b, |a, b| {
        let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
        for (&u, &v) in a.iter().zip(b) {
            let (u, v) = (u as f64, v as f64);
            dot += u * v;
            aa += u * u;
            bb += v * v;
        }
        dot / (aa.sqrt().max(eps) * bb.sqrt().max(eps))
    })
}

/// Euclidean distance `‖a_i − b_i‖₂` per sample (logged by the reference as
/// "MAE Distance").
pub fn l2_distance_per_sample(a: MatRef<'_>, b: MatRef<'_>) -> Result<Vec<f64>> {
    per_row_pair("L2 distance", a, b, |a, b| {
        a.iter()
            .zip(b)
            .map(|(&u, &v)| (u as f64 - v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    })
}

/// Normalised mean absolute error (docs/reference.md §7.4):
/// `mean_j |x̂_ij − x_ij| / mean_j |x_ij|`.
pub fn normalized_mae_per_sample(x: MatRef<'_>, x_hat: MatRef<'_>) -> Result<Vec<f64>> {
    per_row_pair("normalised MAE", x, x_hat, |x, x_hat| {
        let err: f64 = x
            .iter()
            .zip(x_hat)
            .map(|(&a, &b)| (b as f64 - a as f64).abs())
            .sum();
        let norm: f64 = x.iter().map(|&a| (a as f64).abs()).sum();
        // Both means share the divisor d, which cancels.
        err / norm
    })
}

/// Normalised mean squared error (docs/reference.md §7.5): `mean_j (x̂_ij − x_ij)² / mean_j x_ij²`.
pub fn normalized_mse_per_sample(x: MatRef<'_>, x_hat: MatRef<'_>) -> Result<Vec<f64>> {
    per_row_pair("normalised MSE", x, x_hat, |x, x_hat| {
        let err: f64 = x
            .iter()
            .zip(x_hat)
            .map(|(&a, &b)| (b as f64 - a as f64).powi(2))
            .sum();
        let norm: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
        err / norm
    })
}

/// Dataset-level fraction of variance unexplained,
/// `Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖²` with `x̄` the mean row of the whole
/// dataset, accumulated batch by batch.
///
/// Unlike [`fvu_per_sample`] this centres on the dataset mean, so a constant
/// offset in the reconstruction is penalised, and it is a ratio of sums, not a
/// mean of ratios. The reference never reports it; it is the common SAE
/// definition and useful for comparison.
#[derive(Clone, Debug, Default)]
pub struct FvuDataset {
    cols: Option<usize>,
    count: u64,
    sse: f64,
    /// Per-column running mean and sum of squared deviations of `x`, merged
    /// batch by batch (Chan et al.) so no cancellation-prone raw moments are kept.
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl FvuDataset {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one batch of inputs and their reconstructions.
    pub fn push(&mut self, x: MatRef<'_>, x_hat: MatRef<'_>) -> Result<()> {
        same_shape("dataset FVU", "input", &x, "reconstruction", &x_hat)?;
        let cols = x.cols();
        if let Some(expected) = self.cols {
            if expected != cols {
                return Err(super::MetricsError::invalid(
                    "dataset FVU",
                    format!("batch has {cols} columns, earlier batches had {expected}"),
                ));
            }
        }
        if x.rows() == 0 {
            return Ok(());
        }
        self.cols = Some(cols);
        self.mean.resize(cols, 0.0);
        self.m2.resize(cols, 0.0);

        self.sse += x
            .data()
            .par_iter()
            .zip(x_hat.data())
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>();

        let n_b = x.rows() as f64;
        let mut batch_mean = vec![0.0f64; cols];
        for row in x.row_slices() {
            for (m, &v) in batch_mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        batch_mean.iter_mut().for_each(|m| *m /= n_b);
        let mut batch_m2 = vec![0.0f64; cols];
        for row in x.row_slices() {
            for ((s, &m), &v) in batch_m2.iter_mut().zip(&batch_mean).zip(row) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let n_a = self.count as f64;
        let n = n_a + n_b;
        for j in 0..cols {
            let delta = batch_mean[j] - self.mean[j];
            self.mean[j] += delta * n_b / n;
            self.m2[j] += batch_m2[j] + delta * delta * n_a * n_b / n;
        }
        self.count += x.rows() as u64;
        Ok(())
    }

    /// The ratio so far; `None` before any row was added.
    pub fn value(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sse / self.m2.iter().sum::<f64>())
    }
}

/// One-shot [`FvuDataset`] over a single matrix pair.
pub fn fvu_dataset(x: MatRef<'_>, x_hat: MatRef<'_>) -> Result<f64> {
    let mut acc = FvuDataset::new();
    acc.push(x, x_hat)?;
    acc.value().ok_or_else(|| {
        super::MetricsError::degenerate("dataset FVU", "no rows to compute the FVU over")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(data: &[f32], rows: usize, cols: usize) -> MatRef<'_> {
        MatRef::new(data, rows, cols).unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    // Two samples of width 4 used by several tests.
    //   x0 = [1, 2, 3, 4],  x̂0 = [1, 2, 3, 6]  → error e0 = [0, 0, 0, −2]
    //   x1 = [2, 2, 2, 6],  x̂1 = [3, 3, 3, 7]  → error e1 = [−1, −1, −1, −1]
    const X: [f32; 8] = [1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 6.0];
    const XH: [f32; 8] = [1.0, 2.0, 3.0, 6.0, 3.0, 3.0, 3.0, 7.0];

    #[test]
    fn fvu_per_sample_hand_values() {
        // Sample 0: mean(e0) = −0.5, Σ(e0 − ē)² = 3·0.25 + 2.25 = 3;
        //           mean(x0) = 2.5, Σ(x0 − x̄)² = 2.25 + 0.25 + 0.25 + 2.25 = 5 → 3/5.
        // Sample 1: the error is constant, so its variance is 0 → FVU 0
        //           (the per-sample centring forgives a constant offset).
        let fvu = fvu_per_sample(m(&X, 2, 4), m(&XH, 2, 4)).unwrap();
        close(fvu[0], 0.6, 1e-15);
        close(fvu[1], 0.0, 1e-15);
    }

    #[test]
    fn fvu_dataset_hand_value() {
        // SSE = 4 + 4 = 8. Column means of x: [1.5, 2, 2.5, 5];
        // Σ‖x_i − x̄‖² = (0.25+0+0.25+1)·2 = 3 → FVU = 8/3.
        close(
            fvu_dataset(m(&X, 2, 4), m(&XH, 2, 4)).unwrap(),
            8.0 / 3.0,
            1e-14,
        );
        // Streaming one row at a time gives the same number.
        let mut acc = FvuDataset::new();
        acc.push(m(&X[..4], 1, 4), m(&XH[..4], 1, 4)).unwrap();
        acc.push(m(&X[4..], 1, 4), m(&XH[4..], 1, 4)).unwrap();
        close(acc.value().unwrap(), 8.0 / 3.0, 1e-14);
        assert!(acc.push(m(&X[..3], 1, 3), m(&XH[..3], 1, 3)).is_err());
    }

    #[test]
    fn cosine_and_l2_hand_values() {
        // a0 = [3, 4], b0 = [4, 3]: dot 24, norms 5 and 5 → 0.96; distance √2.
        // a1 = [0, 0], b1 = [1, 0]: eps 0 → 0/0 = NaN; eps 1e-8 → 0.
        let a = [3.0, 4.0, 0.0, 0.0];
        let b = [4.0, 3.0, 1.0, 0.0];
        let cs = cosine_per_sample(m(&a, 2, 2), m(&b, 2, 2), 0.0).unwrap();
        close(cs[0], 0.96, 1e-15);
        assert!(cs[1].is_nan());
        let cs = cosine_per_sample(m(&a, 2, 2), m(&b, 2, 2), 1e-8).unwrap();
        close(cs[1], 0.0, 0.0);
        let d = l2_distance_per_sample(m(&a, 2, 2), m(&b, 2, 2)).unwrap();
        close(d[0], 2f64.sqrt(), 1e-15);
        close(d[1], 1.0, 0.0);
    }

    #[test]
    fn cosine_eps_clamps_each_norm() {
        // ‖a‖ = 1e-9 < eps = 1e-8: torch divides by max(‖a‖, eps) = 1e-8,
        // so cos = (1e-9 · 1) / (1e-8 · 1) = 0.1.
        let a = [1e-9f32, 0.0];
        let b = [1.0f32, 0.0];
        let cs = cosine_per_sample(m(&a, 1, 2), m(&b, 1, 2), 1e-8).unwrap();
        close(cs[0], (1e-9f32 as f64) / 1e-8, 1e-12);
    }

    #[test]
    fn normalised_errors_hand_values() {
        // Sample 0: Σ|e| = 2, Σ|x| = 10 → 0.2; Σe² = 4, Σx² = 30 → 2/15.
        // Sample 1: Σ|e| = 4, Σ|x| = 12 → 1/3; Σe² = 4, Σx² = 48 → 1/12.
        let mae = normalized_mae_per_sample(m(&X, 2, 4), m(&XH, 2, 4)).unwrap();
        close(mae[0], 0.2, 1e-15);
        close(mae[1], 1.0 / 3.0, 1e-15);
        let mse = normalized_mse_per_sample(m(&X, 2, 4), m(&XH, 2, 4)).unwrap();
        close(mse[0], 2.0 / 15.0, 1e-15);
        close(mse[1], 1.0 / 12.0, 1e-15);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        assert!(fvu_per_sample(m(&X, 2, 4), m(&XH, 4, 2)).is_err());
        assert!(cosine_per_sample(m(&X, 2, 4), m(&XH[..4], 1, 4), 0.0).is_err());
    }
}
