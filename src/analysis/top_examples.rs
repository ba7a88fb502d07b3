//! The rows that activate each latent most, and each latent's firing statistics, over a code
//! matrix streamed in blocks of rows.
//!
//! Memory is bounded by one block and a fixed-size heap per latent, never by rows × latents.
//! Each block's latents are split into contiguous ranges, one per thread; a latent is only ever
//! touched by one thread and sees the rows in ascending order, so every heap, sum and histogram
//! is the same whatever the thread count. A heap keeps the `n` largest values, ties going to
//! the lower row index: since rows arrive in ascending order, a value equal to the smallest kept
//! one never displaces it.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{AnalysisError, Result};

/// Log2 activation histogram: bins of half an octave from 2^LOG2_MIN upwards; the first bin
/// also holds smaller values and the last larger ones.
pub const HISTOGRAM_BINS: usize = 32;
pub const HISTOGRAM_LOG2_MIN: i32 = -12;

/// The bin of a positive activation `v`: `floor(2·log2 v) − 2·LOG2_MIN`, clamped, computed from
/// the float's exponent and mantissa (the half-octave boundary is the mantissa of √2).
pub fn histogram_bin(v: f32) -> usize {
    debug_assert!(v > 0.0);
    let bits = v.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32;
    let (e, upper_half) = if exponent == 0 {
        // Subnormal: far below the first bin.
        (-127, false)
    } else {
        // √2 = 1.0110101000001001111001…₂; its 23-bit mantissa is 0x3504f3 and 1.m ≥ √2
        // exactly when the mantissa is above it (√2 itself is not a float).
        (exponent - 127, (bits & 0x7f_ffff) > 0x35_04f3)
    };
    let half_octaves = 2 * e + upper_half as i32 - 2 * HISTOGRAM_LOG2_MIN;
    half_octaves.clamp(0, HISTOGRAM_BINS as i32 - 1) as usize
}

/// One latent's kept examples: a min-heap on (value, then the higher row index) of at most `n`
/// entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TopHeap {
    entries: Vec<(f32, u64)>,
}

impl TopHeap {
    /// `a` is a worse example than `b`: smaller, or equal with a later row.
    fn worse(a: (f32, u64), b: (f32, u64)) -> bool {
        a.0 < b.0 || (a.0 == b.0 && a.1 > b.1)
    }

    fn offer(&mut self, value: f32, row: u64, n: usize) {
        if self.entries.len() < n {
            self.entries.push((value, row));
            let mut i = self.entries.len() - 1;
            while i > 0 {
                let parent = (i - 1) / 2;
                if Self::worse(self.entries[i], self.entries[parent]) {
                    self.entries.swap(i, parent);
                    i = parent;
                } else {
                    break;
                }
            }
        } else if n > 0 && Self::worse(self.entries[0], (value, row)) {
            self.entries[0] = (value, row);
            let mut i = 0;
            loop {
                let (l, r) = (2 * i + 1, 2 * i + 2);
                let mut worst = i;
                if l < n && Self::worse(self.entries[l], self.entries[worst]) {
                    worst = l;
                }
                if r < n && Self::worse(self.entries[r], self.entries[worst]) {
                    worst = r;
                }
                if worst == i {
                    break;
                }
                self.entries.swap(i, worst);
                i = worst;
            }
        }
    }

    /// The smallest kept value once the heap is full (a row must beat it to enter).
    fn bar(&self, n: usize) -> f32 {
        if self.entries.len() < n {
            f32::NEG_INFINITY
        } else {
            self.entries[0].0
        }
    }

    /// Best first: by value descending, then row ascending.
    fn sorted(&self) -> Vec<(f32, u64)> {
        let mut v = self.entries.clone();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v
    }
}

/// Running statistics of one latent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LatentState {
    heap: TopHeap,
    fires: u64,
    sum: f64,
    max: f32,
    histogram: [u64; HISTOGRAM_BINS],
}

