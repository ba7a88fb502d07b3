//! Cache-blocked sparse-dense products of the fast step: [`blocked_spmm`] adds weighted rows
//! of a gathered matrix into output rows (reconstruction, gradients), [`blocked_sddmm`] takes
//! dot products of output rows with gathered rows at given entries (code gradient).
//!
//! The gathered matrix is laid out chunk-major ([`Gathered`]): column chunks of
//! [`gather::CHUNK`] floats, each a contiguous slab, visited in blocks of rows small enough to
//! stay in L2 while a group of output rows (one rayon task) takes its entries in that block.
//! Inner loops are register resident ([`gather`]). The blocking ([`TILING`]) is fixed, so the
//! order of every sum depends only on the data, never on the thread count.

use rayon::prelude::*;

use crate::sae::kernels::gather;
use crate::sae::kernels::scratch::Scratch;

/// Cache blocking of the sparse products.
#[derive(Clone, Copy)]
pub(super) struct Tiling {
    /// Rows of the gathered matrix per block: a block's column chunk (768 × 64 floats,
    /// 192 KiB) stays in a 512 KiB L2 cache while a group of output rows takes its entries.
    pub(super) gather_block: usize,
    /// Output rows per parallel task.
    pub(super) out_group: usize,
}

/// Chosen on a 2-core AVX2 machine (512 KiB L2 per core): blocks of 512 to 3072 rows and
/// groups of 256 to 512 rows measured within a few per cent of this one.
pub(super) const TILING: Tiling = Tiling {
    gather_block: 768,
    out_group: 512,
};

/// Column chunks of a width-`d` row: (start, end) pairs of at most `width` columns.
pub(super) fn chunks(d: usize, width: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..d)
        .step_by(width)
        .map(move |c0| (c0, (c0 + width).min(d)))
}

/// `m` (rows × d, row-major) rearranged chunk-major: for each column chunk of [`chunks`], a
/// contiguous rows × width slab. The rows of a block of a slab then lie on few memory pages,
/// which the gathers of [`blocked_spmm`] need (row-major, a 64-float piece of each row would
/// sit on its own page).
pub(super) fn chunk_major(m: &[f32], d: usize, width: usize) -> Scratch<f32> {
    let rows = m.len() / d.max(1);
    let mut out = Scratch::zeros(m.len());
    let bounds: Vec<(usize, usize)> = chunks(d, width).collect();
    // Rows are read in order (in parallel blocks) and each row's pieces written to their
    // slabs: reading slab by slab instead would stride through all of `m` once per chunk.
    struct Dst(*mut f32);
    // SAFETY: the tasks write disjoint ranges (below) of a buffer that outlives the loop.
    unsafe impl Sync for Dst {}
    let dst = Dst(out.as_mut_ptr());
    let dst = &dst;
    m.par_chunks(256 * d.max(1))
        .enumerate()
        .for_each(|(q, block)| {
            for (i, row) in block.chunks(d).enumerate() {
                let r = q * 256 + i;
                for &(c0, c1) in &bounds {
                    let w = c1 - c0;
                    let at = rows * c0 + r * w;
                    assert!(at + w <= rows * c1);
                    // SAFETY: piece (r, c0) of the rows × w slab starting at rows·c0 lies
                    // inside the buffer (checked) and belongs to row r alone.
                    unsafe {
                        std::ptr::copy_nonoverlapping(row[c0..c1].as_ptr(), dst.0.add(at), w)
                    };
                }
            }
        });
    out
}

/// Entry offsets of every (output row, gather block) pair for the output rows `rows`: entry
/// range `at[q·(blocks+1) + t] .. at[q·(blocks+1) + t + 1]` of output row `rows.start + q` has
/// its gathered rows in block t (rows t·gb .. (t+1)·gb of the gathered matrix).
pub(super) fn block_offsets(
    range: &(impl Fn(usize) -> std::ops::Range<usize> + Sync),
    idx: &[u32],
    rows: std::ops::Range<usize>,
    gb: usize,
    blocks: usize,
) -> Vec<usize> {
    let mut at = Vec::with_capacity(rows.len() * (blocks + 1));
    for o in rows {
        let std::ops::Range { start: mut k, end } = range(o);
        at.push(k);
        for t in 1..=blocks {
            let limit = (t * gb).min(u32::MAX as usize) as u32;
            while k < end && idx[k] < limit {
                k += 1;
            }
            at.push(k);
        }
    }
    at
}

/// The gathered matrix of a blocked product: chunk-major, in blocks of
/// `tiling.gather_block` rows.
pub(super) struct Gathered {
    pub(super) m: Scratch<f32>,
    pub(super) rows: usize,
    pub(super) block: usize,
    pub(super) blocks: usize,
}

