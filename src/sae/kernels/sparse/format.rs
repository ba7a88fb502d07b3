//! The two layouts of a sparse code in the fast step. CSR ([`Csr`], row-major) is what
//! selection produces: each row's entries (latent, value, derivative) grouped into its level
//! bands, as the reconstruction and the code gradient read them. CSC ([`Csc`], grouped by
//! latent) is its transpose, built by a parallel counting sort over fixed parts of rows, as the
//! decoder and encoder gradients read it. Both keep their large arrays in pooled [`Scratch`]
//! buffers, and neither's content depends on the thread count.

use rayon::prelude::*;

use crate::sae::kernels::scratch::Scratch;

/// Sparse code in row-major (CSR) form; within a row, entries are grouped by level.
pub(super) struct Csr {
    /// Row offsets into the entry arrays, length B+1.
    pub(super) offsets: Vec<usize>,
    /// Per row, the end (absolute entry index) of each level band, length B·L.
    pub(super) band_end: Vec<usize>,
    pub(super) idx: Scratch<u32>,
    pub(super) val: Scratch<f32>,
    pub(super) der: Scratch<f32>,
}

/// One row's entries (latent, value, derivative) and the length of each level band.
pub(super) type RowEntries = (Vec<(u32, f32, f32)>, Vec<usize>);

impl Csr {
    /// Number of rows.
    pub(super) fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of level bands per row.
    pub(super) fn levels(&self) -> usize {
        self.band_end.len() / self.rows().max(1)
    }

    /// Entry range of band `l` of row `r`.
    pub(super) fn band(&self, r: usize, l: usize) -> std::ops::Range<usize> {
        let nl = self.levels();
        let start = if l == 0 {
            self.offsets[r]
        } else {
            self.band_end[r * nl + l - 1]
        };
        start..self.band_end[r * nl + l]
    }
}

/// The code entries grouped by latent (rows ascending, then levels, within a latent).
pub(super) struct Csc {
    /// Offsets of each latent's entries, length n+1.
    pub(super) start: Vec<usize>,
    /// Row of C = [B, L, d] the entry's code gradient comes from: row · L + level
    /// (ascending within a latent).
    pub(super) vrow: Scratch<u32>,
    /// Code value.
    pub(super) val: Scratch<f32>,
    /// Index of the entry in the CSR arrays (empty unless asked for).
    pub(super) entry: Scratch<u32>,
}

/// Rows per part of the parallel transposition (a fixed split: the result never depends on
/// it, and the work does not depend on the thread count).
pub(super) const TRANSPOSE_ROWS: usize = 256;

impl Csc {
    /// Transposes `csr` by a counting sort over parts of rows: each part counts its entries
    /// per latent, a prefix sum over (latent, part) gives every part its own output positions,
    /// and the parts then scatter their entries in parallel.
    pub(super) fn new(csr: &Csr, n: usize, with_entry: bool) -> Csc {
        let (b, nl) = (csr.rows(), csr.levels());
        let parts: Vec<(usize, usize)> = (0..b)
            .step_by(TRANSPOSE_ROWS)
            .map(|r0| (r0, (r0 + TRANSPOSE_ROWS).min(b)))
            .collect();
        let mut counts: Vec<Vec<usize>> = parts
            .par_iter()
            .map(|&(r0, r1)| {
                let mut c = vec![0usize; n];
                for &j in &csr.idx[csr.offsets[r0]..csr.offsets[r1]] {
                    c[j as usize] += 1;
                }
                c
            })
            .collect();
        let mut start = vec![0usize; n + 1];
        let mut pos = 0;
        for j in 0..n {
            start[j] = pos;
            for c in counts.iter_mut() {
                let k = c[j];
                c[j] = pos;
                pos += k;
            }
        }
        start[n] = pos;
        let nnz = csr.idx.len();
        let mut csc = Csc {
            start,
            vrow: Scratch::zeros(nnz),
            val: Scratch::zeros(nnz),
            entry: Scratch::zeros(if with_entry { nnz } else { 0 }),
        };
        // Each part writes only the positions it was given above.
        struct Out(*mut u32, *mut f32, *mut u32);
        // SAFETY: the parts write disjoint positions of vectors that outlive the loop.
        unsafe impl Sync for Out {}
        let out = Out(
            csc.vrow.as_mut_ptr(),
            csc.val.as_mut_ptr(),
            csc.entry.as_mut_ptr(),
        );
        let out = &out;
        parts
            .par_iter()
            .zip(counts.par_iter_mut())
            .for_each(|(&(r0, r1), cursor)| {
                for r in r0..r1 {
                    for l in 0..nl {
                        for e in csr.band(r, l) {
                            let j = csr.idx[e] as usize;
                            let k = cursor[j];
                            assert!(k < nnz);
                            // SAFETY: k < nnz, and position k belongs to this part alone.
                            unsafe {
                                *out.0.add(k) = (r * nl + l) as u32;
                                *out.1.add(k) = csr.val[e];
                                if with_entry {
                                    *out.2.add(k) = e as u32;
                                }
                            }
                            cursor[j] = k + 1;
                        }
                    }
                }
            });
        csc
    }
}
