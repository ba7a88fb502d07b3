//! Jonker–Volgenant shortest-augmenting-path solver (minimisation, `n <= m`).
//!
//! Notation: `x[i]` is the column of row `i`, `y[j]` the row of column `j`
//! (`NONE` when free), `v[j]` the price (dual) of column `j`. Row duals are
//! implicit: an assigned row `i` always satisfies
//! `c[i][x[i]] - v[x[i]] <= c[i][j] - v[j]` for every `j`, i.e. its column is
//! a minimum of its reduced-cost row. For `n < m` the prices of free columns
//! stay at `0` and all other prices are `<= 0`, which is the optimality
//! condition of the rectangular problem (every row must be matched, a column
//! may stay free).

use super::{Cost, Objective, PARALLEL_MIN_ENTRIES};
use rayon::prelude::*;

const NONE: usize = usize::MAX;

/// How a stored entry becomes a cost. Monomorphised so the hot loops carry no
/// extra branches when the matrix has no `NaN`.
trait Entry {
    fn get<T: Cost>(x: T) -> f64;
}

struct Min;
struct Max;
struct MinNan;
struct MaxNan;

impl Entry for Min {
    #[inline(always)]
    fn get<T: Cost>(x: T) -> f64 {
        x.to_f64()
    }
}
impl Entry for Max {
    #[inline(always)]
    fn get<T: Cost>(x: T) -> f64 {
        -x.to_f64()
    }
}
impl Entry for MinNan {
    #[inline(always)]
    fn get<T: Cost>(x: T) -> f64 {
        let x = x.to_f64();
        if x.is_nan() {
            0.0
        } else {
            x
        }
    }
}
impl Entry for MaxNan {
    #[inline(always)]
    fn get<T: Cost>(x: T) -> f64 {
        let x = x.to_f64();
        if x.is_nan() {
            0.0
        } else {
            -x
        }
    }
}

/// Solves a finite `n × m` problem with `1 <= n <= m`; returns `x`
/// (row → column, all rows assigned).
pub(super) fn solve<T: Cost>(
    c: &[T],
    n: usize,
    m: usize,
    objective: Objective,
    has_nan: bool,
) -> Vec<usize> {
    match (objective, has_nan) {
        (Objective::Minimize, false) => Solver::<Min, T>::run(c, n, m),
        (Objective::Maximize, false) => Solver::<Max, T>::run(c, n, m),
        (Objective::Minimize, true) => Solver::<MinNan, T>::run(c, n, m),
        (Objective::Maximize, true) => Solver::<MaxNan, T>::run(c, n, m),
    }
}

struct Solver<'a, E, T> {
    c: &'a [T],
    n: usize,
    m: usize,
    x: Vec<usize>,
    y: Vec<usize>,
    v: Vec<f64>,
    _entry: std::marker::PhantomData<E>,
}

impl<'a, E: Entry, T: Cost> Solver<'a, E, T> {
    fn run(c: &'a [T], n: usize, m: usize) -> Vec<usize> {
        debug_assert!(1 <= n && n <= m && c.len() == n * m);
        let mut s = Solver::<E, T> {
            c,
            n,
            m,
            x: vec![NONE; n],
            y: vec![NONE; m],
            v: vec![0.0; m],
            _entry: std::marker::PhantomData,
        };
        if m == 1 {
            // Then n == 1 as well.
            s.x[0] = 0;
            return s.x;
        }
        let t = std::time::Instant::now();
        let free = if n == m {
            s.column_reduction()
        } else {
            (0..n).collect()
        };
        let t_cr = t.elapsed();
        let free_cr = free.len();
        let free = s.augmenting_row_reduction(free);
        let t_arr = t.elapsed();
        let scanned = s.augment(&free);
        tracing::debug!(
            rows = n,
            cols = m,
            free_after_column_reduction = free_cr,
            free_after_row_reduction = free.len(),
            rows_scanned_in_augmentation = scanned,
            column_reduction_s = t_cr.as_secs_f64(),
            row_reduction_s = (t_arr - t_cr).as_secs_f64(),
            augmentation_s = (t.elapsed() - t_arr).as_secs_f64(),
            "assignment solved"
        );
        debug_assert!(s.x.iter().all(|&j| j < m));
        s.x
    }

