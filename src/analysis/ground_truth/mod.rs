//! How well a learned dictionary recovers known true features, with the ground-truth metrics of
//! SynthSAEBench (SAELens's synthetic benchmark), defined as it defines them:
//!
//! * `A[i][j] = |cos(W_dec[i], F[j])|` for latent `i` and true direction `j` (each row divided by
//!   `max(‖row‖, 1e-8)`): a sign-flipped decoder row recovers the same feature.
//! * **MCC**: the mean of `A` over the optimal one-to-one matching of latents and true features
//!   (maximum total, `min(latents, features)` pairs; SciPy's `linear_sum_assignment`).
//! * **uniqueness**: with `b(i) = argmax_j A[i][j]` (ties to the lower feature), the number of
//!   distinct `b(i)` over the number of latents.
//! * per latent, its firing (`z_i > 0`) as a detector of the firing of `b(i)` over samples:
//!   precision, recall, F1 and accuracy, each 0 where undefined, averaged over all latents
//!   ([`firing`]); and what the SAE does to the samples ([`samples`]).
//!
//! Everything is computed in f64, so the numbers equal a float64 NumPy/SciPy computation.

pub mod firing;
pub mod samples;

use crate::assignment::{solve_max, AssignmentError};
use crate::metrics::similarity::cosines_f64;

/// `|cos|` of every latent's decoder row with every true direction, `[latents, features]`.
pub struct AbsCosines {
    pub latents: usize,
    pub features: usize,
    values: Vec<f64>,
}

impl AbsCosines {
    /// From the decoder rows `[latents, d]` and the true directions `[features, d]`.
    pub fn new(decoder: &[f32], truth: &[f32], d: usize) -> AbsCosines {
        let mut values = cosines_f64(decoder, truth, d);
        values.iter_mut().for_each(|v| *v = v.abs());
        AbsCosines {
            latents: decoder.len() / d.max(1),
            features: truth.len() / d.max(1),
            values,
        }
    }

    /// `A[latent][feature]`.
    pub fn get(&self, latent: usize, feature: usize) -> f64 {
        self.values[latent * self.features + feature]
    }

    /// Per latent, `b(i)`: the first feature of largest `|cos|` (argmax, ties to the lower one).
    pub fn best_feature_per_latent(&self) -> Vec<usize> {
        if self.features == 0 {
            return Vec::new();
        }
        self.values
            .chunks(self.features)
            .map(|row| first_argmax(row.iter().copied()))
            .collect()
    }

    /// Per true feature, the first latent of largest `|cos|` and that value.
    pub fn best_latent_per_feature(&self) -> Vec<(usize, f64)> {
        (0..self.features)
            .map(|j| {
                let i = first_argmax((0..self.latents).map(|i| self.get(i, j)));
                (
                    i,
                    if self.latents > 0 {
                        self.get(i, j)
                    } else {
                        0.0
                    },
                )
            })
            .collect()
    }
}

/// Index of the first largest value (0 for an empty sequence); NaN never wins.
fn first_argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// The optimal one-to-one matching of latents and true features.
pub struct Matching {
    /// `(latent, feature)` pairs in increasing latent order.
    pub pairs: Vec<(usize, usize)>,
    /// The mean `|cos|` over the pairs: the MCC (NaN when there are none).
    pub mcc: f64,
}

/// The matching of maximum total `|cos|` and its mean, the MCC.
pub fn mcc(a: &AbsCosines) -> Result<Matching, AssignmentError> {
    let assignment = solve_max(&a.values, a.latents, a.features)?;
    let pairs = assignment.pairs();
    let mcc = pairs.iter().map(|&(i, j)| a.get(i, j)).sum::<f64>() / pairs.len() as f64;
    Ok(Matching { pairs, mcc })
}

