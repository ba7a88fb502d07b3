//! Nearest neighbours in a linear kernel, the only part of the m×m kernel
//! matrices that CKNNA (docs/reference.md §7.9) actually uses.
//!
//! The reference masks `K = A Aᵀ` with each row's top-k entries (diagonal
//! excluded) and then sums over the mask. Keeping just those k entries per row
//! turns O(m²) memory into O(m·k), and lets the kernel be produced block by
//! block: here on the CPU (dense GEMM, or a sparse product for codes that are
//! mostly zero), or elsewhere (e.g. on a GPU) and pushed in with
//! [`NeighboursBuilder::push_rows`].

use std::cmp::Ordering;

use rayon::prelude::*;

use super::error::{MetricsError, Result};
use super::gemm::kernel_rows;
use super::matrix::MatRef;

/// Per row i of an m×m kernel: the k column indices j ≠ i with the largest
/// values, with those values. Stored sorted by column index so membership of
/// a pair (i, j) is a binary search.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelNeighbours {
    m: usize,
    k: usize,
    idx: Vec<u32>,
    val: Vec<f64>,
}

impl KernelNeighbours {
    /// Number of samples (rows of the kernel).
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Neighbours kept per row (the requested top-k, capped at m − 1).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Column indices of row `i`'s neighbours (ascending) and their kernel values.
    pub fn row(&self, i: usize) -> (&[u32], &[f64]) {
        let r = i * self.k..(i + 1) * self.k;
        (&self.idx[r.clone()], &self.val[r])
    }

    /// Kernel value at `(i, j)` if `j` is one of row `i`'s neighbours.
    pub fn get(&self, i: usize, j: usize) -> Option<f64> {
        let (idx, val) = self.row(i);
        idx.binary_search(&(j as u32)).ok().map(|p| val[p])
    }
}

/// Checks the CKNNA arguments the way the reference fails on them: topk < 2 is
/// rejected explicitly, topk > m fails in `torch.topk`, and fewer than four
/// samples make the unbiased HSIC divide by m(m − 3) ≤ 0.
pub(crate) fn check_topk(m: usize, topk: usize) -> Result<usize> {
    if topk < 2 {
        return Err(MetricsError::invalid(
            "CKNNA",
            format!("topk must be at least 2, got {topk}"),
        ));
    }
    if m < 4 {
        return Err(MetricsError::invalid(
            "CKNNA",
            format!("needs at least 4 samples for the unbiased HSIC, got {m}"),
        ));
    }
    if topk > m {
        return Err(MetricsError::invalid(
            "CKNNA",
            format!("topk {topk} exceeds the {m} samples of the batch"),
        ));
    }
    if m > u32::MAX as usize {
        return Err(MetricsError::invalid(
            "CKNNA",
            format!("{m} samples exceed the supported 2^32 − 1"),
        ));
    }
    // topk = m selects the excluded diagonal as well, which the HSIC then
    // zeroes; that is the same as topk = m − 1.
    Ok(topk.min(m - 1))
}

/// Larger first, NaN above everything, equal values by ascending index —
/// a strict total order, so the selected set is deterministic.
fn neighbour_order(a: (f64, u32), b: (f64, u32)) -> Ordering {
    match (a.0.is_nan(), b.0.is_nan()) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (true, true) => a.1.cmp(&b.1),
        (false, false) => {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
        }
    }
}

/// Top-`k` of kernel row `i` (values `row`, length m) with column `i`
/// excluded, written sorted by column into `idx_out` / `val_out`.
fn select_row(
    row: &[f64],
    i: usize,
    scratch: &mut Vec<u32>,
    idx_out: &mut [u32],
    val_out: &mut [f64],
) {
    let k = idx_out.len();
    scratch.clear();
    scratch.extend((0..row.len() as u32).filter(|&j| j as usize != i));
    scratch.select_nth_unstable_by(k - 1, |&a, &b| {
        neighbour_order((row[a as usize], a), (row[b as usize], b))
    });
    let top = &mut scratch[..k];
    top.sort_unstable();
    for ((&j, io), vo) in top.iter().zip(idx_out.iter_mut()).zip(val_out.iter_mut()) {
        *io = j;
        *vo = row[j as usize];
    }
}

/// Collects neighbours from kernel rows supplied in any order and blocking.
pub struct NeighboursBuilder {
    inner: KernelNeighbours,
    filled: Vec<bool>,
}

impl NeighboursBuilder {
    /// For an m×m kernel and the CKNNA `topk` (validated as [`super::cknna`] does).
    pub fn new(m: usize, topk: usize) -> Result<Self> {
        let k = check_topk(m, topk)?;
        Ok(Self {
            inner: KernelNeighbours {
                m,
                k,
                idx: vec![0; m * k],
                val: vec![0.0; m * k],
            },
            filled: vec![false; m],
        })
    }

