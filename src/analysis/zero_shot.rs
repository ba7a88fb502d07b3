//! Zero-shot classification as CLIP does it: each row is compared with one embedding per class
//! (a class name under prompt templates, embedded by the text tower), the logits are the cosine
//! similarities times a logit scale (CLIP's learned temperature, 100), and the prediction is the
//! class of the largest logit.
//!
//! The `zero_shot` step runs this on a matrix, on the SAE's dense reconstruction of it and on
//! the reconstructions from the k largest code entries; what is here is the arithmetic, as pure
//! functions on host rows: the logits ([`cosine_logits`]), the prediction ([`argmax_rows`]), the
//! cross-entropy at the true class ([`cross_entropy_rows`], a stable log-sum-exp in float64),
//! and a running tally of accuracy, cross-entropy and agreement with reference predictions
//! ([`Tally`], summarised as [`Scores`]).
//!
//! Conventions: a row of zero norm (a reconstruction that vanished) has cosine 0 with every
//! class, so all its logits are 0; ties in the argmax go to the lower class index, and a NaN
//! logit never wins.

use serde::Serialize;

use super::{AnalysisError, Result};
use crate::metrics::MatRef;

/// `m`'s rows divided by their L2 norms (computed in float64); a zero row stays zero.
pub fn unit_rows(m: MatRef<'_>) -> Vec<f32> {
    let mut out = Vec::with_capacity(m.rows() * m.cols());
    for i in 0..m.rows() {
        let row = m.row(i);
        let norm = row_norm(row);
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        out.extend(row.iter().map(|&v| (v as f64 * inv) as f32));
    }
    out
}

fn row_norm(row: &[f32]) -> f64 {
    row.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// The logits `logit_scale · cos(x_i, t_c)` of every row of `x` against every class row, as a
/// row-major [rows, C] float64 matrix. `unit_classes` are the class rows already divided by
/// their norms ([`unit_rows`]); the products run in f32 (`crate::matmul`), the division by the
/// row norm and the scaling in f64.
pub fn cosine_logits(
    x: MatRef<'_>,
    unit_classes: MatRef<'_>,
    logit_scale: f64,
) -> Result<Vec<f64>> {
    let (rows, d, c) = (x.rows(), x.cols(), unit_classes.rows());
    if unit_classes.cols() != d {
        return Err(AnalysisError::invalid(
            "zero-shot logits",
            format!(
                "the rows have {d} columns but the class embeddings have {}",
                unit_classes.cols()
            ),
        ));
    }
    let mut dots = vec![0f32; rows * c];
    // dots = x · Tᵀ: element (t, j) of the right operand is unit_classes[j·d + t].
    crate::matmul::matmul_into(
        rows,
        c,
        d,
        x.data(),
        (d, 1),
        unit_classes.data(),
        (1, d),
        &mut dots,
    );
    let mut logits = Vec::with_capacity(rows * c);
    for i in 0..rows {
        let norm = row_norm(x.row(i));
        let factor = if norm > 0.0 { logit_scale / norm } else { 0.0 };
        logits.extend(dots[i * c..(i + 1) * c].iter().map(|&v| v as f64 * factor));
    }
    Ok(logits)
}

/// The index of the largest entry of each row of a row-major [rows, `classes`] matrix; ties go
/// to the lower index and NaN never wins (a row of NaN predicts class 0).
pub fn argmax_rows(logits: &[f64], classes: usize) -> Vec<u32> {
    if classes == 0 {
        return Vec::new();
    }
    logits
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0usize;
            for (j, &v) in row.iter().enumerate() {
                // `!(v <= best)` would let NaN win; a strict `>` keeps the first maximum.
                if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// The cross-entropy `−log softmax(logits)[target]` of each row, with a stable log-sum-exp in
/// float64: `logsumexp(l) − l[target]`.
pub fn cross_entropy_rows(logits: &[f64], classes: usize, targets: &[u32]) -> Vec<f64> {
    if classes == 0 {
        return Vec::new();
    }
    logits
        .chunks_exact(classes)
        .zip(targets)
        .map(|(row, &t)| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|&v| (v - max).exp()).sum();
            max + sum.ln() - row[t as usize]
        })
        .collect()
}

/// How many entries of `a` equal the entry of `b` at the same position.
pub fn count_equal(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

/// The fraction of positions where `a` and `b` agree (`NaN` for empty inputs).
pub fn agreement(a: &[u32], b: &[u32]) -> f64 {
    count_equal(a, b) as f64 / a.len().min(b.len()) as f64
}

/// Running totals of one classifier input (the original rows, or one reconstruction) over the
/// batches of a matrix.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    rows: u64,
    correct: u64,
    agree: u64,
    cross_entropy: f64,
}

/// What a [`Tally`] amounts to.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Scores {
    /// Fraction of rows whose prediction is the true class.
    pub accuracy: f64,
    /// Mean of −log softmax(logits) at the true class.
    pub cross_entropy: f64,
    /// Fraction of rows whose prediction equals the reference (original) prediction.
    pub agreement: f64,
    /// `accuracy / reference accuracy` (NaN, written as null, when the reference accuracy is 0).
    pub accuracy_recovered: f64,
}

