//! Streaming mean and population standard deviation.
//!
//! extract and score_topk compute one value per sample, batch after batch, and
//! report the mean and the NumPy-default (population, ddof = 0) standard
//! deviation over all samples. Welford's update keeps this exact enough in f64
//! without storing the values, and `merge` (Chan et al.) lets parallel workers
//! or per-batch partial results be combined.

/// Running count, mean and sum of squared deviations (M2) in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MeanStd {
    count: u64,
    mean: f64,
    m2: f64,
}

impl MeanStd {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value. NaN propagates into the mean and std, as in NumPy.
    pub fn push(&mut self, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
    }

    /// Adds every value of a batch (e.g. the output of a per-sample metric).
    pub fn extend_from(&mut self, values: &[f64]) {
        for &v in values {
            self.push(v);
        }
    }

    /// Combines two partial aggregates as if all values had been pushed into one.
    pub fn merge(&mut self, other: &MeanStd) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n_a = self.count as f64;
        let n_b = other.count as f64;
        let n = n_a + n_b;
        let delta = other.mean - self.mean;
        self.mean += delta * n_b / n;
        self.m2 += other.m2 + delta * delta * n_a * n_b / n;
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean of the values pushed so far; `None` before the first value.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// Population standard deviation `sqrt(M2 / count)`; `None` when empty.
    pub fn population_std(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).max(0.0).sqrt())
    }

    /// `[mean, population std]` as stored in the score_topk JSON; NaN when empty.
    pub fn mean_std(&self) -> [f64; 2] {
        [
            self.mean().unwrap_or(f64::NAN),
            self.population_std().unwrap_or(f64::NAN),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_pass(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn hand_example() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, population variance 32/8 = 4, std 2.
        let mut agg = MeanStd::new();
        agg.extend_from(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(agg.count(), 8);
        assert!((agg.mean().unwrap() - 5.0).abs() < 1e-15);
        assert!((agg.population_std().unwrap() - 2.0).abs() < 1e-15);
    }

    #[test]
    fn batches_and_merge_match_two_pass() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let values: Vec<f64> = (0..1001).map(|_| 1e3 + rng.random::<f64>()).collect();
        let (mean, std) = two_pass(&values);

        let mut streamed = MeanStd::new();
        for batch in values.chunks(97) {
            streamed.extend_from(batch);
        }
        let mut merged = MeanStd::new();
        for batch in values.chunks(130) {
            let mut part = MeanStd::new();
            part.extend_from(batch);
            merged.merge(&part);
        }
        for agg in [streamed, merged] {
            assert!((agg.mean().unwrap() - mean).abs() < 1e-10);
            assert!((agg.population_std().unwrap() - std).abs() < 1e-10);
        }
    }

    #[test]
    fn empty_is_none() {
        let agg = MeanStd::new();
        assert_eq!(agg.mean(), None);
        assert_eq!(agg.population_std(), None);
        assert!(agg.mean_std()[0].is_nan());
    }
}
