use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|_| rng.random_range(-10.0f32..10.0))
        .collect()
}

fn integer_matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize, hi: u32) -> Vec<f32> {
    (0..rows * cols)
        .map(|_| rng.random_range(0..hi) as f32)
        .collect()
}

/// Best total over all injections of the smaller side into the larger one.
fn brute_force(c: &[f32], rows: usize, cols: usize, objective: Objective) -> f64 {
    /// Minimum over injections of rows `k..` of the `small × large` matrix
    /// `a` into the unused columns.
    fn rec(a: &[f64], k: usize, small: usize, used: &mut [bool], acc: f64, best: &mut f64) {
        if k == small {
            *best = best.min(acc);
            return;
        }
        let large = used.len();
        for l in 0..large {
            if !used[l] {
                used[l] = true;
                rec(a, k + 1, small, used, acc + a[k * large + l], best);
                used[l] = false;
            }
        }
    }
    let sign = match objective {
        Objective::Minimize => 1.0,
        Objective::Maximize => -1.0,
    };
    let (small, large) = (rows.min(cols), rows.max(cols));
    let mut a = vec![0.0; small * large];
    for r in 0..rows {
        for k in 0..cols {
            let x = sign * nan_to_zero(c[r * cols + k]);
            if rows <= cols {
                a[r * large + k] = x;
            } else {
                a[k * large + r] = x;
            }
        }
    }
    if small == 0 {
        return 0.0;
    }
    let mut best = f64::INFINITY;
    rec(&a, 0, small, &mut vec![false; large], 0.0, &mut best);
    sign * best
}

/// Checks that `a` is a consistent matching of the right size whose total
/// is the sum of its entries.
fn check_valid(a: &Assignment, c: &[f32], rows: usize, cols: usize) {
    assert_eq!(a.row_to_col.len(), rows);
    assert_eq!(a.col_to_row.len(), cols);
    assert_eq!(a.len(), rows.min(cols));
    let mut seen = vec![false; cols];
    for (r, col) in a.row_to_col.iter().enumerate() {
        if let Some(col) = *col {
            assert!(col < cols);
            assert!(!seen[col], "column {col} used twice");
            seen[col] = true;
            assert_eq!(a.col_to_row[col], Some(r));
        }
    }
    for (col, row) in a.col_to_row.iter().enumerate() {
        if let Some(row) = *row {
            assert_eq!(a.row_to_col[row], Some(col));
        }
    }
    let sum: f64 = a
        .pairs()
        .iter()
        .map(|&(r, k)| nan_to_zero(c[r * cols + k]))
        .sum();
    assert!((sum - a.total).abs() <= 1e-9 * (1.0 + sum.abs()));
}

fn assert_close(got: f64, want: f64, what: &str) {
    let tol = 1e-9 * (1.0 + want.abs());
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, expected {want}"
    );
}

fn check_against_brute_force(c: &[f32], rows: usize, cols: usize, what: &str) {
    for objective in [Objective::Minimize, Objective::Maximize] {
        let a = solve(c, rows, cols, objective).unwrap();
        check_valid(&a, c, rows, cols);
        let want = brute_force(c, rows, cols, objective);
        assert_close(
            a.total,
            want,
            &format!("{what} {rows}x{cols} {objective:?}"),
        );
    }
}

#[test]
fn brute_force_random_square() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for n in 1..=7 {
        for _ in 0..if n <= 5 { 40 } else { 8 } {
            let c = random_matrix(&mut rng, n, n);
            check_against_brute_force(&c, n, n, "random");
        }
    }
}

#[test]
fn brute_force_random_rectangular_both_orientations() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for rows in 1..=7 {
        for cols in 1..=7 {
            if rows == cols {
                continue;
            }
            let reps = if rows.max(cols) <= 5 { 20 } else { 4 };
            for _ in 0..reps {
                let c = random_matrix(&mut rng, rows, cols);
                check_against_brute_force(&c, rows, cols, "random");
            }
        }
    }
}