impl Gathered {
    pub(super) fn new(m: &[f32], d: usize, tiling: Tiling) -> Self {
        let rows = m.len() / d.max(1);
        Gathered {
            m: chunk_major(m, d, gather::CHUNK),
            rows,
            block: tiling.gather_block,
            blocks: rows.div_ceil(tiling.gather_block).max(1),
        }
    }

    /// The rows × (c1 − c0) slab of column chunk c0..c1.
    pub(super) fn slab(&self, c0: usize, c1: usize) -> &[f32] {
        &self.m[self.rows * c0..self.rows * c1]
    }

    /// [`block_offsets`] of output rows `rows` against these blocks.
    pub(super) fn offsets(
        &self,
        range: &(impl Fn(usize) -> std::ops::Range<usize> + Sync),
        idx: &[u32],
        rows: std::ops::Range<usize>,
    ) -> Vec<usize> {
        block_offsets(range, idx, rows, self.block, self.blocks)
    }
}

/// `out[o] += Σ_{k ∈ range(o)} val[k] · m[idx[k]]` for every output row o, where `m` is the
/// rows × d matrix behind `g` ([`Gathered`]), `out` is a row-major matrix of width d
/// and each output row's entries are sorted by `idx`.
///
/// Sparse-dense product blocked for the cache. Output rows are taken in groups (one parallel
/// task each); within a group, for each column chunk, the rows of `m` are visited
/// `tiling.gather_block` at a time, and every output row of the group adds its entries that
/// fall in the block. The block's slab piece stays in L2 while the whole group uses it, and each
/// output chunk is summed in registers per block, so the inner loop is one load and one
/// multiply-add per float. The summation order depends only on the data.
pub(super) fn blocked_spmm(
    range: impl Fn(usize) -> std::ops::Range<usize> + Sync,
    idx: &[u32],
    val: &[f32],
    g: &Gathered,
    d: usize,
    out: &mut [f32],
    tiling: Tiling,
) {
    let group = tiling.out_group;
    out.par_chunks_mut(group * d)
        .enumerate()
        .for_each(|(gi, out)| {
            let o0 = gi * group;
            let at = g.offsets(&range, idx, o0..o0 + out.len() / d);
            let blocks = g.blocks;
            for (c0, c1) in chunks(d, gather::CHUNK) {
                let slab = g.slab(c0, c1);
                for t in 0..blocks {
                    for (q, out_row) in out.chunks_mut(d).enumerate() {
                        let k = at[q * (blocks + 1) + t]..at[q * (blocks + 1) + t + 1];
                        if !k.is_empty() {
                            let acc = &mut out_row[c0..c1];
                            gather::gather_axpy(acc, slab, c1 - c0, 0, &idx[k.clone()], &val[k]);
                        }
                    }
                }
            }
        });
}

/// `out[k] += a[o] · m[idx[k]]` (`m` behind `g`) for every output row o and entry k ∈ starts[o]..starts[o+1],
/// where `a` is row-major of width d, `g` a matrix prepared as [`Gathered`], and the entries
/// of each output row are sorted by `idx`. Blocked like [`blocked_spmm`]; each chunk's partial
/// dot products are added to `out`.
pub(super) fn blocked_sddmm(
    starts: &[usize],
    idx: &[u32],
    a: &[f32],
    g: &Gathered,
    d: usize,
    out: &mut [f32],
    tiling: Tiling,
) {
    let (group, blocks) = (tiling.out_group, g.blocks);
    let rows_out = starts.len() - 1;
    let mut groups = Vec::new();
    let mut rest = &mut out[..];
    for o0 in (0..rows_out).step_by(group) {
        let o1 = (o0 + group).min(rows_out);
        let (head, tail) = rest.split_at_mut(starts[o1] - starts[o0]);
        groups.push((o0, o1, head));
        rest = tail;
    }
    let range = |o: usize| starts[o]..starts[o + 1];
    groups.into_par_iter().for_each(|(o0, o1, out)| {
        let base = starts[o0];
        let at = g.offsets(&range, idx, o0..o1);
        for (c0, c1) in chunks(d, gather::CHUNK) {
            let slab = g.slab(c0, c1);
            for t in 0..blocks {
                for (q, o) in (o0..o1).enumerate() {
                    let k = at[q * (blocks + 1) + t]..at[q * (blocks + 1) + t + 1];
                    if !k.is_empty() {
                        gather::gather_dot_add(
                            &a[o * d + c0..o * d + c1],
                            slab,
                            c1 - c0,
                            0,
                            &idx[k.clone()],
                            &mut out[k.start - base..k.end - base],
                        );
                    }
                }
            }
        }
    });
}