    /// Adds full kernel rows `first_row ..`: `rows` is row-major with m
    /// values per row (so its length must be a multiple of m).
    pub fn push_rows(&mut self, first_row: usize, rows: &[f64]) -> Result<()> {
        let (m, k) = (self.inner.m, self.inner.k);
        if !rows.len().is_multiple_of(m) {
            return Err(MetricsError::invalid(
                "CKNNA kernel rows",
                format!("{} values is not a whole number of rows of {m}", rows.len()),
            ));
        }
        let n = rows.len() / m;
        if first_row.checked_add(n).is_none_or(|end| end > m) {
            return Err(MetricsError::invalid(
                "CKNNA kernel rows",
                format!(
                    "rows {first_row}..{} exceed the {m} rows of the kernel",
                    first_row.saturating_add(n)
                ),
            ));
        }
        let span = first_row * k..(first_row + n) * k;
        let idx = &mut self.inner.idx[span.clone()];
        let val = &mut self.inner.val[span];
        rows.par_chunks(m)
            .zip(idx.par_chunks_mut(k).zip(val.par_chunks_mut(k)))
            .enumerate()
            .for_each_init(Vec::new, |scratch, (r, (row, (io, vo)))| {
                select_row(row, first_row + r, scratch, io, vo)
            });
        self.filled[first_row..first_row + n].fill(true);
        Ok(())
    }

    /// The neighbour lists; fails if some row was never pushed.
    pub fn finish(self) -> Result<KernelNeighbours> {
        if let Some(missing) = self.filled.iter().position(|&f| !f) {
            return Err(MetricsError::invalid(
                "CKNNA kernel rows",
                format!("row {missing} of the kernel was never supplied"),
            ));
        }
        Ok(self.inner)
    }
}

/// Neighbours of the linear kernel `X Xᵀ` computed on the CPU in f64.
///
/// Picks a sparse product when the matrix is mostly zeros (latent codes: the
/// cost is Σ_l c_l² for c_l non-zeros in column l) and a dense blocked GEMM
/// otherwise (cost m²·p). Both give the same neighbour sets up to rounding of
/// near-ties.
pub fn linear_kernel_neighbours(x: MatRef<'_>, topk: usize) -> Result<KernelNeighbours> {
    check_topk(x.rows(), topk)?;
    let m = x.rows() as f64;
    let dense_cost = m * m * x.cols() as f64;
    // A scatter-add costs roughly an order of magnitude more than a GEMM
    // multiply-add, hence the factor.
    let sparse_cost = 16.0
        * column_nonzeros(x)
            .iter()
            .map(|&c| (c as f64).powi(2))
            .sum::<f64>();
    if sparse_cost < dense_cost {
        sparse_neighbours(x, topk)
    } else {
        dense_neighbours(x, topk)
    }
}

fn column_nonzeros(x: MatRef<'_>) -> Vec<usize> {
    let mut counts = vec![0usize; x.cols()];
    for row in x.row_slices() {
        for (c, &v) in counts.iter_mut().zip(row) {
            *c += (v != 0.0) as usize;
        }
    }
    counts
}

/// Kernel rows by blocked dense GEMM, a group of rows at a time so that at
/// most about 128 MiB of kernel values exist at once.
pub(crate) fn dense_neighbours(x: MatRef<'_>, topk: usize) -> Result<KernelNeighbours> {
    let m = x.rows();
    let mut builder = NeighboursBuilder::new(m, topk)?;
    let group = (16 * 1024 * 1024 / m).clamp(64, m.max(64));
    let mut buf = vec![0.0f64; group.min(m) * m];
    let mut start = 0;
    while start < m {
        let n = group.min(m - start);
        let block = &mut buf[..n * m];
        kernel_rows(x, start, block);
        builder.push_rows(start, block)?;
        start += n;
    }
    builder.finish()
}

