//! Dictionary alignment (docs/reference.md §8.4): the cosine matrix of two sets of unit
//! directions and the optimal one-to-one matching that maximises the total cosine.

use rayon::prelude::*;

use crate::assignment::{solve_max, AssignmentError};
use crate::metrics::similarity::row_dot_products;

/// The matched pairs `(row of a, row of b)` and their cosines, in row order of `a`.
pub struct Alignment {
    pub pairs: Vec<(usize, usize)>,
    pub matched: Vec<f32>,
}

impl Alignment {
    pub fn mean(&self) -> f64 {
        self.matched.iter().map(|&v| v as f64).sum::<f64>() / self.matched.len().max(1) as f64
    }
}

/// Aligns unit-normalised directions `ua` ([na, d]) and `ub` ([nb, d]). The cosine matrix is
/// built in parallel blocks of `block_rows` rows; NaN cosines (zero directions) count as 0 so a
/// dead latent can still be matched, just never preferred.
pub fn align(
    ua: &[f32],
    ub: &[f32],
    d: usize,
    block_rows: usize,
) -> Result<Alignment, AssignmentError> {
    let (na, nb) = (ua.len() / d, ub.len() / d);
    let block = block_rows.max(1);
    let mut c = vec![0f32; na * nb];
    c.par_chunks_mut(block * nb)
        .zip(ua.par_chunks(block * d))
        .for_each(|(out, rows)| {
            out.copy_from_slice(&row_dot_products(rows, ub, d));
            out.iter_mut().filter(|v| v.is_nan()).for_each(|v| *v = 0.0);
        });
    let pairs = solve_max(&c, na, nb)?.pairs();
    let matched = pairs.iter().map(|&(i, j)| c[i * nb + j]).collect();
    Ok(Alignment { pairs, matched })
}