impl LatentState {
    /// Counts a firing value `v > 0` of row `row`.
    #[inline]
    fn add(&mut self, v: f32, row: u64, keep: usize) {
        self.fires += 1;
        self.sum += v as f64;
        if v > self.max {
            self.max = v;
        }
        self.histogram[histogram_bin(v)] += 1;
        if v > self.heap.bar(keep) {
            self.heap.offer(v, row, keep);
        }
    }
}

impl Default for LatentState {
    fn default() -> Self {
        LatentState {
            heap: TopHeap::default(),
            fires: 0,
            sum: 0.0,
            max: 0.0,
            histogram: [0; HISTOGRAM_BINS],
        }
    }
}

/// One latent's summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatentSummary {
    pub latent: usize,
    /// Share of rows where it fires (activation > 0).
    pub frequency: f64,
    /// Mean activation over the rows where it fires (0 when it never fires).
    pub mean_when_firing: f64,
    pub max: f32,
    /// Counts of its positive activations in half-octave bins (see [`histogram_bin`]).
    pub histogram: Vec<u64>,
    /// Its top rows, best first: (row, activation).
    pub top: Vec<(u64, f32)>,
}

/// The accumulator: feed it code blocks in row order, then read the summaries. It serialises
/// (for checkpoints) and continues exactly where it stopped.
#[derive(Serialize, Deserialize)]
pub struct TopExamples {
    n_latents: usize,
    per_latent: usize,
    rows_seen: u64,
    latents: Vec<LatentState>,
}

impl TopExamples {
    /// Keeps the `per_latent` best rows of each of `n_latents` latents.
    pub fn new(n_latents: usize, per_latent: usize) -> Self {
        TopExamples {
            n_latents,
            per_latent,
            rows_seen: 0,
            latents: vec![LatentState::default(); n_latents],
        }
    }

    pub fn rows_seen(&self) -> u64 {
        self.rows_seen
    }

    /// (latents, examples kept per latent).
    pub fn shape(&self) -> (usize, usize) {
        (self.n_latents, self.per_latent)
    }

    /// Adds the next `codes.len() / n_latents` rows (row-major codes). Non-positive entries do
    /// not fire and are never examples; NaN is refused.
    pub fn push(&mut self, codes: &[f32]) -> Result<()> {
        let n = self.n_latents;
        if n == 0 || !codes.len().is_multiple_of(n) {
            return Err(AnalysisError::invalid(
                "top examples",
                format!(
                    "{} code values do not form rows of {n} latents",
                    codes.len()
                ),
            ));
        }
        let rows = codes.len() / n;
        let keep = self.per_latent;
        self.scan(rows, |j0, states, first_row| {
            for i in 0..rows {
                let row = &codes[i * n + j0..i * n + j0 + states.len()];
                let row_index = first_row + i as u64;
                for (state, &v) in states.iter_mut().zip(row) {
                    if v > 0.0 {
                        state.add(v, row_index, keep);
                    } else if v.is_nan() {
                        return Some(row_index);
                    }
                }
            }
            None
        })
    }

    /// Adds the next `offsets.len() − 1` rows given as their non-zero entries: row r holds
    /// `latents[offsets[r]..offsets[r + 1]]` with the matching `values`. The same as
    /// [`TopExamples::push`] of the dense rows, without scanning their zeros.
    pub fn push_sparse(
        &mut self,
        offsets: &[usize],
        latents: &[u32],
        values: &[f32],
    ) -> Result<()> {
        let n = self.n_latents;
        let rows = offsets.len().saturating_sub(1);
        let well_formed = offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets[rows] == latents.len()
            && latents.len() == values.len()
            && latents.iter().all(|&j| (j as usize) < n);
        if !well_formed {
            return Err(AnalysisError::invalid(
                "top examples",
                format!("sparse code rows are not entries of {n} latents"),
            ));
        }
        let keep = self.per_latent;
        // Each task walks every entry of the block in row order, taking those of its own
        // latents: a latent still sees its rows in ascending order.
        self.scan(rows, |j0, states, first_row| {
            let range = j0..j0 + states.len();
            for r in 0..rows {
                let row_index = first_row + r as u64;
                for e in offsets[r]..offsets[r + 1] {
                    let j = latents[e] as usize;
                    if !range.contains(&j) {
                        continue;
                    }
                    let v = values[e];
                    if v.is_nan() {
                        return Some(row_index);
                    }
                    if v > 0.0 {
                        states[j - j0].add(v, row_index, keep);
                    }
                }
            }
            None
        })
    }

