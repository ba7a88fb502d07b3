//! What an SAE does to the evaluated samples, as SynthSAEBench reports it beside its
//! ground-truth metrics (`x` a sample, `z` its code, `x̂` its reconstruction, both in the
//! original space; N samples):
//!
//! * SAE L0 = mean over samples of #{i : z_i > 0}; dead latents = #{i : z_i ≤ 0 in every sample};
//! * shrinkage = mean of ‖x̂‖/‖x‖ over the samples with ‖x‖ > 10⁻⁶;
//! * explained variance = 1 − (Σ‖x − x̂‖²/N) / (Σ‖x‖²/N − ‖Σx/N‖²), which is 1 when that
//!   variance is below 10⁻¹⁰ and the error is too, else 0 there.

/// Running sums over batches of samples.
pub struct SampleTotals {
    ever_fired: Vec<bool>,
    active: u64,
    samples: u64,
    shrinkage_sum: f64,
    shrinkage_samples: u64,
    sum_x: Vec<f64>,
    sum_sq_norm: f64,
    sum_sq_residual: f64,
}

/// The totals as numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSummary {
    pub sae_l0: f64,
    pub dead_latents: usize,
    pub shrinkage: f64,
    pub explained_variance: f64,
}

impl SampleTotals {
    pub fn new(latents: usize, d: usize) -> SampleTotals {
        SampleTotals {
            ever_fired: vec![false; latents],
            active: 0,
            samples: 0,
            shrinkage_sum: 0.0,
            shrinkage_samples: 0,
            sum_x: vec![0.0; d],
            sum_sq_norm: 0.0,
            sum_sq_residual: 0.0,
        }
    }

    /// Adds a batch: samples `x` and reconstructions `x_hat` (`[rows, d]`), codes `z`
    /// (`[rows, latents]`).
    pub fn add(&mut self, x: &[f32], x_hat: &[f32], z: &[f32]) {
        let (n, d) = (self.ever_fired.len(), self.sum_x.len());
        if n > 0 {
            for row in z.chunks(n) {
                for (fired, &v) in self.ever_fired.iter_mut().zip(row) {
                    if v > 0.0 {
                        *fired = true;
                        self.active += 1;
                    }
                }
            }
        }
        if d == 0 {
            return;
        }
        for (row, row_hat) in x.chunks(d).zip(x_hat.chunks(d)) {
            let (mut norm_sq, mut hat_sq, mut residual) = (0f64, 0f64, 0f64);
            for ((s, &a), &b) in self.sum_x.iter_mut().zip(row).zip(row_hat) {
                let (a, b) = (a as f64, b as f64);
                *s += a;
                norm_sq += a * a;
                hat_sq += b * b;
                residual += (a - b) * (a - b);
            }
            let norm = norm_sq.sqrt();
            if norm > 1e-6 {
                self.shrinkage_sum += hat_sq.sqrt() / norm;
                self.shrinkage_samples += 1;
            }
            self.sum_sq_norm += norm_sq;
            self.sum_sq_residual += residual;
            self.samples += 1;
        }
    }

    pub fn summary(&self) -> SampleSummary {
        let n = self.samples.max(1) as f64;
        let variance =
            self.sum_sq_norm / n - self.sum_x.iter().map(|s| (s / n).powi(2)).sum::<f64>();
        let explained_variance = if self.samples == 0 {
            0.0
        } else if variance < 1e-10 {
            if self.sum_sq_residual < 1e-10 {
                1.0
            } else {
                0.0
            }
        } else {
            1.0 - self.sum_sq_residual / n / variance
        };
        SampleSummary {
            sae_l0: self.active as f64 / n,
            dead_latents: self.ever_fired.iter().filter(|f| !**f).count(),
            shrinkage: if self.shrinkage_samples > 0 {
                self.shrinkage_sum / self.shrinkage_samples as f64
            } else {
                0.0
            },
            explained_variance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_totals() {
        // x0 = (3, 4), x̂0 = (0, 5): ‖x̂‖/‖x‖ = 1, residual 9 + 1 = 10.
        // x1 = (0, 0), x̂1 = (1, 0): left out of the shrinkage, residual 1.
        // x2 = (1, 0), x̂2 = (2, 0): ratio 2, residual 1.
        // Σ‖x‖² = 26, mean x = (4/3, 4/3): variance = 26/3 − 32/9 = 46/9;
        // explained variance = 1 − (12/3)/(46/9) = 1 − 36/46.
        // Codes: latent 0 fires twice, latent 1 once (a negative value is not firing), latent 2
        // never: L0 = 3/3, one dead latent.
        let x = [3.0, 4.0, 0.0, 0.0, 1.0, 0.0];
        let x_hat = [0.0, 5.0, 1.0, 0.0, 2.0, 0.0];
        let z = [1.0, 0.0, 0.0, 0.5, -1.0, 0.0, 0.0, 2.0, 0.0];
        let mut t = SampleTotals::new(3, 2);
        t.add(&x[..4], &x_hat[..4], &z[..6]);
        t.add(&x[4..], &x_hat[4..], &z[6..]);
        let s = t.summary();
        assert_eq!(s.sae_l0, 1.0);
        assert_eq!(s.dead_latents, 1);
        assert_eq!(s.shrinkage, 1.5);
        assert!(
            (s.explained_variance - (1.0 - 36.0 / 46.0)).abs() < 1e-15,
            "{s:?}"
        );
    }

    #[test]
    fn constant_samples_explain_all_or_nothing() {
        let mut t = SampleTotals::new(1, 2);
        t.add(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0], &[0.0, 0.0]);
        assert_eq!(t.summary().explained_variance, 1.0);
        let mut t = SampleTotals::new(1, 2);
        t.add(&[1.0, 1.0, 1.0, 1.0], &[0.0, 1.0, 0.0, 1.0], &[0.0, 0.0]);
        assert_eq!(t.summary().explained_variance, 0.0);
        assert_eq!(t.summary().dead_latents, 1);
    }
}