/// Kernel rows by a sparse product: for row i, every non-zero `x_il` adds
/// `x_il · x_jl` into entry j for each row j that is non-zero in column l.
pub(crate) fn sparse_neighbours(x: MatRef<'_>, topk: usize) -> Result<KernelNeighbours> {
    let (m, p) = (x.rows(), x.cols());
    let k = check_topk(m, topk)?;
    // Column-major lists of non-zeros (row index, value), built by counting.
    let counts = column_nonzeros(x);
    let mut offsets = vec![0usize; p + 1];
    for l in 0..p {
        offsets[l + 1] = offsets[l] + counts[l];
    }
    let mut fill = offsets.clone();
    let mut col_rows = vec![0u32; offsets[p]];
    let mut col_vals = vec![0.0f64; offsets[p]];
    for (j, row) in x.row_slices().enumerate() {
        for (l, &v) in row.iter().enumerate() {
            if v != 0.0 {
                col_rows[fill[l]] = j as u32;
                col_vals[fill[l]] = v as f64;
                fill[l] += 1;
            }
        }
    }
    let mut idx = vec![0u32; m * k];
    let mut val = vec![0.0f64; m * k];
    idx.par_chunks_mut(k)
        .zip(val.par_chunks_mut(k))
        .enumerate()
        .for_each_init(
            || (vec![0.0f64; m], Vec::new()),
            |(acc, scratch), (i, (io, vo))| {
                acc.fill(0.0);
                for (l, &v) in x.row(i).iter().enumerate() {
                    if v != 0.0 {
                        let v = v as f64;
                        let span = offsets[l]..offsets[l + 1];
                        for (&j, &w) in col_rows[span.clone()].iter().zip(&col_vals[span]) {
                            acc[j as usize] += v * w;
                        }
                    }
                }
                select_row(acc, i, scratch, io, vo);
            },
        );
    Ok(KernelNeighbours { m, k, idx, val })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_example_excludes_diagonal() {
        // Kernel rows (m = 4), top-2 without the diagonal:
        // row 0: [9, 5, 1, 5] → columns 1 and 3 (tie 5/5, both kept)
        // row 1: [5, 9, 7, 2] → columns 0 and 2
        // row 2: [1, 7, 9, 7] → columns 1 and 3
        // row 3: [5, 2, 7, 9] → columns 0 and 2
        let kernel = [
            9.0, 5.0, 1.0, 5.0, 5.0, 9.0, 7.0, 2.0, 1.0, 7.0, 9.0, 7.0, 5.0, 2.0, 7.0, 9.0,
        ];
        let mut b = NeighboursBuilder::new(4, 2).unwrap();
        b.push_rows(2, &kernel[8..]).unwrap();
        b.push_rows(0, &kernel[..8]).unwrap();
        let n = b.finish().unwrap();
        assert_eq!(n.row(0), (&[1u32, 3][..], &[5.0, 5.0][..]));
        assert_eq!(n.row(1), (&[0u32, 2][..], &[5.0, 7.0][..]));
        assert_eq!(n.row(2), (&[1u32, 3][..], &[7.0, 7.0][..]));
        assert_eq!(n.row(3), (&[0u32, 2][..], &[5.0, 7.0][..]));
        assert_eq!(n.get(3, 2), Some(7.0));
        assert_eq!(n.get(3, 3), None);
    }

    #[test]
    fn tie_goes_to_lower_index() {
        // Row 0 of [[1, 4, 4, 4], …] with top-2: columns 1 and 2.
        let mut b = NeighboursBuilder::new(4, 2).unwrap();
        b.push_rows(0, &[1.0, 4.0, 4.0, 4.0]).unwrap();
        b.push_rows(1, &[0.0; 12]).unwrap();
        let n = b.finish().unwrap();
        assert_eq!(n.row(0).0, &[1, 2]);
        // Row 1 is all zeros: ties everywhere → columns 0 and 2 (1 is the diagonal).
        assert_eq!(n.row(1).0, &[0, 2]);
    }

    #[test]
    fn builder_errors() {
        assert!(NeighboursBuilder::new(10, 1).is_err());
        assert!(NeighboursBuilder::new(3, 2).is_err());
        assert!(NeighboursBuilder::new(5, 6).is_err());
        assert_eq!(NeighboursBuilder::new(5, 5).unwrap().inner.k, 4);
        let mut b = NeighboursBuilder::new(4, 2).unwrap();
        assert!(b.push_rows(0, &[0.0; 5]).is_err());
        assert!(b.push_rows(3, &[0.0; 8]).is_err());
        b.push_rows(0, &[0.0; 4]).unwrap();
        assert!(b.finish().is_err());
    }

    #[test]
    fn dense_and_sparse_paths_agree() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (m, p) = (70, 300);
        // A ReLU-like code: about 90 % zeros, values on a coarse grid so that
        // the kernel entries are exact in both summation orders.
        let z: Vec<f32> = (0..m * p)
            .map(|_| {
                if rng.random::<f32>() < 0.9 {
                    0.0
                } else {
                    rng.random_range(1..8) as f32 * 0.25
                }
            })
            .collect();
        let zm = MatRef::new(&z, m, p).unwrap();
        let dense = dense_neighbours(zm, 6).unwrap();
        let sparse = sparse_neighbours(zm, 6).unwrap();
        assert_eq!(dense, sparse);
        assert_eq!(linear_kernel_neighbours(zm, 6).unwrap(), dense);
    }
}
