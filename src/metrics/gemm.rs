//! Small safe wrappers around `matrixmultiply::dgemm` for the two products the
//! metrics need: a d×d Gram matrix of columns (decoder orthogonality) and
//! blocks of rows of a linear kernel `X Xᵀ` (CKNNA).
//!
//! Inputs are f32; they are widened to f64 one block at a time so that the
//! products accumulate in f64 without ever holding an f64 copy of a large
//! matrix.

use rayon::prelude::*;

use super::matrix::MatRef;

/// `C (m×n, row-major) = beta·C + A (m×k, row-major) · B`, where entry
/// `(p, j)` of B is `b[p * rsb + j * csb]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn dgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f64],
    b: &[f64],
    rsb: usize,
    csb: usize,
    beta: f64,
    c: &mut [f64],
) {
    if m == 0 || n == 0 {
        return;
    }
    // These bounds make every index dgemm reads or writes valid.
    assert!(a.len() >= m * k && c.len() >= m * n);
    if k > 0 {
        assert!(b.len() > (k - 1) * rsb + (n - 1) * csb);
    }
    // SAFETY: the asserts above guarantee that all elements addressed through
    // the given shapes and strides lie inside `a`, `b` and `c`; `c` is borrowed
    // mutably, so it does not alias `a` or `b`.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Rows per block when widening to f64 (bounds temporary memory).
const ROW_BLOCK: usize = 2048;

/// `Wᵀ W` (d×d, row-major f64) for `W` of shape `[n, d]`. Row blocks are
/// multiplied in parallel and their partial Gram matrices summed.
pub(crate) fn gram_of_columns(w: MatRef<'_>) -> Vec<f64> {
    let d = w.cols();
    if d == 0 {
        return Vec::new();
    }
    w.data()
        .par_chunks(ROW_BLOCK * d)
        .map(|block| {
            let rows = block.len() / d;
            let block64: Vec<f64> = block.iter().map(|&v| v as f64).collect();
            // Aᵀ: entry (i, p) of Wᵀ is block[p * d + i]; build it explicitly so
            // the A operand is row-major as `dgemm` expects.
            let mut at = vec![0.0f64; d * rows];
            for p in 0..rows {
                for i in 0..d {
                    at[i * rows + p] = block64[p * d + i];
                }
            }
            let mut gram = vec![0.0f64; d * d];
            dgemm(d, rows, d, &at, &block64, d, 1, 0.0, &mut gram);
            gram
        })
        .reduce(
            || vec![0.0f64; d * d],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// Columns per block of the inner dimension when widening to f64.
const INNER_BLOCK: usize = 256;
/// Rows of the output handed to one `dgemm` call (one unit of parallel work).
const TASK_ROWS: usize = 64;

/// Rows `start..start + out.len() / m` of the linear kernel `X Xᵀ`, written
/// row-major into `out` (each row has `m = x.rows()` entries), in f64.
///
/// The inner dimension is processed in blocks of [`INNER_BLOCK`] columns: each
/// block of all m rows is widened once and shared by the parallel tasks.
pub(crate) fn kernel_rows(x: MatRef<'_>, start: usize, out: &mut [f64]) {
    let m = x.rows();
    let p = x.cols();
    if m == 0 {
        return;
    }
    let rows = out.len() / m;
    out.fill(0.0);
    let mut c0 = 0;
    while c0 < p {
        let c1 = (c0 + INNER_BLOCK).min(p);
        let pb = c1 - c0;
        // All m rows, columns c0..c1, widened: entry (j, q) at j * pb + q.
        let all: Vec<f64> = (0..m)
            .flat_map(|j| x.row(j)[c0..c1].iter().map(|&v| v as f64))
            .collect();
        out.par_chunks_mut(TASK_ROWS * m)
            .enumerate()
            .for_each(|(t, out_block)| {
                let r0 = start + t * TASK_ROWS;
                let nr = out_block.len() / m;
                let a = &all[r0 * pb..(r0 + nr) * pb];
                // B = (block of X)ᵀ: entry (q, j) is all[j * pb + q].
                dgemm(nr, pb, m, a, &all, 1, pb, 1.0, out_block);
            });
        c0 = c1;
    }
    debug_assert!(rows == 0 || start + rows <= m);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_rows_match_direct_products() {
        // X = [[1, 2], [3, 4], [5, 6]]; X Xᵀ rows 1..3 = [[11, 25, 39], [17, 39, 61]].
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let xm = MatRef::new(&x, 3, 2).unwrap();
        let mut out = vec![f64::NAN; 6];
        kernel_rows(xm, 1, &mut out);
        assert_eq!(out, vec![11.0, 25.0, 39.0, 17.0, 39.0, 61.0]);
    }

    #[test]
    fn gram_hand_example() {
        // W = [[1, 2], [3, 4]]: WᵀW = [[10, 14], [14, 20]].
        let w = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(
            gram_of_columns(MatRef::new(&w, 2, 2).unwrap()),
            vec![10.0, 14.0, 14.0, 20.0]
        );
    }
}