impl Tally {
    /// Adds a batch: its logits ([rows, `classes`]), the true classes and the reference
    /// predictions of the same rows. Returns this batch's predictions.
    pub fn push(
        &mut self,
        logits: &[f64],
        classes: usize,
        targets: &[u32],
        reference: &[u32],
    ) -> Result<Vec<u32>> {
        let rows = targets.len();
        if logits.len() != rows * classes || reference.len() != rows {
            return Err(AnalysisError::invalid(
                "zero-shot tally",
                format!(
                    "{} logits, {rows} targets and {} reference predictions do not fit {classes} classes",
                    logits.len(),
                    reference.len()
                ),
            ));
        }
        if let Some(&t) = targets.iter().find(|&&t| t as usize >= classes) {
            return Err(AnalysisError::invalid(
                "zero-shot tally",
                format!("target class {t} is not below the {classes} classes"),
            ));
        }
        let pred = argmax_rows(logits, classes);
        self.rows += rows as u64;
        self.correct += count_equal(&pred, targets) as u64;
        self.agree += count_equal(&pred, reference) as u64;
        self.cross_entropy += cross_entropy_rows(logits, classes, targets)
            .iter()
            .sum::<f64>();
        Ok(pred)
    }

    /// The fraction of correct rows so far.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.rows as f64
    }

    /// The scores, with accuracy recovered relative to `reference_accuracy`.
    pub fn scores(&self, reference_accuracy: f64) -> Scores {
        let n = self.rows as f64;
        let accuracy = self.accuracy();
        Scores {
            accuracy,
            cross_entropy: self.cross_entropy / n,
            agreement: self.agree as f64 / n,
            accuracy_recovered: if reference_accuracy > 0.0 {
                accuracy / reference_accuracy
            } else {
                f64::NAN
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn unit_rows_divide_by_the_norm_and_keep_zero_rows() {
        let m = [3.0, 4.0, 0.0, 0.0];
        let u = unit_rows(MatRef::new(&m, 2, 2).unwrap());
        assert_eq!(u, vec![0.6, 0.8, 0.0, 0.0]);
    }

    #[test]
    fn logits_are_scaled_cosines() {
        // Classes (1, 0) and (1, 1)/√2; rows (2, 0), (0, 3), (1, 1) and a zero row.
        let classes = [1.0, 0.0, 1.0, 1.0];
        let unit = unit_rows(MatRef::new(&classes, 2, 2).unwrap());
        let x = [2.0, 0.0, 0.0, 3.0, 1.0, 1.0, 0.0, 0.0];
        let l = cosine_logits(
            MatRef::new(&x, 4, 2).unwrap(),
            MatRef::new(&unit, 2, 2).unwrap(),
            10.0,
        )
        .unwrap();
        let h = std::f64::consts::FRAC_1_SQRT_2 * 10.0;
        let expected = [10.0, h, 0.0, h, h, 10.0, 0.0, 0.0];
        assert_eq!(l.len(), expected.len());
        for (a, b) in l.iter().zip(expected) {
            close(*a, b);
        }
        assert!(cosine_logits(
            MatRef::new(&x, 4, 2).unwrap(),
            MatRef::new(&[1.0, 0.0, 0.0], 1, 3).unwrap(),
            1.0
        )
        .is_err());
    }

    #[test]
    fn argmax_takes_the_lower_index_on_ties_and_skips_nan() {
        let l = [
            1.0,
            3.0,
            2.0, // 1
            5.0,
            5.0,
            1.0, // tie → 0
            f64::NAN,
            0.5,
            0.7, // NaN never wins → 2
            f64::NAN,
            f64::NAN,
            f64::NAN, // → 0
            -1.0,
            2.0,
            2.0, // tie → 1
        ];
        assert_eq!(argmax_rows(&l, 3), vec![1, 0, 2, 0, 1]);
    }

    #[test]
    fn cross_entropy_matches_hand_computed_values() {
        // Logits (0, 0): −log ½ = ln 2. Logits (1, 2, 3), target 0: ln(e + e² + e³) − 1.
        let ce = cross_entropy_rows(&[0.0, 0.0], 2, &[1]);
        close(ce[0], std::f64::consts::LN_2);
        let ce = cross_entropy_rows(&[1.0, 2.0, 3.0], 3, &[0]);
        let e = std::f64::consts::E;
        close(ce[0], (e + e * e + e * e * e).ln() - 1.0);
        close(ce[0], 2.407_605_964_444_38);
        // Large logits (CLIP's scale 100 on cosines near 1) stay finite: logits (1000, 900)
        // give ln(1 + e^−100) ≈ e^−100 at class 0 and 100 + that at class 1.
        let ce = cross_entropy_rows(&[1000.0, 900.0, 1000.0, 900.0], 2, &[0, 1]);
        close(ce[0], 0.0);
        close(ce[1], 100.0);
    }

    #[test]
    fn agreement_counts_equal_predictions() {
        assert_eq!(count_equal(&[0, 1, 2, 3], &[0, 1, 0, 0]), 2);
        close(agreement(&[0, 1, 2, 3], &[0, 1, 0, 0]), 0.5);
    }

    #[test]
    fn a_tally_sums_batches_and_divides_by_the_reference_accuracy() {
        let mut original = Tally::default();
        // Two rows, two classes: predictions 0 and 1, targets 0 and 0.
        let targets = [0u32, 0];
        let logits = [2.0, 0.0, 0.0, 1.0];
        let pred = original.push(&logits, 2, &targets, &[0, 1]).unwrap();
        assert_eq!(pred, vec![0, 1]);
        // A second batch of one row: prediction 0, target 0.
        let p2 = original.push(&[0.0, -1.0], 2, &[0], &[0]).unwrap();
        assert_eq!(p2, vec![0]);
        let s = original.scores(original.accuracy());
        close(s.accuracy, 2.0 / 3.0);
        close(s.agreement, 1.0);
        close(s.accuracy_recovered, 1.0);
        let ce = [
            (1.0 + (-2.0f64).exp()).ln(),
            (1.0 + 1.0f64.exp()).ln(),
            (1.0 + (-1.0f64).exp()).ln(),
        ];
        close(s.cross_entropy, ce.iter().sum::<f64>() / 3.0);

        // A reconstruction that predicts class 1 everywhere: accuracy 0, agreement 1/3.
        let mut recon = Tally::default();
        recon
            .push(&[0.0, 1.0, 0.0, 1.0], 2, &targets, &pred)
            .unwrap();
        recon.push(&[0.0, 1.0], 2, &[0], &p2).unwrap();
        let r = recon.scores(s.accuracy);
        close(r.accuracy, 0.0);
        close(r.agreement, 1.0 / 3.0);
        close(r.accuracy_recovered, 0.0);
        assert!(recon.scores(0.0).accuracy_recovered.is_nan());
        assert!(recon.push(&[0.0], 2, &[0], &[0]).is_err());
        assert!(recon.push(&[0.0, 1.0], 2, &[2], &[0]).is_err());
    }
}
