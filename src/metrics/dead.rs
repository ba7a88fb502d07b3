//! Dead-latent bookkeeping (docs/reference.md §4.7, §7.8, §8.1).
//!
//! Two rules are in use. During training a latent is "dead" when its firing
//! frequency over the last window is below 10^−5.5. In extract and score_topk
//! a latent is dead when it never fired over the whole dataset. Both derive
//! from the same per-latent counts, kept here.

use rayon::prelude::*;

use super::error::{MetricsError, Result};
use super::matrix::MatRef;

/// `10^−5.5 ≈ 3.1623e−6`, the reference's frequency threshold.
pub const DEAD_FREQUENCY_THRESHOLD: f64 = 3.162_277_660_168_379_5e-6;

/// Per-latent counts of samples with a non-zero activation, plus the number
/// of samples seen, accumulated over a stream of code batches.
#[derive(Clone, Debug)]
pub struct ActivationCounter {
    counts: Vec<u64>,
    samples: u64,
}

impl ActivationCounter {
    pub fn new(n_latents: usize) -> Self {
        Self {
            counts: vec![0; n_latents],
            samples: 0,
        }
    }

    /// Adds a batch of codes `[B, n]`; an entry counts when it is not zero
    /// (NaN counts as active).
    pub fn update(&mut self, z: MatRef<'_>) -> Result<()> {
        let n = self.counts.len();
        if z.cols() != n {
            return Err(MetricsError::invalid(
                "activation counts",
                format!("code has {} latents, counter tracks {n}", z.cols()),
            ));
        }
        if z.rows() == 0 {
            return Ok(());
        }
        // Rows are split across threads, each with its own count vector.
        let batch = z
            .data()
            .par_chunks(n.max(1))
            .fold(
                || vec![0u64; n],
                |mut acc, row| {
                    for (c, &v) in acc.iter_mut().zip(row) {
                        *c += (v != 0.0) as u64;
                    }
                    acc
                },
            )
            .reduce(
                || vec![0u64; n],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        self.counts.iter_mut().zip(batch).for_each(|(c, b)| *c += b);
        self.samples += z.rows() as u64;
        Ok(())
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// `count_j / samples`, computed as the reference does: both cast to
    /// float32 and divided in float32 (an int64 tensor divided by an int).
    /// All zeros before any sample.
    pub fn frequencies(&self) -> Vec<f32> {
        if self.samples == 0 {
            return vec![0.0; self.counts.len()];
        }
        let total = self.samples as f32;
        self.counts.iter().map(|&c| c as f32 / total).collect()
    }

    /// Latents whose frequency is below `threshold` (the training rule; use
    /// [`DEAD_FREQUENCY_THRESHOLD`]).
    pub fn dead_by_frequency(&self, threshold: f64) -> Vec<usize> {
        identify_dead(&self.frequencies(), threshold)
    }

    /// Number of latents that were never active (the extract / score_topk rule).
    pub fn never_active(&self) -> usize {
        self.counts.iter().filter(|&&c| c == 0).count()
    }

    /// Clears counts and sample total, like the reference's
    /// `get_and_reset_stats` after each check window.
    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.samples = 0;
    }
}

/// Indices `j` with `|v_j| < threshold` (docs/reference.md §7.8). The comparison is made in
/// float32, as the reference compares a float32 tensor with a Python float.
pub fn identify_dead(frequencies: &[f32], threshold: f64) -> Vec<usize> {
    let t = threshold as f32;
    frequencies
        .iter()
        .enumerate()
        .filter(|(_, v)| v.abs() < t)
        .map(|(j, _)| j)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_constant() {
        assert!((DEAD_FREQUENCY_THRESHOLD - 10f64.powf(-5.5)).abs() < 1e-21);
    }

    #[test]
    fn counts_over_batches() {
        // Batch 1: latent 0 fires twice, latent 2 once; batch 2: latent 0 once.
        let b1 = [1.0, 0.0, 0.0, 2.0, 0.0, 3.0];
        let b2 = [0.5, 0.0, -0.0];
        let mut c = ActivationCounter::new(3);
        c.update(MatRef::new(&b1, 2, 3).unwrap()).unwrap();
        c.update(MatRef::new(&b2, 1, 3).unwrap()).unwrap();
        assert_eq!(c.counts(), &[3, 0, 1]);
        assert_eq!(c.samples(), 3);
        assert_eq!(c.never_active(), 1);
        assert_eq!(c.frequencies(), vec![1.0, 0.0, 1.0 / 3.0]);
        assert!(c.update(MatRef::new(&b1, 3, 2).unwrap()).is_err());
        c.reset();
        assert_eq!((c.counts(), c.samples()), (&[0u64, 0, 0][..], 0));
    }

    #[test]
    fn frequency_rule_at_the_training_window() {
        // 1,000 steps × 4,096 samples = 4,096,000 samples: 12 activations give
        // 2.93e−6 (dead), 13 give 3.17e−6 (alive).
        let mut c = ActivationCounter::new(3);
        c.counts = vec![12, 13, 0];
        c.samples = 4_096_000;
        assert_eq!(c.dead_by_frequency(DEAD_FREQUENCY_THRESHOLD), vec![0, 2]);
        assert_eq!(
            identify_dead(&[-1e-7, 1e-5], DEAD_FREQUENCY_THRESHOLD),
            vec![0]
        );
    }
}
