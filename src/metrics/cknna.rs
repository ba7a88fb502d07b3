//! Centered Kernel Nearest-Neighbour Alignment (docs/reference.md §7.9), unbiased
//! variant with linear kernels, as called by training (`cknna(X̂, X)`) and by
//! extract / score_topk (`cknna(X, Z)`, topk 10).
//!
//! With masks `M_K` (row i's top-k columns of `K = A Aᵀ`, diagonal excluded)
//! and `M_L` likewise for `L = B Bᵀ`:
//!
//! ```text
//! sim(K, L) = HSIC_u(M ⊙ K, M ⊙ L),   M = M_K ⊙ M_L   (not symmetric)
//! sim(K, K) uses M_K alone, sim(L, L) uses M_L alone
//! CKNNA     = sim(K, L) / (sqrt(sim(K, K) · sim(L, L)) + 1e-6)
//! ```
//!
//! and for `K̃, L̃` with zero diagonals (Song et al. 2012, eq. 5)
//!
//! ```text
//! HSIC_u = [ Σ_ij K̃_ij L̃_ji + (ΣK̃)(ΣL̃)/((m−1)(m−2)) − 2·1ᵀK̃L̃1/(m−2) ] / (m(m−3))
//! ```
//!
//! Every term only touches masked entries, so it is evaluated from the
//! neighbour lists in O(m·k log k) instead of with m×m matrices. The `+1e-6`
//! means CKNNA(A, A) is slightly below 1 and not exactly scale invariant.

use rayon::prelude::*;

use super::error::{MetricsError, Result};
use super::matrix::MatRef;
use super::neighbours::{linear_kernel_neighbours, KernelNeighbours};

/// The topk used by extract and score_topk.
pub const CKNNA_TOPK: usize = 10;

/// Mutual-neighbour entries per row: (column j, K_ij, L_ij) for j in both
/// row i's K- and L-neighbour lists, sorted by j.
struct Mask {
    offsets: Vec<usize>,
    cols: Vec<u32>,
    k_vals: Vec<f64>,
    l_vals: Vec<f64>,
}

impl Mask {
    fn intersect(kn: &KernelNeighbours, ln: &KernelNeighbours) -> Self {
        let rows: Vec<Vec<(u32, f64, f64)>> = (0..kn.rows())
            .into_par_iter()
            .map(|i| {
                let (ki, kv) = kn.row(i);
                let (li, lv) = ln.row(i);
                let (mut a, mut b) = (0, 0);
                let mut out = Vec::new();
                // Both lists are sorted by column: merge them.
                while a < ki.len() && b < li.len() {
                    match ki[a].cmp(&li[b]) {
                        std::cmp::Ordering::Less => a += 1,
                        std::cmp::Ordering::Greater => b += 1,
                        std::cmp::Ordering::Equal => {
                            out.push((ki[a], kv[a], lv[b]));
                            a += 1;
                            b += 1;
                        }
                    }
                }
                out
            })
            .collect();
        let mut mask = Mask {
            offsets: Vec::with_capacity(rows.len() + 1),
            cols: Vec::new(),
            k_vals: Vec::new(),
            l_vals: Vec::new(),
        };
        mask.offsets.push(0);
        for row in rows {
            for (j, k, l) in row {
                mask.cols.push(j);
                mask.k_vals.push(k);
                mask.l_vals.push(l);
            }
            mask.offsets.push(mask.cols.len());
        }
        mask
    }

    fn span(&self, i: usize) -> std::ops::Range<usize> {
        self.offsets[i]..self.offsets[i + 1]
    }

    /// Unbiased HSIC of the masked kernels (the diagonal is never in the mask).
    fn hsic_unbiased(&self) -> f64 {
        let m = self.offsets.len() - 1;
        let mf = m as f64;
        let sum_k: f64 = self.k_vals.iter().sum();
        let sum_l: f64 = self.l_vals.iter().sum();
        // Σ_ij K̃_ij L̃_ji: L̃_ji is non-zero only if (j, i) is in the mask too.
        let trace_term: f64 = (0..m)
            .into_par_iter()
            .map(|i| {
                self.span(i)
                    .map(|e| {
                        let j = self.cols[e] as usize;
                        let back = self.span(j);
                        match self.cols[back.clone()].binary_search(&(i as u32)) {
                            Ok(p) => self.k_vals[e] * self.l_vals[back.start + p],
                            Err(_) => 0.0,
                        }
                    })
                    .sum::<f64>()
            })
            .sum();
        // 1ᵀ K̃ L̃ 1 = Σ_j (column sum j of K̃) · (row sum j of L̃).
        let mut col_sum_k = vec![0.0f64; m];
        for (&j, &k) in self.cols.iter().zip(&self.k_vals) {
            col_sum_k[j as usize] += k;
        }
        let cross: f64 = (0..m)
            .map(|j| col_sum_k[j] * self.l_vals[self.span(j)].iter().sum::<f64>())
            .sum();
        (trace_term + sum_k * sum_l / ((mf - 1.0) * (mf - 2.0)) - 2.0 * cross / (mf - 2.0))
            / (mf * (mf - 3.0))
    }
}

