//! Decoder orthogonality (docs/reference.md §7.6).

use super::error::Result;
use super::gemm::gram_of_columns;
use super::matrix::MatRef;

/// `mean over all n² entries of ((W Wᵀ) ⊙ (1 − I))²` for a decoder `W` of
/// shape `[n, d]`: the mean squared inner product between distinct decoder
/// rows, with the n diagonal entries counted as zeros in the n² denominator.
/// Lower means closer to orthogonal.
///
/// The n×n Gram matrix is never formed: `Σ_{i≠j} (w_i·w_j)² = ‖Wᵀ W‖_F² −
/// Σ_i ‖w_i‖⁴`, and `Wᵀ W` is only d×d (d ≪ n for SAEs), computed in f64.
pub fn decoder_orthogonality(w_dec: MatRef<'_>) -> Result<f64> {
    let n = w_dec.rows();
    if n == 0 {
        return Ok(f64::NAN);
    }
    let gram = gram_of_columns(w_dec);
    let frob: f64 = gram.iter().map(|g| g * g).sum();
    let diag: f64 = w_dec
        .row_slices()
        .map(|row| row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().powi(2))
        .sum();
    let n = n as f64;
    Ok(((frob - diag) / (n * n)).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_example() {
        // Rows (1,0), (0,1), (1,1): off-diagonal products 0, 1, 1 (each twice),
        // squares sum to 4 over n² = 9 entries → 4/9.
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let v = decoder_orthogonality(MatRef::new(&w, 3, 2).unwrap()).unwrap();
        assert!((v - 4.0 / 9.0).abs() < 1e-15);
    }

    #[test]
    fn matches_direct_gram_on_random_decoder() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (n, d) = (37, 9);
        let w: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut direct = 0.0f64;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let dot: f64 = (0..d)
                        .map(|k| w[i * d + k] as f64 * w[j * d + k] as f64)
                        .sum();
                    direct += dot * dot;
                }
            }
        }
        direct /= (n * n) as f64;
        let v = decoder_orthogonality(MatRef::new(&w, n, d).unwrap()).unwrap();
        assert!(
            (v - direct).abs() < 1e-12 * direct.max(1.0),
            "{v} vs {direct}"
        );
    }
}
