//! Dense linear assignment (optimal one-to-one matching).
//!
//! Given a cost matrix `C` with `rows × cols` entries, find a set of
//! `min(rows, cols)` pairs `(i, j)`, no row and no column used twice, whose
//! total cost is minimal (or maximal). This is the problem SciPy solves with
//! `scipy.optimize.linear_sum_assignment`; the results agree with it in total
//! cost (individual pairs may differ when several optima exist).
//!
//! The solver is a shortest-augmenting-path method of the Jonker–Volgenant
//! family (R. Jonker and A. Volgenant, "A shortest augmenting path algorithm
//! for dense and sparse linear assignment problems", Computing 38, 1987):
//!
//! 1. *column reduction* — every column's price starts at its minimum cost and
//!    the arg-min rows are assigned greedily (square problems only);
//! 2. *reduction transfer* — rows that received exactly one column hand their
//!    slack over to that column's price;
//! 3. *augmenting row reduction* — two auction-like sweeps that assign most of
//!    the remaining free rows cheaply;
//! 4. *shortest augmenting paths* — a Dijkstra search on reduced costs for each
//!    row that is still free, followed by a dual (price) update.
//!
//! Steps 1–2 and the input validation scan the full matrix and run in parallel
//! with rayon; steps 3–4 are sequential. Each solve emits a `debug`-level
//! `tracing` event with the phase timings and the amount of augmentation work.
//!
//! # Input conventions
//!
//! * The matrix is a row-major `&[f32]` or `&[f64]` ([`Cost`]) of exactly
//!   `rows * cols` values. It is never copied into another type; dual prices
//!   and path lengths are kept in `f64`, so a `f64` matrix is solved exactly as
//!   SciPy solves it (a `f32` one exactly for its `f32` values, at half the
//!   memory). When `rows > cols` the solver works on a transposed copy (one
//!   extra matrix); square and wide matrices are used in place.
//! * `NaN` entries are treated as a cost of `0.0`, both in the optimisation
//!   and in [`Assignment::total`].
//! * `±inf` entries are rejected with [`AssignmentError::Infinite`].
//! * A matrix with zero rows or zero columns is not an error: the result has
//!   no pairs and a total of `0.0`.

mod lapjv;

#[cfg(test)]
mod tests;

use rayon::prelude::*;
use thiserror::Error;

/// An element type a cost matrix may have: `f32` or `f64`. Every cost is
/// widened to `f64` when read, so the duals never lose precision.
pub trait Cost: Copy + Send + Sync + 'static {
    /// The value as `f64` (exact for both types).
    fn to_f64(self) -> f64;
}

impl Cost for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Cost for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

/// Why a cost matrix could not be solved.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AssignmentError {
    /// The slice length does not match `rows * cols` (or that product
    /// overflows `usize`).
    #[error("cost matrix shape {rows} x {cols} does not match its {len} values")]
    ShapeMismatch {
        /// Declared number of rows.
        rows: usize,
        /// Declared number of columns.
        cols: usize,
        /// Actual number of values supplied.
        len: usize,
    },
    /// The matrix contains `+inf` or `-inf`.
    #[error("cost matrix entry ({row}, {col}) is infinite")]
    Infinite {
        /// Row of the first infinite entry (row-major order).
        row: usize,
        /// Column of that entry.
        col: usize,
    },
}

/// Whether to minimise or maximise the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// Smallest total cost.
    #[default]
    Minimize,
    /// Largest total (e.g. total similarity).
    Maximize,
}

/// An optimal assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// For every row, the column it is matched to. Exactly
    /// `min(rows, cols)` entries are `Some`; when `rows <= cols` all are.
    pub row_to_col: Vec<Option<usize>>,
    /// For every column, the row it is matched to (the inverse of
    /// `row_to_col`).
    pub col_to_row: Vec<Option<usize>>,
    /// Sum of the original matrix entries over the matched pairs, in `f64`
    /// (`NaN` entries count as `0.0`).
    pub total: f64,
}

impl Assignment {
    /// Number of matched pairs, `min(rows, cols)`.
    pub fn len(&self) -> usize {
        self.row_to_col.iter().filter(|c| c.is_some()).count()
    }

    /// True when nothing is matched (a matrix with a zero dimension).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Matched `(row, col)` pairs in increasing row order, like the two
    /// arrays returned by SciPy's `linear_sum_assignment`.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        self.row_to_col
            .iter()
            .enumerate()
            .filter_map(|(r, c)| c.map(|c| (r, c)))
            .collect()
    }
}

/// Maximum-total assignment of a row-major `rows × cols` matrix.
///
/// Equivalent to SciPy's `linear_sum_assignment(C, maximize=True)`.
pub fn solve_max<T: Cost>(
    cost: &[T],
    rows: usize,
    cols: usize,
) -> Result<Assignment, AssignmentError> {
    solve(cost, rows, cols, Objective::Maximize)
}