    #[inline(always)]
    fn row(&self, i: usize) -> &'a [T] {
        &self.c[i * self.m..(i + 1) * self.m]
    }

    /// Column reduction and reduction transfer (square problems). Returns the
    /// rows left unassigned.
    fn column_reduction(&mut self) -> Vec<usize> {
        let (n, m) = (self.n, self.m);
        let (colmin, argmin) = column_minima::<E, T>(self.c, n, m);
        self.v.copy_from_slice(&colmin);

        // Assign each column to its cheapest row; a row hit several times
        // keeps the column with the lowest price.
        let mut matches = vec![0u32; n];
        for j in (0..m).rev() {
            let i = argmin[j];
            if matches[i] == 0 {
                self.x[i] = j;
                self.y[j] = i;
            } else if self.v[j] < self.v[self.x[i]] {
                let j1 = self.x[i];
                self.y[j1] = NONE;
                self.x[i] = j;
                self.y[j] = i;
            }
            matches[i] = matches[i].saturating_add(1);
        }

        // Reduction transfer: a row matched exactly once lowers its column's
        // price so that its reduced cost there equals its second-best slack.
        // Prices only decrease, so computing every row's slack from the same
        // snapshot of `v` is valid (it can only under-estimate) and lets the
        // rows be processed in parallel.
        let single: Vec<usize> = (0..n).filter(|&i| matches[i] == 1).collect();
        let (c, v, x) = (self.c, &self.v, &self.x);
        let slack = |&i: &usize| -> f64 {
            let row = &c[i * m..(i + 1) * m];
            let j1 = x[i];
            let mut best = f64::INFINITY;
            for (j, (&cij, &vj)) in row.iter().zip(v.iter()).enumerate() {
                let h = E::get(cij) - vj;
                if h < best && j != j1 {
                    best = h;
                }
            }
            // Rows are column minima, so `best` is at least the (zero)
            // reduced cost of the assigned column; guard rounding anyway.
            best.max(0.0)
        };
        let slacks: Vec<f64> = if n * m < PARALLEL_MIN_ENTRIES {
            single.iter().map(slack).collect()
        } else {
            single.par_iter().map(slack).collect()
        };
        for (&i, &mu) in single.iter().zip(&slacks) {
            let j1 = self.x[i];
            self.v[j1] = E::get(self.row(i)[j1]) - mu;
        }

        (0..n).filter(|&i| matches[i] == 0).collect()
    }

    /// Two sweeps of augmenting row reduction over the free rows. Returns the
    /// rows still free afterwards.
    fn augmenting_row_reduction(&mut self, free: Vec<usize>) -> Vec<usize> {
        let mut current = free;
        for _ in 0..2 {
            if current.is_empty() {
                break;
            }
            // A displaced row can be re-processed immediately many times when
            // prices move by tiny amounts; bound the work of one sweep.
            let budget = 4 * current.len() + 2 * self.n;
            let mut steps = 0usize;
            let mut next = Vec::with_capacity(current.len());
            let mut pending: Option<usize> = None;
            let mut k = 0;
            loop {
                let i = match pending.take() {
                    Some(i) => i,
                    None if k < current.len() => {
                        k += 1;
                        current[k - 1]
                    }
                    None => break,
                };
                if steps >= budget {
                    next.push(i);
                    continue;
                }
                steps += 1;

                let (u1, mut j1, u2, j2) = two_smallest::<E, T>(self.row(i), &self.v);
                let mut i0 = self.y[j1];
                let strict = u1 < u2;
                if strict {
                    // Row i can afford column j1 even at the second-best
                    // price: raise the price (lower v) accordingly.
                    self.v[j1] -= u2 - u1;
                } else if i0 != NONE {
                    // Tie: take the second-best column instead (it may be
                    // free); a row displaced there waits for the next sweep.
                    j1 = j2;
                    i0 = self.y[j2];
                }
                self.x[i] = j1;
                self.y[j1] = i;
                if i0 != NONE {
                    self.x[i0] = NONE;
                    if strict {
                        pending = Some(i0);
                    } else {
                        next.push(i0);
                    }
                }
            }
            current = next;
        }
        current
    }

    /// Shortest augmenting path (Dijkstra on reduced costs) from every free
    /// row, with price updates keeping reduced costs non-negative. Returns
    /// the number of row scans performed (a measure of the work).
    ///
    /// Each scan walks all columns contiguously and fuses the distance update
    /// with the search for the next closest column. The scans are sequential:
    /// splitting each one over rayon threads made the 12,288-column benchmark
    /// about twice as slow on the two-core development machine. Settled columns have
    /// their distance replaced by `NaN`, which fails both comparisons of the
    /// loop, so no separate membership test is needed.
    fn augment(&mut self, free: &[usize]) -> u64 {
        let m = self.m;
        let mut scanned = 0u64;
        let mut d = vec![0.0f64; m];
        let mut pred = vec![0usize; m];
        // Settled columns with their final distance.
        let mut settled: Vec<(usize, f64)> = Vec::new();

        for &f in free {
            settled.clear();
            let row = self.row(f);
            let mut min = f64::INFINITY;
            let mut jmin = 0;
            for (j, ((dj, pj), (&cij, &vj))) in d
                .iter_mut()
                .zip(pred.iter_mut())
                .zip(row.iter().zip(self.v.iter()))
                .enumerate()
            {
                let dist = E::get(cij) - vj;
                *dj = dist;
                *pj = f;
                if dist <= min && (dist < min || self.y[j] == NONE) {
                    min = dist;
                    jmin = j;
                }
            }

            let sink = loop {
                if self.y[jmin] == NONE {
                    break jmin;
                }
                // Settle the closest column and scan through its row.
                let j1 = jmin;
                let dist1 = min;
                settled.push((j1, dist1));
                d[j1] = f64::NAN;
                scanned += 1;
                let i = self.y[j1];
                let ri = self.row(i);
                let h = E::get(ri[j1]) - self.v[j1] - dist1;
                (min, jmin) = scan_row::<E, T>(ri, &self.v, h, i, &mut d, &mut pred, &self.y);
            };

            // Price update for settled columns.
            for &(j, dj) in &settled {
                self.v[j] += dj - min;
            }

            // Flip the alternating path ending at `sink`.
            let mut j = sink;
            loop {
                let i = pred[j];
                self.y[j] = i;
                let prev = self.x[i];
                self.x[i] = j;
                if i == f {
                    break;
                }
                j = prev;
            }
        }
        scanned
    }
}