/// `sim(K, L)` of the reference: HSIC_u over the mutual top-k mask.
fn similarity(kn: &KernelNeighbours, ln: &KernelNeighbours) -> f64 {
    Mask::intersect(kn, ln).hsic_unbiased()
}

/// CKNNA from precomputed neighbour lists of the two kernels (for kernels
/// produced elsewhere, see [`super::NeighboursBuilder`]). Both lists must
/// describe the same samples with the same topk.
pub fn cknna_from_neighbours(kn: &KernelNeighbours, ln: &KernelNeighbours) -> Result<f64> {
    if kn.rows() != ln.rows() || kn.k() != ln.k() {
        return Err(MetricsError::invalid(
            "CKNNA",
            format!(
                "neighbour lists differ: {} rows with k = {} versus {} rows with k = {}",
                kn.rows(),
                kn.k(),
                ln.rows(),
                ln.k()
            ),
        ));
    }
    let sim_kl = similarity(kn, ln);
    let sim_kk = similarity(kn, kn);
    let sim_ll = similarity(ln, ln);
    Ok(sim_kl / ((sim_kk * sim_ll).sqrt() + 1e-6))
}

/// CKNNA of two representations of the same `m` samples (`a` is m×p, `b` is
/// m×q, any widths), with linear kernels and the reference's `topk` check
/// (`topk >= 2`; also `topk <= m` and `m >= 4`, where the reference fails
/// inside PyTorch or divides by zero).
pub fn cknna(a: MatRef<'_>, b: MatRef<'_>, topk: usize) -> Result<f64> {
    if a.rows() != b.rows() {
        return Err(MetricsError::ShapeMismatch {
            what: "CKNNA",
            left: "first representation",
            left_rows: a.rows(),
            left_cols: a.cols(),
            right: "second representation",
            right_rows: b.rows(),
            right_cols: b.cols(),
        });
    }
    let kn = linear_kernel_neighbours(a, topk)?;
    let ln = linear_kernel_neighbours(b, topk)?;
    cknna_from_neighbours(&kn, &ln)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Literal float64 transcription of the reference: dense kernels, −∞
    /// diagonal, top-k by full sort (ties to the lower index), dense 0/1 masks,
    /// dense unbiased HSIC with an explicit m×m product.
    fn reference_cknna(a: &[f64], p: usize, b: &[f64], q: usize, m: usize, topk: usize) -> f64 {
        let kernel = |x: &[f64], w: usize| -> Vec<f64> {
            let mut k = vec![0.0; m * m];
            for i in 0..m {
                for j in 0..m {
                    k[i * m + j] = (0..w).map(|t| x[i * w + t] * x[j * w + t]).sum();
                }
            }
            k
        };
        let mask_of = |k: &[f64]| -> Vec<f64> {
            let mut mask = vec![0.0; m * m];
            for i in 0..m {
                let mut row: Vec<(f64, usize)> = (0..m)
                    .map(|j| {
                        (
                            if i == j {
                                f64::NEG_INFINITY
                            } else {
                                k[i * m + j]
                            },
                            j,
                        )
                    })
                    .collect();
                row.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap().then(x.1.cmp(&y.1)));
                for &(_, j) in &row[..topk] {
                    mask[i * m + j] = 1.0;
                }
            }
            mask
        };
        let hsic = |k: &[f64], l: &[f64]| -> f64 {
            let mut kt = k.to_vec();
            let mut lt = l.to_vec();
            for i in 0..m {
                kt[i * m + i] = 0.0;
                lt[i * m + i] = 0.0;
            }
            let mf = m as f64;
            let mut t1 = 0.0;
            for i in 0..m {
                for j in 0..m {
                    t1 += kt[i * m + j] * lt[j * m + i];
                }
            }
            let sk: f64 = kt.iter().sum();
            let sl: f64 = lt.iter().sum();
            let mut kl_sum = 0.0;
            for i in 0..m {
                for j in 0..m {
                    kl_sum += (0..m).map(|t| kt[i * m + t] * lt[t * m + j]).sum::<f64>();
                }
            }
            (t1 + sk * sl / ((mf - 1.0) * (mf - 2.0)) - 2.0 * kl_sum / (mf - 2.0))
                / (mf * (mf - 3.0))
        };
        let k = kernel(a, p);
        let l = kernel(b, q);
        let (mk, ml) = (mask_of(&k), mask_of(&l));
        let masked = |x: &[f64], mask: &[f64]| -> Vec<f64> {
            x.iter().zip(mask).map(|(v, w)| v * w).collect()
        };
        let mkl: Vec<f64> = mk.iter().zip(&ml).map(|(x, y)| x * y).collect();
        let sim_kl = hsic(&masked(&k, &mkl), &masked(&l, &mkl));
        let sim_kk = hsic(&masked(&k, &mk), &masked(&k, &mk));
        let sim_ll = hsic(&masked(&l, &ml), &masked(&l, &ml));
        sim_kl / ((sim_kk * sim_ll).sqrt() + 1e-6)
    }

    fn random(rng: &mut rand_chacha::ChaCha8Rng, n: usize, zero_prob: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                if rng.random::<f32>() < zero_prob {
                    0.0
                } else {
                    rng.random_range(-1.0f32..1.0)
                }
            })
            .collect()
    }

    fn widen(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| v as f64).collect()
    }

    #[test]
    fn matches_reference_on_dense_data() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let (m, p, q) = (40, 7, 12);
        // A noisy copy of a relation: B's first 7 columns follow A.
        let a = random(&mut rng, m * p, 0.0);
        let mut b = random(&mut rng, m * q, 0.0);
        for i in 0..m {
            for t in 0..p {
                b[i * q + t] += 2.0 * a[i * p + t];
            }
        }
        for topk in [2, 5, 10, 39, 40] {
            let got = cknna(
                MatRef::new(&a, m, p).unwrap(),
                MatRef::new(&b, m, q).unwrap(),
                topk,
            )
            .unwrap();
            let expect = reference_cknna(&widen(&a), p, &widen(&b), q, m, topk.min(m - 1));
            assert!(
                (got - expect).abs() < 1e-10,
                "topk {topk}: {got} vs {expect}"
            );
        }
    }

    #[test]
    fn matches_reference_on_sparse_codes() {
        // X dense, Z a mostly-zero code (takes the sparse kernel path, and has
        // many tied zero kernel entries that exercise the tie rule).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (m, p, n) = (50, 6, 400);
        let x = random(&mut rng, m * p, 0.0);
        let z: Vec<f32> = random(&mut rng, m * n, 0.97)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let got = cknna(
            MatRef::new(&x, m, p).unwrap(),
            MatRef::new(&z, m, n).unwrap(),
            10,
        )
        .unwrap();
        let expect = reference_cknna(&widen(&x), p, &widen(&z), n, m, 10);
        assert!((got - expect).abs() < 1e-10, "{got} vs {expect}");
    }

    #[test]
    fn self_similarity_and_scale() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (m, p, q) = (60, 16, 24);
        // Scaled up so that sim(K, K) ≫ 1e-6 and the +1e-6 is negligible.
        let a: Vec<f32> = random(&mut rng, m * p, 0.0)
            .iter()
            .map(|v| 10.0 * v)
            .collect();
        let b: Vec<f32> = random(&mut rng, m * q, 0.0)
            .iter()
            .map(|v| 10.0 * v)
            .collect();
        let am = MatRef::new(&a, m, p).unwrap();
        let bm = MatRef::new(&b, m, q).unwrap();
        let self_sim = cknna(am, am, 10).unwrap();
        assert!((self_sim - 1.0).abs() < 1e-6, "{self_sim}");

        let base = cknna(am, bm, 10).unwrap();
        for s in [4.0f32, 3.0] {
            let scaled: Vec<f32> = a.iter().map(|v| v * s).collect();
            let got = cknna(MatRef::new(&scaled, m, p).unwrap(), bm, 10).unwrap();
            assert!((got - base).abs() < 1e-6, "scale {s}: {got} vs {base}");
        }
        // Not symmetric in general: the masked kernels are not symmetric
        // matrices, so 1ᵀK̃L̃1 ≠ 1ᵀL̃K̃1. Swapping only moves that term.
        assert!(cknna(bm, am, 10).unwrap().is_finite());
    }

    #[test]
    fn argument_errors() {
        let x = [0.0f32; 20];
        let xm = MatRef::new(&x, 10, 2).unwrap();
        assert!(cknna(xm, xm, 1).is_err());
        assert!(cknna(xm, xm, 11).is_err());
        let y = MatRef::new(&x, 5, 4).unwrap();
        assert!(cknna(xm, y, 2).is_err());
        let tiny = MatRef::new(&x[..6], 3, 2).unwrap();
        assert!(cknna(tiny, tiny, 2).is_err());
    }
}
