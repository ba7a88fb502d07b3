//! Dataset standardisation statistics (docs/reference.md §3.2): the mean row μ and the
//! scaling factor s applied as `x ↦ (x − μ)·s`.
//!
//! Rows are read in contiguous chunks (10,000 rows by default, as in the
//! reference) from a [`SequentialRows`], so a memory-mapped matrix of several GB
//! is streamed twice (once for μ, once for s) without being copied.
//!
//! Precision follows the reference: each chunk's column sums are float32 in
//! PyTorch's summation order ([`torch_column_sums`]) and are added into a
//! float32 accumulator, which is divided by N in float32. These roundings
//! change μ in its last bits for millions of rows, and so everything
//! standardised with it. The squared norms `‖x − μ‖²` are formed in float32
//! and summed in f64; the reference sums each chunk in float32 with a
//! thread-count-dependent reduction tree, which is within ~1e-7 relative of
//! the f64 sum.

use std::error::Error as StdError;

use super::error::{MetricsError, Result};
use super::matrix::MatRef;
use super::torch_sum::torch_column_sums;

/// Chunk length of the reference.
pub const STATS_CHUNK_ROWS: usize = 10_000;

/// Where [`dataset_stats`] reads rows from.
///
/// `read(start, end)` returns rows `start..end` as one row-major slice of
/// `(end − start) · dim()` values. Calls come in increasing, non-overlapping
/// order, twice over the whole range. Implemented for [`MatRef`]; a memory map
/// implements it by slicing, a file reader by filling an owned buffer.
pub trait SequentialRows {
    fn rows(&self) -> usize;
    fn dim(&self) -> usize;
    fn read(
        &mut self,
        start: usize,
        end: usize,
    ) -> std::result::Result<&[f32], Box<dyn StdError + Send + Sync>>;
}

impl SequentialRows for MatRef<'_> {
    fn rows(&self) -> usize {
        MatRef::rows(self)
    }

    fn dim(&self) -> usize {
        self.cols()
    }

    fn read(
        &mut self,
        start: usize,
        end: usize,
    ) -> std::result::Result<&[f32], Box<dyn StdError + Send + Sync>> {
        Ok(&self.data()[start * self.cols()..end * self.cols()])
    }
}

/// How the scaling factor is derived from `avg = mean_i ‖x_i − μ‖²`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleRule {
    /// `s = target_norm / avg`, what the reference computes (it divides by the
    /// mean *squared* norm, so the standardised rows do not have norm
    /// `target_norm` on average). Needed to reproduce its numbers.
    #[default]
    Reference,
    /// `s = target_norm / sqrt(avg)`: standardised rows have mean squared norm
    /// `target_norm²` (d with the default target), as intended.
    Corrected,
}

/// Options of [`dataset_stats`].
#[derive(Clone, Debug, PartialEq)]
pub struct StatsOptions {
    /// Subtract the dataset mean (the training configuration does).
    pub mean_center: bool,
    /// Target norm; `None` means `sqrt(dim)`, `Some(0.0)` disables scaling (s = 1).
    pub target_norm: Option<f64>,
    pub scale_rule: ScaleRule,
    /// Rows per chunk; the chunking affects the float32 rounding of μ.
    pub chunk_rows: usize,
}

impl Default for StatsOptions {
    fn default() -> Self {
        Self {
            mean_center: true,
            target_norm: None,
            scale_rule: ScaleRule::Reference,
            chunk_rows: STATS_CHUNK_ROWS,
        }
    }
}

/// μ and s of one dataset, with what they were derived from.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetStats {
    /// Mean row (float32), or zeros without mean centring.
    pub mean: Vec<f32>,
    /// Scaling factor (f64, as the reference keeps it).
    pub scale: f64,
    /// The target norm used (`sqrt(dim)` unless given).
    pub target_norm: f64,
    /// `mean_i ‖x_i − μ‖²`, when scaling was computed.
    pub mean_sq_norm: Option<f64>,
    pub rows: usize,
}

impl DatasetStats {
    /// Standardises row-major rows in place, `x ↦ (x − μ)·s` in float32 (the
    /// reference multiplies a float32 tensor by the scale, i.e. by `s as f32`).
    pub fn standardize(&self, rows: &mut [f32]) -> Result<()> {
        let d = self.check_rows(rows)?;
        let s = self.scale as f32;
        for row in rows.chunks_exact_mut(d) {
            for (v, &m) in row.iter_mut().zip(&self.mean) {
                *v = (*v - m) * s;
            }
        }
        Ok(())
    }

    /// Inverse of [`Self::standardize`], `y ↦ y / s + μ` in float32.
    pub fn unstandardize(&self, rows: &mut [f32]) -> Result<()> {
        let d = self.check_rows(rows)?;
        let s = self.scale as f32;
        for row in rows.chunks_exact_mut(d) {
            for (v, &m) in row.iter_mut().zip(&self.mean) {
                *v = *v / s + m;
            }
        }
        Ok(())
    }

