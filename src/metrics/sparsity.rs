//! Sparsity of latent codes: the L0 count, the reference's zero fraction, and
//! the per-row top-k truncation and k schedule used by score_topk (docs/reference.md §7.7, §8.2).

use std::cmp::Ordering;

use rayon::prelude::*;

use super::error::{MetricsError, Result};
use super::matrix::MatRef;

/// Number of active (non-zero) latents per sample, the usual meaning of L0.
/// NaN counts as active; `-0.0` counts as zero.
pub fn l0_count_per_sample(z: MatRef<'_>) -> Vec<u64> {
    (0..z.rows())
        .into_par_iter()
        .map(|i| z.row(i).iter().filter(|&&v| v != 0.0).count() as u64)
        .collect()
}

/// Fraction of exactly-zero latents per sample, `(1/n) Σ_j 1[z_ij = 0]`.
///
/// This is what the reference logs and stores as "L0" (docs/reference.md §7.7): 0.8 means 80 %
/// of the latents are zero. It equals `1 − l0_count / n`. A code with no
/// columns gives NaN (0/0).
pub fn sparsity_fraction_per_sample(z: MatRef<'_>) -> Vec<f64> {
    let n = z.cols() as f64;
    (0..z.rows())
        .into_par_iter()
        .map(|i| z.row(i).iter().filter(|&&v| v == 0.0).count() as f64 / n)
        .collect()
}

