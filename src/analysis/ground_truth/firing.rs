//! Each latent as a detector of its best-matching true feature: over samples, the latent fires
//! where its activation is > 0 and the feature where its true activation is > 0; per latent the
//! counts of true and false positives and negatives, and from them (0 where a denominator is 0)
//!
//! precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2·P·R/(P+R), accuracy = (TP+TN)/samples,
//!
//! averaged over all latents, silent ones included (SynthSAEBench's classification metrics).

use rayon::prelude::*;
use serde::Serialize;

use crate::data::csr::Csr;
use crate::data::npy::Matrix;

/// The true firing of the evaluated samples.
pub trait TrueFiring: Sync {
    /// Number of samples.
    fn rows(&self) -> usize;
    /// Number of true features.
    fn features(&self) -> usize;
    /// Calls `f(feature)` for every feature whose activation in sample `r` is > 0.
    fn for_each_firing(&self, r: usize, f: &mut dyn FnMut(usize));
}

/// True codes in compressed sparse rows (the `synth` step's codes).
impl TrueFiring for Csr {
    fn rows(&self) -> usize {
        self.rows
    }

    fn features(&self) -> usize {
        self.cols
    }

    fn for_each_firing(&self, r: usize, f: &mut dyn FnMut(usize)) {
        let (indices, values) = self.row(r);
        for (&j, &v) in indices.iter().zip(values) {
            if v > 0.0 {
                f(j as usize);
            }
        }
    }
}

/// True activations as a dense `[samples, features]` matrix.
impl TrueFiring for Matrix {
    fn rows(&self) -> usize {
        Matrix::rows(self)
    }

    fn features(&self) -> usize {
        self.cols()
    }

    fn for_each_firing(&self, r: usize, f: &mut dyn FnMut(usize)) {
        for (j, &v) in self.row(r).iter().enumerate() {
            if v > 0.0 {
                f(j);
            }
        }
    }
}

/// Precision, recall, F1 and accuracy of one latent, or their means over latents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
}

/// Per-latent confusion counts, accumulated batch by batch.
pub struct FiringCounts {
    best: Vec<usize>,
    tp: Vec<u64>,
    fp: Vec<u64>,
    fn_: Vec<u64>,
    samples: u64,
    true_active: u64,
}

/// Samples per parallel task in [`FiringCounts::add`].
const TASK_ROWS: usize = 256;

impl FiringCounts {
    /// `best[i]` is latent i's best-matching true feature.
    pub fn new(best: Vec<usize>) -> FiringCounts {
        let n = best.len();
        FiringCounts {
            best,
            tp: vec![0; n],
            fp: vec![0; n],
            fn_: vec![0; n],
            samples: 0,
            true_active: 0,
        }
    }

    /// Adds samples `first..first + rows` of `truth` with the latents' activations `codes`
    /// (`[rows, latents]`, row-major).
    pub fn add(&mut self, codes: &[f32], first: usize, truth: &dyn TrueFiring) {
        let n = self.best.len();
        if n == 0 {
            return;
        }
        let rows = codes.len() / n;
        let features = truth.features();
        let best = &self.best;
        // Each task counts its block of samples with its own marks of the firing features,
        // then the counts are summed: integer sums, so the result does not depend on the split.
        let zero = || (vec![0u64; n], vec![0u64; n], vec![0u64; n], 0u64);
        let (tp, fp, fn_, active) = codes
            .par_chunks(TASK_ROWS * n)
            .enumerate()
            .map(|(t, block)| {
                let mut c = zero();
                let mut fires = vec![false; features];
                let mut marked = Vec::new();
                for (k, z) in block.chunks(n).enumerate() {
                    truth.for_each_firing(first + t * TASK_ROWS + k, &mut |j| {
                        fires[j] = true;
                        marked.push(j);
                    });
                    c.3 += marked.len() as u64;
                    for (i, (&zi, &b)) in z.iter().zip(best).enumerate() {
                        match (zi > 0.0, fires[b]) {
                            (true, true) => c.0[i] += 1,
                            (true, false) => c.1[i] += 1,
                            (false, true) => c.2[i] += 1,
                            (false, false) => {}
                        }
                    }
                    marked.drain(..).for_each(|j| fires[j] = false);
                }
                c
            })
            .reduce(zero, |mut a, b| {
                for (x, y) in [(&mut a.0, b.0), (&mut a.1, b.1), (&mut a.2, b.2)] {
                    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
                }
                a.3 += b.3;
                a
            });
        for (x, y) in [(&mut self.tp, tp), (&mut self.fp, fp), (&mut self.fn_, fn_)] {
            x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        }
        self.samples += rows as u64;
        self.true_active += active;
    }

    /// Samples counted so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Mean number of firing true features per sample (SynthSAEBench's true L0).
    pub fn true_l0(&self) -> f64 {
        if self.samples == 0 {
            return 0.0;
        }
        self.true_active as f64 / self.samples as f64
    }

    /// Latent i's `(TP, FP, FN, TN)`.
    pub fn counts(&self, i: usize) -> (u64, u64, u64, u64) {
        let (tp, fp, fn_) = (self.tp[i], self.fp[i], self.fn_[i]);
        (tp, fp, fn_, self.samples - tp - fp - fn_)
    }

    /// Latent i's scores.
    pub fn scores(&self, i: usize) -> Scores {
        let (tp, fp, fn_, tn) = self.counts(i);
        let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Scores {
            precision,
            recall,
            f1,
            accuracy: ratio(tp + tn, self.samples),
        }
    }