/// One Dijkstra relaxation step: lowers `d[j]` to `c[i][j] - v[j] - h` where
/// that is smaller (recording `i` as predecessor) and returns the smallest
/// remaining distance with its column, preferring a free column on ties.
/// Settled columns hold `NaN` in `d` and are skipped by the comparisons.
///
/// The loop works in blocks of eight with branch-free updates; only blocks
/// whose minimum can beat the running minimum are searched for the position.
/// (A hand-written AVX2 version of this loop measured slower on the
/// development machine, so the portable form is kept.)
#[inline]
fn scan_row<E: Entry, T: Cost>(
    ri: &[T],
    v: &[f64],
    h: f64,
    i: usize,
    d: &mut [f64],
    pred: &mut [usize],
    y: &[usize],
) -> (f64, usize) {
    const B: usize = 8;
    let m = d.len();
    let mut min = f64::INFINITY;
    let mut jmin = NONE;
    let full = m - m % B;
    for base in (0..full).step_by(B) {
        let c = &ri[base..base + B];
        let vb = &v[base..base + B];
        let db = &mut d[base..base + B];
        let pb = &mut pred[base..base + B];
        let mut bmin = f64::INFINITY;
        for k in 0..B {
            let dist = E::get(c[k]) - vb[k] - h;
            let cur = db[k];
            let upd = dist < cur;
            let cur = if upd { dist } else { cur };
            db[k] = cur;
            pb[k] = if upd { i } else { pb[k] };
            bmin = if cur < bmin { cur } else { bmin };
        }
        if bmin <= min {
            for (k, &cur) in db.iter().enumerate() {
                let j = base + k;
                if cur <= min && (cur < min || y[j] == NONE) {
                    min = cur;
                    jmin = j;
                }
            }
        }
    }
    for j in full..m {
        let dist = E::get(ri[j]) - v[j] - h;
        let mut cur = d[j];
        if dist < cur {
            d[j] = dist;
            pred[j] = i;
            cur = dist;
        }
        if cur <= min && (cur < min || y[j] == NONE) {
            min = cur;
            jmin = j;
        }
    }
    (min, jmin)
}