    /// Runs `visit(first latent, states, first row)` on contiguous latent ranges, one task
    /// each (the split does not change any result), then counts the block's `rows`; a visit
    /// returns the first row whose code holds NaN, and the lowest such row is refused.
    fn scan(
        &mut self,
        rows: usize,
        visit: impl Fn(usize, &mut [LatentState], u64) -> Option<u64> + Sync,
    ) -> Result<()> {
        let first_row = self.rows_seen;
        let chunk = self
            .n_latents
            .div_ceil(rayon::current_num_threads().max(1) * 4)
            .max(16);
        let bad = self
            .latents
            .par_chunks_mut(chunk)
            .enumerate()
            .map(|(c, states)| visit(c * chunk, states, first_row))
            .flatten()
            .min();
        if let Some(row) = bad {
            return Err(AnalysisError::invalid(
                "top examples",
                format!("the code of row {row} holds NaN"),
            ));
        }
        self.rows_seen += rows as u64;
        Ok(())
    }

    /// Every latent's summary, in latent order.
    pub fn summaries(&self) -> Vec<LatentSummary> {
        let rows = self.rows_seen.max(1) as f64;
        self.latents
            .iter()
            .enumerate()
            .map(|(j, s)| LatentSummary {
                latent: j,
                frequency: s.fires as f64 / rows,
                mean_when_firing: if s.fires == 0 {
                    0.0
                } else {
                    s.sum / s.fires as f64
                },
                max: s.max,
                histogram: s.histogram.to_vec(),
                top: s.heap.sorted().into_iter().map(|(v, r)| (r, v)).collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Brute force: every (row, value) of a latent sorted by value descending, row ascending.
    fn brute(codes: &[f32], n: usize, j: usize, keep: usize) -> Vec<(u64, f32)> {
        let mut all: Vec<(u64, f32)> = codes
            .chunks(n)
            .enumerate()
            .filter(|(_, r)| r[j] > 0.0)
            .map(|(i, r)| (i as u64, r[j]))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(keep);
        all
    }

    #[test]
    fn the_kept_rows_are_the_sorted_best_with_ties_to_the_lower_row() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (rows, n, keep) = (300, 37, 5);
        // Values on a coarse grid so that ties are common; latent 3 never fires.
        let codes: Vec<f32> = (0..rows * n)
            .map(|i| {
                if i % n == 3 || rng.random_bool(0.6) {
                    0.0
                } else {
                    rng.random_range(1..6) as f32 * 0.5
                }
            })
            .collect();
        let mut acc = TopExamples::new(n, keep);
        // Uneven blocks: the stream must not depend on where blocks end.
        for block in [7, 100, 1, 192] {
            let start = acc.rows_seen() as usize;
            acc.push(&codes[start * n..(start + block) * n]).unwrap();
        }
        let sums = acc.summaries();
        for j in 0..n {
            assert_eq!(sums[j].top, brute(&codes, n, j, keep), "latent {j}");
            let firing: Vec<f32> = codes.chunks(n).map(|r| r[j]).filter(|&v| v > 0.0).collect();
            assert_eq!(sums[j].frequency, firing.len() as f64 / rows as f64);
            let max = firing.iter().cloned().fold(0.0, f32::max);
            assert_eq!(sums[j].max, max);
            assert_eq!(sums[j].histogram.iter().sum::<u64>(), firing.len() as u64);
        }
        assert!(sums[3].top.is_empty() && sums[3].frequency == 0.0);
        assert_eq!(sums[3].mean_when_firing, 0.0);
    }

    /// Rows given as their entries give the summaries of the same rows given densely.
    #[test]
    fn sparse_rows_equal_dense_rows() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (rows, n, keep) = (120, 40, 4);
        let codes: Vec<f32> = (0..rows * n)
            .map(|_| {
                if rng.random_bool(0.8) {
                    0.0
                } else {
                    rng.random_range(1..5) as f32 * 0.5
                }
            })
            .collect();
        let mut dense = TopExamples::new(n, keep);
        let mut sparse = TopExamples::new(n, keep);
        for block in codes.chunks(37 * n) {
            dense.push(block).unwrap();
            let (mut offsets, mut latents, mut values) = (vec![0], vec![], vec![]);
            for row in block.chunks(n) {
                for (j, &v) in row.iter().enumerate() {
                    if v > 0.0 {
                        latents.push(j as u32);
                        values.push(v);
                    }
                }
                offsets.push(latents.len());
            }
            sparse.push_sparse(&offsets, &latents, &values).unwrap();
        }
        assert_eq!(sparse.rows_seen(), rows as u64);
        assert_eq!(sparse.summaries(), dense.summaries());
        // Malformed entries and NaN are refused.
        assert!(sparse.push_sparse(&[0, 1], &[40], &[1.0]).is_err());
        assert!(sparse.push_sparse(&[0, 2], &[1], &[1.0]).is_err());
        let err = sparse
            .push_sparse(&[0, 0, 1], &[3], &[f32::NAN])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("row {} holds NaN", rows + 1)),
            "{err}"
        );
    }

    #[test]
    fn a_saved_and_restored_accumulator_continues_exactly() {
        let n = 11;
        let codes: Vec<f32> = (0..50 * n)
            .map(|i| ((i * 7919) % 13) as f32 * 0.25)
            .collect();
        let mut whole = TopExamples::new(n, 3);
        whole.push(&codes).unwrap();
        let mut first = TopExamples::new(n, 3);
        first.push(&codes[..20 * n]).unwrap();
        let text = serde_json::to_string(&first).unwrap();
        let mut resumed: TopExamples = serde_json::from_str(&text).unwrap();
        resumed.push(&codes[20 * n..]).unwrap();
        assert_eq!(resumed.summaries(), whole.summaries());
    }

    #[test]
    fn histogram_bins_are_half_octaves() {
        // 1 = 2^0 opens bin 24 (= −2·LOG2_MIN); √2 ≈ 1.4142 opens the next.
        assert_eq!(histogram_bin(1.0), 24);
        assert_eq!(histogram_bin(1.414), 24);
        assert_eq!(histogram_bin(1.4143), 25);
        assert_eq!(histogram_bin(1.999), 25);
        assert_eq!(histogram_bin(2.0), 26);
        assert_eq!(histogram_bin(0.5), 22);
        assert_eq!(histogram_bin(1e-30), 0);
        assert_eq!(histogram_bin(1e30), HISTOGRAM_BINS - 1);
        for v in [0.01f32, 0.3, 0.9, 3.0, 7.7] {
            let expected = ((2.0 * (v as f64).log2()).floor() as i32 + 24).clamp(0, 31) as usize;
            assert_eq!(histogram_bin(v), expected, "{v}");
        }
    }

    #[test]
    fn nan_and_ragged_blocks_are_refused() {
        let mut acc = TopExamples::new(4, 2);
        assert!(acc.push(&[1.0; 6]).is_err());
        let err = acc
            .push(&[1.0, 0.0, f32::NAN, 0.0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 0 holds NaN"), "{err}");
    }
}