/// Ranking used by [`keep_topk_per_row`]: larger values first, NaN above
/// everything (as `torch.topk` treats NaN), equal values by ascending column.
fn topk_order(a: (f32, usize), b: (f32, usize)) -> Ordering {
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

/// Keeps the `k` largest entries of every row of a dense row-major code and
/// sets all others to zero, in place (the `topk_number` path of docs/reference.md §4.2).
///
/// Ties are broken deterministically: among equal values the lower column
/// index is kept (`0.0` and `-0.0` are equal). Values are compared signed, so
/// for a plain TopK activation negative entries can be kept when a row has
/// fewer than `k` positive ones. `k >= cols` leaves the rows unchanged;
/// `k = 0` zeroes everything.
pub fn keep_topk_per_row(z: &mut [f32], rows: usize, cols: usize, k: usize) -> Result<()> {
    MatRef::named("top-k code", z, rows, cols)?;
    if k >= cols || rows == 0 {
        return Ok(());
    }
    if k == 0 {
        z.fill(0.0);
        return Ok(());
    }
    z.par_chunks_mut(cols).for_each_init(
        || {
            (
                Vec::<u32>::with_capacity(cols),
                Vec::<f32>::with_capacity(k),
            )
        },
        |(order, kept), row| {
            order.clear();
            order.extend(0..cols as u32);
            order.select_nth_unstable_by(k - 1, |&a, &b| {
                topk_order((row[a as usize], a as usize), (row[b as usize], b as usize))
            });
            kept.clear();
            kept.extend(order[..k].iter().map(|&j| row[j as usize]));
            row.fill(0.0);
            for (&j, &v) in order[..k].iter().zip(kept.iter()) {
                row[j as usize] = v;
            }
        },
    );
    Ok(())
}

/// The k values score_topk evaluates for `n` latents: 16, 32, 64, … doubling
/// while the value is `<= n`, then `n` itself if it is not already last.
///
/// `topk_list(6144)` = 16, 32, …, 4096, 6144; `topk_list(16384)` = 16, …, 16384.
/// For `n < 16` the list is just `[n]`, and empty for `n = 0`.
pub fn topk_list(n: usize) -> Vec<usize> {
    let mut ks = Vec::new();
    let mut k = 16usize;
    while k <= n {
        ks.push(k);
        match k.checked_mul(2) {
            Some(next) => k = next,
            None => break,
        }
    }
    if n > 0 && ks.last() != Some(&n) {
        ks.push(n);
    }
    ks
}

/// Checks `k` for score_topk-style callers that want an error rather than a
/// silent no-op when `k` exceeds the number of latents.
pub fn check_k(k: usize, n_latents: usize) -> Result<()> {
    if k == 0 || k > n_latents {
        return Err(MetricsError::invalid(
            "top-k",
            format!("k must be between 1 and the number of latents {n_latents}, got {k}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l0_and_zero_fraction() {
        // Row 0: [0, 1.5, -0.0, 2] → 2 active, zero fraction 2/4.
        // Row 1: [3, -1, 4, NaN]  → 4 active (NaN counts), zero fraction 0.
        let z = [0.0, 1.5, -0.0, 2.0, 3.0, -1.0, 4.0, f32::NAN];
        let zm = MatRef::new(&z, 2, 4).unwrap();
        assert_eq!(l0_count_per_sample(zm), vec![2, 4]);
        assert_eq!(sparsity_fraction_per_sample(zm), vec![0.5, 0.0]);
    }

    #[test]
    fn topk_keeps_largest_with_index_ties() {
        // Row 0: top-2 of [1, 5, 3, 5] → both 5s (columns 1 and 3).
        // Row 1: top-2 of [2, 7, 2, 2] → 7, then the first 2 (column 0).
        // Row 2: top-2 of [-3, -1, -2, -5] → -1 and -2 (signed comparison).
        let mut z = [
            1.0, 5.0, 3.0, 5.0, 2.0, 7.0, 2.0, 2.0, -3.0, -1.0, -2.0, -5.0,
        ];
        keep_topk_per_row(&mut z, 3, 4, 2).unwrap();
        assert_eq!(
            z,
            [0.0, 5.0, 0.0, 5.0, 2.0, 7.0, 0.0, 0.0, 0.0, -1.0, -2.0, 0.0]
        );
    }

    #[test]
    fn topk_edge_cases() {
        let orig = [1.0f32, 2.0, 3.0];
        let mut z = orig;
        keep_topk_per_row(&mut z, 1, 3, 3).unwrap();
        assert_eq!(z, orig);
        keep_topk_per_row(&mut z, 1, 3, 0).unwrap();
        assert_eq!(z, [0.0; 3]);
        let mut nan = [1.0f32, f32::NAN, 3.0];
        keep_topk_per_row(&mut nan, 1, 3, 1).unwrap();
        assert!(nan[1].is_nan() && nan[0] == 0.0 && nan[2] == 0.0);
        assert!(keep_topk_per_row(&mut z, 2, 3, 1).is_err());
        assert!(check_k(0, 8).is_err() && check_k(9, 8).is_err() && check_k(8, 8).is_ok());
    }

    #[test]
    fn topk_matches_sorting_on_random_rows() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (rows, cols, k) = (17, 50, 7);
        // Values drawn from a small set to force many ties.
        let z: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-3..6) as f32)
            .collect();
        let mut got = z.clone();
        keep_topk_per_row(&mut got, rows, cols, k).unwrap();
        for i in 0..rows {
            let row = &z[i * cols..(i + 1) * cols];
            let mut idx: Vec<usize> = (0..cols).collect();
            idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
            let mut expect = vec![0.0f32; cols];
            for &j in &idx[..k] {
                expect[j] = row[j];
            }
            assert_eq!(&got[i * cols..(i + 1) * cols], &expect[..]);
        }
    }

    #[test]
    fn k_schedule() {
        let mut expect: Vec<usize> = (4..=12).map(|p| 1 << p).collect();
        expect.push(6144);
        assert_eq!(topk_list(6144), expect);
        let expect: Vec<usize> = (4..=14).map(|p| 1 << p).collect();
        assert_eq!(topk_list(16384), expect);
        assert_eq!(*topk_list(24576).last().unwrap(), 24576);
        assert_eq!(topk_list(24576)[topk_list(24576).len() - 2], 16384);
        assert_eq!(topk_list(12288).len(), 11); // 16 … 8192 (10 values) + 12288
        assert_eq!(topk_list(10), vec![10]);
        assert!(topk_list(0).is_empty());
    }
}