/// Smallest and second-smallest reduced cost of a row: `(u1, j1, u2, j2)`.
/// Requires at least two columns.
#[inline]
fn two_smallest<E: Entry, T: Cost>(row: &[T], v: &[f64]) -> (f64, usize, f64, usize) {
    let mut u1 = E::get(row[0]) - v[0];
    let mut j1 = 0;
    let mut u2 = f64::INFINITY;
    let mut j2 = NONE;
    for (j, (&cij, &vj)) in row.iter().zip(v.iter()).enumerate().skip(1) {
        let h = E::get(cij) - vj;
        if h < u2 {
            if h >= u1 {
                u2 = h;
                j2 = j;
            } else {
                u2 = u1;
                j2 = j1;
                u1 = h;
                j1 = j;
            }
        }
    }
    (u1, j1, u2, j2)
}

/// Per column: minimum cost and the first row attaining it.
fn column_minima<E: Entry, T: Cost>(c: &[T], n: usize, m: usize) -> (Vec<f64>, Vec<usize>) {
    // Row blocks are reduced independently, then merged in block order so
    // the lowest row index wins ties.
    // A few blocks per thread: each block allocates and merges two
    // length-`m` vectors, so blocks must be large.
    let parallel = n * m >= PARALLEL_MIN_ENTRIES;
    let blocks = if parallel {
        4 * rayon::current_num_threads()
    } else {
        1
    };
    let block_rows = n.div_ceil(blocks).max(1);
    let reduce_block = |(b, chunk): (usize, &[T])| -> (Vec<f64>, Vec<usize>) {
        let mut min = vec![f64::INFINITY; m];
        let mut arg = vec![NONE; m];
        for (r, row) in chunk.chunks_exact(m).enumerate() {
            let i = b * block_rows + r;
            for ((mj, aj), &cij) in min.iter_mut().zip(arg.iter_mut()).zip(row) {
                let h = E::get(cij);
                if h < *mj {
                    *mj = h;
                    *aj = i;
                }
            }
        }
        (min, arg)
    };
    let merge = |mut a: (Vec<f64>, Vec<usize>), b: (Vec<f64>, Vec<usize>)| {
        for j in 0..m {
            if b.0[j] < a.0[j] || (b.0[j] == a.0[j] && b.1[j] < a.1[j]) {
                a.0[j] = b.0[j];
                a.1[j] = b.1[j];
            }
        }
        a
    };
    let empty = || (vec![f64::INFINITY; m], vec![NONE; m]);
    if !parallel {
        c.chunks(block_rows * m)
            .enumerate()
            .map(reduce_block)
            .fold(empty(), merge)
    } else {
        c.par_chunks(block_rows * m)
            .enumerate()
            .map(reduce_block)
            .reduce(empty, merge)
    }
}