/// Minimum-total assignment of a row-major `rows × cols` matrix.
///
/// Equivalent to SciPy's `linear_sum_assignment(C)`.
pub fn solve_min<T: Cost>(
    cost: &[T],
    rows: usize,
    cols: usize,
) -> Result<Assignment, AssignmentError> {
    solve(cost, rows, cols, Objective::Minimize)
}

/// Optimal assignment of a row-major `rows × cols` matrix for `objective`.
///
/// See the [module documentation](self) for the treatment of `NaN`,
/// infinities and empty matrices.
pub fn solve<T: Cost>(
    cost: &[T],
    rows: usize,
    cols: usize,
    objective: Objective,
) -> Result<Assignment, AssignmentError> {
    let mismatch = AssignmentError::ShapeMismatch {
        rows,
        cols,
        len: cost.len(),
    };
    match rows.checked_mul(cols) {
        Some(n) if n == cost.len() => {}
        _ => return Err(mismatch),
    }
    if rows == 0 || cols == 0 {
        return Ok(Assignment {
            row_to_col: vec![None; rows],
            col_to_row: vec![None; cols],
            total: 0.0,
        });
    }

    let has_nan = validate(cost, cols)?;

    // The core solver needs at least as many columns as rows.
    let (row_to_col, col_to_row) = if rows <= cols {
        let x = lapjv::solve(cost, rows, cols, objective, has_nan);
        invert(x, rows, cols)
    } else {
        let t = transpose(cost, rows, cols);
        let x = lapjv::solve(&t, cols, rows, objective, has_nan);
        let (c2r, r2c) = invert(x, cols, rows);
        (r2c, c2r)
    };

    let total = row_to_col
        .iter()
        .enumerate()
        .filter_map(|(r, c)| c.map(|c| nan_to_zero(cost[r * cols + c])))
        .sum();
    Ok(Assignment {
        row_to_col,
        col_to_row,
        total,
    })
}

#[inline]
fn nan_to_zero<T: Cost>(x: T) -> f64 {
    let x = x.to_f64();
    if x.is_nan() {
        0.0
    } else {
        x
    }
}

/// Matrices smaller than this are scanned on the calling thread.
const PARALLEL_MIN_ENTRIES: usize = 1 << 16;

/// Rejects infinities; reports whether any `NaN` is present.
fn validate<T: Cost>(cost: &[T], cols: usize) -> Result<bool, AssignmentError> {
    // Per block of rows: (first infinite entry, any NaN).
    let scan = |(block, chunk): (usize, &[T])| -> (Option<usize>, bool) {
        let mut nan = false;
        let mut inf = false;
        for &x in chunk {
            let x = x.to_f64();
            nan |= x.is_nan();
            inf |= x.is_infinite();
        }
        let first_inf = if inf {
            chunk
                .iter()
                .position(|x| x.to_f64().is_infinite())
                .map(|p| block + p)
        } else {
            None
        };
        (first_inf, nan)
    };
    let block = (cols * 64).max(1);
    let combine = |a: (Option<usize>, bool), b: (Option<usize>, bool)| {
        let inf = match (a.0, b.0) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        (inf, a.1 || b.1)
    };
    let (inf, nan) = if cost.len() < PARALLEL_MIN_ENTRIES {
        cost.chunks(block)
            .enumerate()
            .map(|(k, c)| scan((k * block, c)))
            .fold((None, false), combine)
    } else {
        cost.par_chunks(block)
            .enumerate()
            .map(|(k, c)| scan((k * block, c)))
            .reduce(|| (None, false), combine)
    };
    match inf {
        Some(p) => Err(AssignmentError::Infinite {
            row: p / cols,
            col: p % cols,
        }),
        None => Ok(nan),
    }
}

/// Turns the solver's row → column map (for `rows <= cols`) into the two
/// optional maps of [`Assignment`].
fn invert(x: Vec<usize>, rows: usize, cols: usize) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
    let mut col_to_row = vec![None; cols];
    let row_to_col = x
        .into_iter()
        .enumerate()
        .map(|(r, c)| {
            col_to_row[c] = Some(r);
            Some(c)
        })
        .collect::<Vec<_>>();
    debug_assert_eq!(row_to_col.len(), rows);
    (row_to_col, col_to_row)
}

/// Row-major `rows × cols` → row-major `cols × rows`, in cache-sized tiles.
fn transpose<T: Cost>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    const TILE: usize = 64;
    let Some(&first) = a.first() else {
        return Vec::new();
    };
    let mut t = vec![first; rows * cols];
    // Each output row band (TILE original columns) is filled independently.
    let fill = |(band, out): (usize, &mut [T])| {
        let c0 = band * TILE;
        let c1 = (c0 + TILE).min(cols);
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for r in r0..r1 {
                let src = &a[r * cols..(r + 1) * cols];
                for c in c0..c1 {
                    out[(c - c0) * rows + r] = src[c];
                }
            }
        }
    };
    if a.len() < PARALLEL_MIN_ENTRIES {
        t.chunks_mut(TILE * rows).enumerate().for_each(fill);
    } else {
        t.par_chunks_mut(TILE * rows).enumerate().for_each(fill);
    }
    t
}