#[test]
fn brute_force_many_ties() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for rows in 1..=7 {
        for cols in 1..=7 {
            let reps = if rows.max(cols) <= 5 { 20 } else { 3 };
            for _ in 0..reps {
                let c = integer_matrix(&mut rng, rows, cols, 4);
                check_against_brute_force(&c, rows, cols, "ties");
            }
        }
    }
}

#[test]
fn all_equal_costs() {
    for (rows, cols) in [(1, 1), (4, 4), (3, 6), (6, 3), (50, 50)] {
        let c = vec![1.5f32; rows * cols];
        for objective in [Objective::Minimize, Objective::Maximize] {
            let a = solve(&c, rows, cols, objective).unwrap();
            check_valid(&a, &c, rows, cols);
            assert_close(a.total, 1.5 * rows.min(cols) as f64, "all equal");
        }
    }
}

#[test]
fn identity_like() {
    for n in [1, 2, 5, 64, 300] {
        let mut c = vec![0.0f32; n * n];
        for i in 0..n {
            c[i * n + i] = 1.0;
        }
        let a = solve_max(&c, n, n).unwrap();
        check_valid(&a, &c, n, n);
        assert_eq!(a.total, n as f64);
        assert!(a.pairs().iter().all(|&(r, k)| r == k));

        // Minimising the same matrix avoids the diagonal entirely (n > 1).
        let a = solve_min(&c, n, n).unwrap();
        check_valid(&a, &c, n, n);
        assert_eq!(a.total, if n == 1 { 1.0 } else { 0.0 });
    }
}

#[test]
fn permuted_diagonal_is_recovered() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for n in [3, 10, 100, 400] {
        let mut perm: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            perm.swap(i, rng.random_range(0..=i));
        }
        let mut c: Vec<f32> = (0..n * n).map(|_| rng.random::<f32>()).collect();
        for (i, &p) in perm.iter().enumerate() {
            c[i * n + p] = 100.0 + rng.random::<f32>();
        }
        let a = solve_max(&c, n, n).unwrap();
        check_valid(&a, &c, n, n);
        for (i, &p) in perm.iter().enumerate() {
            assert_eq!(a.row_to_col[i], Some(p));
        }
        // Negated, the same permutation is the minimum.
        let neg: Vec<f32> = c.iter().map(|x| -x).collect();
        let b = solve_min(&neg, n, n).unwrap();
        assert_eq!(b.row_to_col, a.row_to_col);
        assert_close(b.total, -a.total, "negated");
    }
}

#[test]
fn degenerate_shapes() {
    let a = solve_max(&[3.0], 1, 1).unwrap();
    assert_eq!(a.row_to_col, vec![Some(0)]);
    assert_eq!(a.total, 3.0);

    let row = [1.0f32, 5.0, -2.0, 4.0];
    let a = solve_max(&row, 1, 4).unwrap();
    assert_eq!(a.row_to_col, vec![Some(1)]);
    assert_eq!(a.col_to_row, vec![None, Some(0), None, None]);
    assert_eq!(a.total, 5.0);
    let a = solve_min(&row, 1, 4).unwrap();
    assert_eq!(a.row_to_col, vec![Some(2)]);
    assert_eq!(a.total, -2.0);

    // The same values as a column.
    let a = solve_max(&row, 4, 1).unwrap();
    assert_eq!(a.row_to_col, vec![None, Some(0), None, None]);
    assert_eq!(a.col_to_row, vec![Some(1)]);
    assert_eq!(a.total, 5.0);
    let a = solve_min(&row, 4, 1).unwrap();
    assert_eq!(a.pairs(), vec![(2, 0)]);
}

#[test]
fn empty_matrices_give_empty_assignments() {
    for (rows, cols) in [(0, 0), (0, 5), (5, 0)] {
        let a = solve_max::<f32>(&[], rows, cols).unwrap();
        assert!(a.is_empty());
        assert_eq!(a.row_to_col, vec![None; rows]);
        assert_eq!(a.col_to_row, vec![None; cols]);
        assert_eq!(a.total, 0.0);
        assert!(a.pairs().is_empty());
    }
}

