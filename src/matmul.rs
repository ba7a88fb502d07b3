//! Dense f32 matrix products written into memory the caller owns.
//!
//! One routine for every dense product the host kernels make (the SAE training step, the CPU
//! text and image encoders, the training benchmark's floor): `gemm` on all threads of the
//! calling rayon pool, the routine candle's CPU matmul also calls, with each operand read
//! through its own row and column strides, so that a transposed operand needs no copy, and the
//! result written into a buffer the caller keeps (a pooled buffer spares the page faults of a
//! fresh one).

/// `dst` (m × n, row-major) = lhs · rhs, where element (i, t) of lhs lies at
/// i·lhs_rs + t·lhs_cs and element (t, j) of rhs at t·rhs_rs + j·rhs_cs.
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    dst: &mut [f32],
) {
    product(m, n, k, lhs, lhs_strides, rhs, rhs_strides, dst, false)
}

/// `dst += lhs · rhs`, strides as in [`matmul_into`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_add_into(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    dst: &mut [f32],
) {
    product(m, n, k, lhs, lhs_strides, rhs, rhs_strides, dst, true)
}

/// The product, added onto `dst` (`accumulate`) or replacing it.
#[allow(clippy::too_many_arguments)]
fn product(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    dst: &mut [f32],
    accumulate: bool,
) {
    assert_eq!(dst.len(), m * n, "result shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    assert!(
        (m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len(),
        "left operand shape"
    );
    assert!(
        (k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len(),
        "right operand shape"
    );
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // gemm computes dst = α·dst + β·lhs·rhs, reading dst only when asked to.
    let alpha = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the assertions keep every element the strides address inside the slices, and
    // dst (m × n, row-major) is an exclusive borrow, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            alpha,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lhs · rhs in f64 from row-major matrices.
    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|t| a[i * k + t] as f64 * b[t * n + j] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_operands_replace_or_add_onto_the_result() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
        let want = reference(m, n, k, &a, &b);
        let close = |got: &[f32], offset: f64| {
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - (w + offset)).abs() < 1e-4,
                    "{g} vs {}",
                    w + offset
                );
            }
        };
        // Row-major operands; the old contents of the result are overwritten.
        let mut dst = vec![f32::NAN; m * n];
        matmul_into(m, n, k, &a, (k, 1), &b, (n, 1), &mut dst);
        close(&dst, 0.0);
        // The same operands stored transposed, read through their strides.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut dst = vec![2.0; m * n];
        matmul_add_into(m, n, k, &at, (1, m), &bt, (1, k), &mut dst);
        close(&dst, 2.0);
        // An empty inner dimension: zero, or the result unchanged.
        let mut dst = vec![f32::NAN; m * n];
        matmul_into(m, n, 0, &[], (0, 1), &[], (n, 1), &mut dst);
        assert!(dst.iter().all(|&v| v == 0.0));
        let mut dst = vec![4.0; m * n];
        matmul_add_into(m, n, 0, &[], (0, 1), &[], (n, 1), &mut dst);
        assert!(dst.iter().all(|&v| v == 4.0));
    }
}