/// Distinct best features over the number of latents (0 without latents).
pub fn uniqueness(best_feature: &[usize]) -> f64 {
    if best_feature.is_empty() {
        return 0.0;
    }
    let mut distinct = best_feature.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    distinct.len() as f64 / best_feature.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three orthonormal true directions in 4 dimensions.
    const TRUTH: [f32; 12] = [
        1.0, 0.0, 0.0, 0.0, //
        0.0, 1.0, 0.0, 0.0, //
        0.0, 0.0, 1.0, 0.0,
    ];

    #[test]
    fn a_permuted_sign_flipped_rescaled_dictionary_has_mcc_and_uniqueness_one() {
        // Latent 0 = −2·f2, latent 1 = 0.5·f0, latent 2 = −f1.
        let dec = [
            0.0, 0.0, -2.0, 0.0, //
            0.5, 0.0, 0.0, 0.0, //
            0.0, -1.0, 0.0, 0.0,
        ];
        let a = AbsCosines::new(&dec, &TRUTH, 4);
        let m = mcc(&a).unwrap();
        assert_eq!(m.mcc, 1.0);
        assert_eq!(m.pairs, vec![(0, 2), (1, 0), (2, 1)]);
        let best = a.best_feature_per_latent();
        assert_eq!(best, vec![2, 0, 1]);
        assert_eq!(uniqueness(&best), 1.0);
        assert_eq!(
            a.best_latent_per_feature(),
            vec![(1, 1.0), (2, 1.0), (0, 1.0)]
        );
    }

    #[test]
    fn hand_computed_rectangular_case() {
        // Four latents, three features.
        //   l0 = (3, 4, 0, 0)/5  → |cos| 0.6, 0.8, 0
        //   l1 = (1, 0, 0, 0)    → 1, 0, 0
        //   l2 = (0, 0, 0, 1)    → 0, 0, 0 (orthogonal to every feature: argmax 0)
        //   l3 = (0, 1, 1, 0)/√2 → 0, 1/√2, 1/√2 (tie: argmax 1)
        // Best matching: l1–f0 (1), l0–f1 (0.8), l3–f2 (1/√2): MCC = (1.8 + 1/√2)/3, which beats
        // l0–f0, l3–f1, … The best features are 1, 0, 0, 1: two distinct of four latents.
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let dec = [
            0.6, 0.8, 0.0, 0.0, //
            1.0, 0.0, 0.0, 0.0, //
            0.0, 0.0, 0.0, 1.0, //
            0.0, s, s, 0.0,
        ];
        let a = AbsCosines::new(&dec, &TRUTH, 4);
        let m = mcc(&a).unwrap();
        assert_eq!(m.pairs, vec![(0, 1), (1, 0), (3, 2)]);
        let (x, y, s) = (0.6f32 as f64, 0.8f32 as f64, s as f64);
        let want = (1.0 + y / (x * x + y * y).sqrt() + s / (2.0 * s * s).sqrt()) / 3.0;
        assert!((m.mcc - want).abs() < 1e-15, "{} vs {want}", m.mcc);
        let best = a.best_feature_per_latent();
        assert_eq!(best, vec![1, 0, 0, 1]);
        assert_eq!(uniqueness(&best), 0.5);
        let per_feature = a.best_latent_per_feature();
        assert_eq!(per_feature[0], (1, 1.0));
        assert_eq!(per_feature[1].0, 0);
        assert!((per_feature[1].1 - 0.8).abs() < 1e-7);
    }

    #[test]
    fn a_zero_decoder_row_has_cosine_zero_and_no_latents_give_zero_uniqueness() {
        let a = AbsCosines::new(&[0.0; 4], &TRUTH, 4);
        assert_eq!((0..3).map(|j| a.get(0, j)).collect::<Vec<_>>(), [0.0; 3]);
        assert_eq!(a.best_feature_per_latent(), vec![0]);
        assert_eq!(mcc(&a).unwrap().mcc, 0.0);
        assert_eq!(uniqueness(&[]), 0.0);
    }
}