#[test]
fn shape_mismatch_is_an_error() {
    let err = solve_max(&[1.0, 2.0, 3.0], 2, 2).unwrap_err();
    assert_eq!(
        err,
        AssignmentError::ShapeMismatch {
            rows: 2,
            cols: 2,
            len: 3
        }
    );
    assert!(solve_min::<f32>(&[], usize::MAX, 2).is_err());
    assert!(solve_min(&[1.0], 0, 1).is_err());
}

#[test]
fn infinities_are_rejected() {
    let mut c = vec![0.0f32; 12];
    c[7] = f32::INFINITY;
    c[9] = f32::NEG_INFINITY;
    assert_eq!(
        solve_max(&c, 3, 4).unwrap_err(),
        AssignmentError::Infinite { row: 1, col: 3 }
    );
    c[7] = 0.0;
    assert_eq!(
        solve_min(&c, 4, 3).unwrap_err(),
        AssignmentError::Infinite { row: 3, col: 0 }
    );
    // Also in a matrix large enough to be scanned in parallel.
    let n = 400;
    let mut big = vec![0.5f32; n * n];
    big[n * 300 + 17] = f32::INFINITY;
    big[n * 350 + 3] = f32::NEG_INFINITY;
    assert_eq!(
        solve_max(&big, n, n).unwrap_err(),
        AssignmentError::Infinite { row: 300, col: 17 }
    );
}

#[test]
fn nan_counts_as_zero() {
    let nan = f32::NAN;
    // Maximising: NaN (= 0) beats the negative entries.
    let c = [nan, -1.0, -1.0, nan];
    let a = solve_max(&c, 2, 2).unwrap();
    assert_eq!(a.pairs(), vec![(0, 0), (1, 1)]);
    assert_eq!(a.total, 0.0);
    // Minimising: NaN (= 0) loses to the negative entries.
    let a = solve_min(&c, 2, 2).unwrap();
    assert_eq!(a.pairs(), vec![(0, 1), (1, 0)]);
    assert_eq!(a.total, -2.0);

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (rows, cols) in [(4, 4), (3, 6), (6, 3), (7, 7)] {
        let mut c = random_matrix(&mut rng, rows, cols);
        for x in c.iter_mut() {
            if rng.random::<f32>() < 0.3 {
                *x = f32::NAN;
            }
        }
        check_against_brute_force(&c, rows, cols, "nan");
    }
}

/// Independent O(n²m) reference: Kuhn–Munkres with row/column potentials,
/// one Dijkstra-like phase per row (rows <= cols). Returns the minimum total.
fn hungarian_reference(a: &[f64], n: usize, m: usize) -> f64 {
    assert!(n <= m);
    let inf = f64::INFINITY;
    // 1-based rows/columns; index 0 is a virtual column.
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = a[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=m)
        .filter(|&j| p[j] != 0)
        .map(|j| a[(p[j] - 1) * m + (j - 1)])
        .sum()
}

/// Reference optimum for any shape and objective.
fn reference_total(c: &[f32], rows: usize, cols: usize, objective: Objective) -> f64 {
    let sign = match objective {
        Objective::Minimize => 1.0,
        Objective::Maximize => -1.0,
    };
    let (n, m) = (rows.min(cols), rows.max(cols));
    let mut a = vec![0.0f64; n * m];
    for r in 0..rows {
        for k in 0..cols {
            let x = sign * nan_to_zero(c[r * cols + k]);
            if rows <= cols {
                a[r * m + k] = x;
            } else {
                a[k * m + r] = x;
            }
        }
    }
    sign * hungarian_reference(&a, n, m)
}

