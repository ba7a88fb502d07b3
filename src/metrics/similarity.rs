//! Similarity of directions: rows scaled to unit length and the matrix of dot products of two
//! sets of rows (their cosines once both are unit rows), as dictionary recovery and alignment
//! compare decoder directions. Products are float32 (one `sgemm`), as the steps that use them
//! store float32 cosines.

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

#[cfg(test)]
mod tests {
    use super::*;

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
