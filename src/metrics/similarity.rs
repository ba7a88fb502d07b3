//! Similarity of directions: rows scaled to unit length and the matrix of dot products of two
//! sets of rows (their cosines once both are unit rows), as naming and alignment compare decoder
//! directions. Those products are float32 (one `sgemm`), as the steps that use them store float32
//! cosines; [`cosines_f64`] is the float64 matrix that ground-truth metrics compare against
//! SciPy with.

use rayon::prelude::*;

/// Rows scaled to unit L2 norm (the norm floored at 1e-12, so a zero row stays zero).
pub fn normalized_rows(data: &[f32], cols: usize) -> Vec<f32> {
    let mut out = data.to_vec();
    for row in out.chunks_mut(cols) {
        let norm = row
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12) as f32;
        row.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

/// Dot products of every row of `a` with every row of `b` (both row-major of width `d`), as an
/// [a_rows, b_rows] matrix in f32: cosines when both are row-normalised ([`normalized_rows`]).
pub fn row_dot_products(a: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    let (ra, rb) = (a.len() / d, b.len() / d);
    let mut c = vec![0f32; ra * rb];
    // SAFETY: the slices hold ra×d, rb×d and ra×rb values with the strides given.
    unsafe {
        matrixmultiply::sgemm(
            ra,
            d,
            rb,
            1.0,
            a.as_ptr(),
            d as isize,
            1,
            b.as_ptr(),
            1,
            d as isize,
            0.0,
            c.as_mut_ptr(),
            rb as isize,
            1,
        );
    }
    c
}

/// Rows of `data` (width `cols`) widened to f64 and divided by `max(‖row‖, floor)`.
fn unit_rows_f64(data: &[f32], cols: usize, floor: f64) -> Vec<f64> {
    let mut out: Vec<f64> = data.iter().map(|&v| v as f64).collect();
    for row in out.chunks_mut(cols) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(floor);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

/// Rows of `a` per parallel product in [`cosines_f64`].
const COSINE_BLOCK_ROWS: usize = 256;

/// The cosine of every row of `a` with every row of `b` (both row-major of width `d`), as an
/// `[a_rows, b_rows]` float64 matrix: each row divided by `max(‖row‖, 1e-8)` (so a zero row has
/// cosine 0 with everything), then the products, accumulated in f64 in parallel row blocks.
pub fn cosines_f64(a: &[f32], b: &[f32], d: usize) -> Vec<f64> {
    if d == 0 {
        return Vec::new();
    }
    let (ua, ub) = (unit_rows_f64(a, d, 1e-8), unit_rows_f64(b, d, 1e-8));
    let nb = ub.len() / d;
    let mut c = vec![0f64; (ua.len() / d) * nb];
    if nb == 0 {
        return c;
    }
    c.par_chunks_mut(COSINE_BLOCK_ROWS * nb)
        .zip(ua.par_chunks(COSINE_BLOCK_ROWS * d))
        .for_each(|(out, rows)| {
            // B = ubᵀ: entry (p, j) is ub[j * d + p].
            super::gemm::dgemm(rows.len() / d, d, nb, rows, &ub, 1, d, 0.0, out);
        });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_cosines_by_hand() {
        // a = [[3, 4], [0, 0]], b = [[1, 0], [-1, 1], [0, 2]]: cosines 3/5, 1/(5√2), 4/5; the
        // zero row has cosine 0 with everything.
        let c = cosines_f64(&[3.0, 4.0, 0.0, 0.0], &[1.0, 0.0, -1.0, 1.0, 0.0, 2.0], 2);
        let want = [0.6, 1.0 / (5.0 * 2f64.sqrt()), 0.8, 0.0, 0.0, 0.0];
        for (g, w) in c.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{c:?}");
        }
        // Several parallel blocks give the same numbers as one pass of the definition.
        let a: Vec<f32> = (0..600 * 3)
            .map(|i| ((i * 37 % 101) as f32) - 50.0)
            .collect();
        let b: Vec<f32> = (0..5 * 3).map(|i| ((i * 13 % 7) as f32) - 3.0).collect();
        let c = cosines_f64(&a, &b, 3);
        for (i, ra) in a.chunks(3).enumerate() {
            for (j, rb) in b.chunks(3).enumerate() {
                let dot: f64 = ra.iter().zip(rb).map(|(x, y)| *x as f64 * *y as f64).sum();
                let na = ra
                    .iter()
                    .map(|x| (*x as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-8);
                let nb = rb
                    .iter()
                    .map(|x| (*x as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-8);
                assert!((c[i * 5 + j] - dot / (na * nb)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn rows_are_scaled_to_unit_length_and_zero_rows_stay_zero() {
        let r = normalized_rows(&[3.0, 4.0, 0.0, 0.0, -2.0, 0.0], 2);
        assert_eq!(r, vec![0.6, 0.8, 0.0, 0.0, -1.0, 0.0]);
    }

    #[test]
    fn products_are_raw_dot_products_not_cosines() {
        // a = [[1, 2], [0, 3]], b = [[4, 5], [1, 0], [2, 2]]: every a_i · b_j by hand.
        let c = row_dot_products(&[1.0, 2.0, 0.0, 3.0], &[4.0, 5.0, 1.0, 0.0, 2.0, 2.0], 2);
        assert_eq!(c, vec![14.0, 1.0, 6.0, 15.0, 0.0, 6.0]);
        // On unit rows they are the cosines: 45° apart → 1/√2.
        let u = normalized_rows(&[1.0, 0.0, 1.0, 1.0], 2);
        let c = row_dot_products(&u[..2], &u[2..], 2);
        assert!(
            (c[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7,
            "{c:?}"
        );
    }
}