#[test]
fn matches_reference_hungarian_n200() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    // 300 x 300 and 260 x 300 are large enough for the parallel scans.
    let shapes = [
        (200, 200),
        (200, 200),
        (150, 200),
        (200, 150),
        (1, 200),
        (200, 3),
        (300, 300),
        (260, 300),
    ];
    for (k, &(rows, cols)) in shapes.iter().enumerate() {
        let c = if k == 1 {
            integer_matrix(&mut rng, rows, cols, 4)
        } else {
            random_matrix(&mut rng, rows, cols)
        };
        for objective in [Objective::Minimize, Objective::Maximize] {
            let a = solve(&c, rows, cols, objective).unwrap();
            check_valid(&a, &c, rows, cols);
            let want = reference_total(&c, rows, cols, objective);
            assert_close(a.total, want, &format!("{rows}x{cols} {objective:?}"));
        }
    }
}

/// Cosine-similarity matrices like the alignment use: half of the second set
/// are noisy copies of the first, the rest unrelated.
#[test]
fn matches_reference_on_cosine_similarities() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (n, d) = (240, 16);
    let unit = |rng: &mut ChaCha8Rng| -> Vec<f32> {
        let v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    };
    let u1: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng)).collect();
    let u2: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let noise = unit(&mut rng);
                let w: Vec<f32> = u1[(i * 7) % n]
                    .iter()
                    .zip(&noise)
                    .map(|(a, b)| a + 0.3 * b)
                    .collect();
                let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
                w.into_iter().map(|x| x / norm).collect()
            } else {
                unit(&mut rng)
            }
        })
        .collect();
    let c: Vec<f32> = u1
        .iter()
        .flat_map(|a| {
            u2.iter()
                .map(move |b| a.iter().zip(b).map(|(x, y)| x * y).sum())
        })
        .collect();
    let a = solve_max(&c, n, n).unwrap();
    check_valid(&a, &c, n, n);
    assert_close(
        a.total,
        reference_total(&c, n, n, Objective::Maximize),
        "cosine",
    );
}

/// A `f64` matrix is solved on its `f64` values: entries 1e-10 apart, equal once rounded to
/// `f32`, still decide the matching.
#[test]
fn f64_costs_keep_differences_below_f32_precision() {
    let c = [1.0f64, 1.0 + 1e-10, 1.0 + 2e-10, 1.0];
    assert_eq!(c.map(|x| x as f32), [1.0f32; 4]);
    let a = solve_max(&c, 2, 2).unwrap();
    assert_eq!(a.pairs(), vec![(0, 1), (1, 0)]);
    assert_eq!(a.total, (1.0 + 1e-10) + (1.0 + 2e-10));
    let a = solve_min(&c, 2, 2).unwrap();
    assert_eq!(a.pairs(), vec![(0, 0), (1, 1)]);
}

/// Random `f64` matrices of every shape against the reference Hungarian method, and the `f64`
/// path agrees with the `f32` one on values that `f32` holds exactly.
#[test]
fn f64_matches_reference_hungarian() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for &(rows, cols) in &[(40, 40), (30, 50), (50, 30), (1, 7), (7, 1), (300, 260)] {
        let c: Vec<f64> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0f64..1.0))
            .collect();
        let (n, m) = (rows.min(cols), rows.max(cols));
        for objective in [Objective::Minimize, Objective::Maximize] {
            let sign = if objective == Objective::Minimize {
                1.0
            } else {
                -1.0
            };
            let mut a = vec![0.0f64; n * m];
            for r in 0..rows {
                for k in 0..cols {
                    let at = if rows <= cols { r * m + k } else { k * m + r };
                    a[at] = sign * c[r * cols + k];
                }
            }
            let got = solve(&c, rows, cols, objective).unwrap();
            assert_eq!(got.len(), n);
            let sum: f64 = got.pairs().iter().map(|&(r, k)| c[r * cols + k]).sum();
            assert_eq!(sum, got.total);
            assert_close(
                got.total,
                sign * hungarian_reference(&a, n, m),
                &format!("f64 {rows}x{cols} {objective:?}"),
            );
            let narrow: Vec<f32> = c.iter().map(|&x| x as f32).collect();
            let widened: Vec<f64> = narrow.iter().map(|&x| x as f64).collect();
            assert_eq!(
                solve(&widened, rows, cols, objective).unwrap().pairs(),
                solve(&narrow, rows, cols, objective).unwrap().pairs()
            );
        }
    }
}