    /// The scores averaged over all latents (zeros without latents).
    pub fn means(&self) -> Scores {
        let n = self.best.len();
        let mut m = Scores {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            accuracy: 0.0,
        };
        if n == 0 {
            return m;
        }
        for i in 0..n {
            let s = self.scores(i);
            m.precision += s.precision;
            m.recall += s.recall;
            m.f1 += s.f1;
            m.accuracy += s.accuracy;
        }
        let n = n as f64;
        m.precision /= n;
        m.recall /= n;
        m.f1 /= n;
        m.accuracy /= n;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five samples, three true features, in CSR.
    fn truth() -> Csr {
        // f0 fires in samples 0, 1, 2; f1 in 2, 3; f2 never (its stored value is 0, which is
        // not firing).
        Csr {
            rows: 5,
            cols: 3,
            indptr: vec![0, 1, 2, 5, 6, 6],
            indices: vec![0, 0, 0, 1, 2, 1],
            values: vec![1.0, 0.5, 2.0, 1.0, 0.0, 0.7],
        }
    }

    #[test]
    fn hand_counted_confusions_and_scores() {
        // Latent 0 tracks f0 and fires in samples 0, 1, 4: TP 2, FP 1, FN 1, TN 1 →
        //   P = 2/3, R = 2/3, F1 = 2/3, accuracy 3/5.
        // Latent 1 tracks f1 and fires in sample 3 only: TP 1, FP 0, FN 1, TN 3 →
        //   P = 1, R = 1/2, F1 = 2/3, accuracy 4/5.
        // Latent 2 tracks f2 and never fires: everything 0 but accuracy 1 (TN 5).
        // Latent 3 tracks f0 and fires with a negative activation only: not firing; TN 2, FN 3 →
        //   P = R = F1 = 0, accuracy 2/5.
        let codes: [[f32; 4]; 5] = [
            [1.0, 0.0, 0.0, -1.0],
            [0.3, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, -0.5],
        ];
        let flat: Vec<f32> = codes.iter().flatten().copied().collect();
        let t = truth();
        let mut c = FiringCounts::new(vec![0, 1, 2, 0]);
        // In two batches, as the step adds them.
        c.add(&flat[..8], 0, &t);
        c.add(&flat[8..], 2, &t);
        assert_eq!(c.samples(), 5);
        assert_eq!(c.true_l0(), 5.0 / 5.0);
        assert_eq!(c.counts(0), (2, 1, 1, 1));
        assert_eq!(c.counts(1), (1, 0, 1, 3));
        assert_eq!(c.counts(2), (0, 0, 0, 5));
        assert_eq!(c.counts(3), (0, 0, 3, 2));
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        let s = c.scores(0);
        close(s.precision, 2.0 / 3.0);
        close(s.recall, 2.0 / 3.0);
        close(s.f1, 2.0 / 3.0);
        close(s.accuracy, 0.6);
        let s = c.scores(1);
        close(s.f1, 2.0 / 3.0);
        assert_eq!((s.precision, s.recall, s.accuracy), (1.0, 0.5, 0.8));
        assert_eq!(
            c.scores(2),
            Scores {
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                accuracy: 1.0
            }
        );
        let m = c.means();
        close(m.precision, (2.0 / 3.0 + 1.0) / 4.0);
        close(m.recall, (2.0 / 3.0 + 0.5) / 4.0);
        close(m.f1, (4.0 / 3.0) / 4.0);
        close(m.accuracy, (0.6 + 0.8 + 1.0 + 0.4) / 4.0);
    }

    #[test]
    fn blocks_and_a_dense_truth_matrix_count_as_one_direct_pass() {
        // 1000 samples (several parallel blocks), three features firing in a fixed pattern, two
        // latents tracking f0 and f2.
        let rows = 1000;
        let (mut indptr, mut indices, mut values) = (vec![0i64], Vec::new(), Vec::new());
        let mut dense = vec![0f32; rows * 3];
        for r in 0..rows {
            for j in 0..3 {
                if (r * (j + 2)) % 7 < 3 {
                    let v = if (r + j) % 5 == 0 { -1.0 } else { 0.5 };
                    indices.push(j as i32);
                    values.push(v);
                    dense[r * 3 + j] = v;
                }
            }
            indptr.push(indices.len() as i64);
        }
        let csr = Csr {
            rows,
            cols: 3,
            indptr,
            indices,
            values,
        };
        let dir = std::env::temp_dir().join(format!("msae-firing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("truth.npy");
        crate::data::npy::write_matrix(&path, rows, 3, &dense).unwrap();
        let m = Matrix::open(&path).unwrap();
        let codes: Vec<f32> = (0..rows * 2).map(|k| ((k * 7) % 4) as f32 - 1.5).collect();
        let best = vec![0, 2];
        let (mut a, mut b) = (
            FiringCounts::new(best.clone()),
            FiringCounts::new(best.clone()),
        );
        a.add(&codes, 0, &csr);
        b.add(&codes[..600 * 2], 0, &m);
        b.add(&codes[600 * 2..], 600, &m);
        for (i, &f) in best.iter().enumerate() {
            let mut want = (0, 0, 0, 0);
            for r in 0..rows {
                match (codes[r * 2 + i] > 0.0, dense[r * 3 + f] > 0.0) {
                    (true, true) => want.0 += 1,
                    (true, false) => want.1 += 1,
                    (false, true) => want.2 += 1,
                    (false, false) => want.3 += 1,
                }
            }
            assert_eq!(a.counts(i), want);
            assert_eq!(b.counts(i), want);
        }
        let active = dense.iter().filter(|&&v| v > 0.0).count() as f64;
        assert_eq!(a.true_l0(), active / rows as f64);
        assert_eq!(b.true_l0(), a.true_l0());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