    fn check_rows(&self, rows: &[f32]) -> Result<usize> {
        let d = self.mean.len();
        if d == 0 || !rows.len().is_multiple_of(d) {
            return Err(MetricsError::invalid(
                "standardisation",
                format!("{} values are not whole rows of width {d}", rows.len()),
            ));
        }
        Ok(d)
    }
}

/// Reads every chunk of `src`, checking the returned length.
fn for_each_chunk<S: SequentialRows>(
    src: &mut S,
    chunk_rows: usize,
    mut f: impl FnMut(&[f32]),
) -> Result<()> {
    let (n, d) = (src.rows(), src.dim());
    let mut start = 0;
    while start < n {
        let end = (start + chunk_rows).min(n);
        let chunk = src
            .read(start, end)
            .map_err(|source| MetricsError::Source { start, end, source })?;
        if chunk.len() != (end - start) * d {
            return Err(MetricsError::BadLength {
                what: "row source chunk",
                len: chunk.len(),
                rows: end - start,
                cols: d,
                expected: (end - start) * d,
            });
        }
        f(chunk);
        start = end;
    }
    Ok(())
}

/// Computes μ and s of the rows of `src` (docs/reference.md §3.1 step 4 and §3.2).
///
/// Without mean centring μ = 0; with a target norm of 0, s = 1 and the second
/// pass is skipped. The "repr" special case of the reference (no statistics
/// at all) is left to the caller.
pub fn dataset_stats<S: SequentialRows>(src: &mut S, opts: &StatsOptions) -> Result<DatasetStats> {
    let (n, d) = (src.rows(), src.dim());
    if n == 0 || d == 0 {
        return Err(MetricsError::degenerate(
            "dataset statistics",
            format!("the dataset is empty ({n} rows × {d} columns)"),
        ));
    }
    if opts.chunk_rows == 0 {
        return Err(MetricsError::invalid(
            "dataset statistics",
            "chunk_rows must be positive",
        ));
    }
    let target_norm = opts.target_norm.unwrap_or((d as f64).sqrt());
    if !target_norm.is_finite() {
        return Err(MetricsError::invalid(
            "dataset statistics",
            format!("target norm must be finite, got {target_norm}"),
        ));
    }

    let mut mean = vec![0.0f32; d];
    if opts.mean_center {
        for_each_chunk(src, opts.chunk_rows, |chunk| {
            for (m, s) in mean.iter_mut().zip(torch_column_sums(chunk, d)) {
                *m += s;
            }
        })?;
        let nf = n as f32;
        mean.iter_mut().for_each(|m| *m /= nf);
    }

    if target_norm == 0.0 {
        return Ok(DatasetStats {
            mean,
            scale: 1.0,
            target_norm,
            mean_sq_norm: None,
            rows: n,
        });
    }

    let mut total = 0.0f64;
    for_each_chunk(src, opts.chunk_rows, |chunk| {
        let mut chunk_sum = 0.0f64;
        for row in chunk.chunks_exact(d) {
            for (&v, &m) in row.iter().zip(&mean) {
                let c = v - m;
                chunk_sum += (c * c) as f64;
            }
        }
        total += chunk_sum;
    })?;
    let avg = total / n as f64;
    if !(avg > 0.0 && avg.is_finite()) {
        return Err(MetricsError::degenerate(
            "dataset statistics",
            format!(
                "mean squared norm of the centred rows is {avg}; cannot scale to a target norm"
            ),
        ));
    }
    let scale = match opts.scale_rule {
        ScaleRule::Reference => target_norm / avg,
        ScaleRule::Corrected => target_norm / avg.sqrt(),
    };
    Ok(DatasetStats {
        mean,
        scale,
        target_norm,
        mean_sq_norm: Some(avg),
        rows: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(data: &[f32], rows: usize, cols: usize, opts: &StatsOptions) -> DatasetStats {
        dataset_stats(&mut MatRef::new(data, rows, cols).unwrap(), opts).unwrap()
    }

    #[test]
    fn scale_rules_hand_example() {
        // Rows [1, 1] and [3, 3]: μ = [2, 2], ‖x − μ‖² = 2 for both → avg 2.
        // Default target √2: reference s = √2 / 2, corrected s = √2 / √2 = 1.
        let data = [1.0, 1.0, 3.0, 3.0];
        let reference = stats(&data, 2, 2, &StatsOptions::default());
        assert_eq!(reference.mean, vec![2.0, 2.0]);
        assert_eq!(reference.mean_sq_norm, Some(2.0));
        assert!((reference.scale - 2f64.sqrt() / 2.0).abs() < 1e-15);
        let corrected = stats(
            &data,
            2,
            2,
            &StatsOptions {
                scale_rule: ScaleRule::Corrected,
                ..Default::default()
            },
        );
        assert!((corrected.scale - 1.0).abs() < 1e-15);

        // Without centring: ‖x‖² = 2 and 18 → avg 10; target 4 → s = 0.4 / 4/√10.
        let opts = StatsOptions {
            mean_center: false,
            target_norm: Some(4.0),
            ..Default::default()
        };
        let plain = stats(&data, 2, 2, &opts);
        assert_eq!(plain.mean, vec![0.0, 0.0]);
        assert!((plain.scale - 0.4).abs() < 1e-15);
        let plain_c = stats(
            &data,
            2,
            2,
            &StatsOptions {
                scale_rule: ScaleRule::Corrected,
                ..opts.clone()
            },
        );
        assert!((plain_c.scale - 4.0 / 10f64.sqrt()).abs() < 1e-15);

        // Target 0: no scaling.
        let none = stats(
            &data,
            2,
            2,
            &StatsOptions {
                target_norm: Some(0.0),
                ..Default::default()
            },
        );
        assert_eq!((none.scale, none.mean_sq_norm), (1.0, None));
    }

    #[test]
    fn standardize_round_trip() {
        let data = [1.0, 1.0, 3.0, 3.0];
        let st = stats(&data, 2, 2, &StatsOptions::default());
        let mut rows = data;
        st.standardize(&mut rows).unwrap();
        let s = (2f64.sqrt() / 2.0) as f32;
        assert_eq!(rows, [-s, -s, s, s]);
        st.unstandardize(&mut rows).unwrap();
        for (a, b) in rows.iter().zip(&data) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(st.standardize(&mut [0.0; 3]).is_err());
    }

    /// Plain re-statement of the cascade for one column, written independently
    /// of the library's column-parallel version.
    fn simulate_column(col: &[f32]) -> f32 {
        let size = col.len();
        let ceil_log2 = if size <= 1 {
            0
        } else {
            64 - ((size - 1) as u64).leading_zeros() as usize
        };
        let power = std::cmp::max(4, ceil_log2 / 4);
        let step = 1 << power;
        let mut levels = [0.0f32; 4];
        let mut i = 0;
        while i + step <= size {
            for v in &col[i..i + step] {
                levels[0] += v;
            }
            i += step;
            let mut j = 1;
            while j < 4 {
                levels[j] += levels[j - 1];
                levels[j - 1] = 0.0;
                if i % (1 << (power * (j + 1))) != 0 {
                    break;
                }
                j += 1;
            }
        }
        for v in &col[i..] {
            levels[0] += v;
        }
        levels[0] + levels[1] + levels[2] + levels[3]
    }

    #[test]
    fn mean_reproduces_float32_chunk_accumulation() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        // 64 columns (cascade path for all), 2,345 rows in chunks of 1,000,
        // values with a large offset so float32 rounding is visible.
        let (rows, cols, chunk) = (2345, 64, 1000);
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| 300.0 + rng.random_range(-1.0f32..1.0))
            .collect();
        let opts = StatsOptions {
            chunk_rows: chunk,
            ..Default::default()
        };
        let st = stats(&data, rows, cols, &opts);

        let mut expect = vec![0.0f32; cols];
        for start in (0..rows).step_by(chunk) {
            let end = (start + chunk).min(rows);
            for (j, e) in expect.iter_mut().enumerate() {
                let col: Vec<f32> = (start..end).map(|i| data[i * cols + j]).collect();
                *e += simulate_column(&col);
            }
        }
        expect.iter_mut().for_each(|e| *e /= rows as f32);
        for (j, (&got, &want)) in st.mean.iter().zip(&expect).enumerate() {
            assert_eq!(got.to_bits(), want.to_bits(), "column {j}");
        }

        // The f32 accumulation is visible: at least one column differs from
        // the exactly rounded mean.
        let differs = (0..cols).any(|j| {
            let exact = (0..rows).map(|i| data[i * cols + j] as f64).sum::<f64>() / rows as f64;
            st.mean[j] != exact as f32
        });
        assert!(differs);

        // avg = mean ‖x − μ‖² in f64 from the float32 differences.
        let avg = (0..rows * cols)
            .map(|t| ((data[t] - st.mean[t % cols]) as f64).powi(2))
            .sum::<f64>()
            / rows as f64;
        let rel = (st.mean_sq_norm.unwrap() - avg).abs() / avg;
        assert!(rel < 1e-6, "{rel}");
        assert!((st.scale - (cols as f64).sqrt() / st.mean_sq_norm.unwrap()).abs() < 1e-15);
    }

    struct Failing;
    impl SequentialRows for Failing {
        fn rows(&self) -> usize {
            5
        }
        fn dim(&self) -> usize {
            2
        }
        fn read(
            &mut self,
            _: usize,
            _: usize,
        ) -> std::result::Result<&[f32], Box<dyn StdError + Send + Sync>> {
            Err("disk on fire".into())
        }
    }

    #[test]
    fn errors() {
        let e = dataset_stats(&mut Failing, &StatsOptions::default()).unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
        let constant = [1.0f32; 6];
        assert!(dataset_stats(
            &mut MatRef::new(&constant, 3, 2).unwrap(),
            &StatsOptions::default()
        )
        .is_err());
        assert!(dataset_stats(
            &mut MatRef::new(&[], 0, 2).unwrap(),
            &StatsOptions::default()
        )
        .is_err());
    }
}
