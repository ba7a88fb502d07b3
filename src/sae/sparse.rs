//! CPU fast path of the training step for TopK, BatchTopK and Matryoshka SAEs.
//!
//! With a top-k code only k of n latents are non-zero per row (k·B per batch for BatchTopK),
//! so everything after the encoder matrix product is a sparse-dense product: the
//! reconstruction touches k decoder rows, the gradient of the code is needed only at the kept
//! entries, and the decoder/encoder gradients are sums over the kept entries of each latent.
//! For Matryoshka all levels share one ranking of the positive pre-activations, so each row's
//! entries are split into nested bands and the L reconstructions are built incrementally
//! (level l+1 = level l + the next band); the code gradient of an entry in band l is
//! `C_l · W_dec[j]` with `C_l = Σ_{i ≥ l} w_i ∂ℓ_i/∂X̂_i`.
//!
//! BatchTopK selects the k·B largest entries of the whole batch exactly (same order and ties
//! as the dense path) and then shares the TopK code path.
//!
//! The three sparse products — reconstruction (band sums Z_l·W_dec), code gradient (C_l·W_decᵀ
//! at the kept entries) and decoder gradient (Σ_l Z_lᵀ·C_l over latents) — are cache-blocked
//! sparse-dense products ([`blocked_spmm`], [`blocked_sddmm`]) over the gathered matrix laid out
//! chunk-major, with register-resident inner loops ([`gather`]). A Matryoshka code keeps about
//! half of the latents in its last level, and every band still goes through these products:
//! at a sixth of the latents per band, the blocked products beat dense matrix products that
//! would multiply all the zeros of a band.
//!
//! The encoder product is dense (gemm, the routine of candle's CPU matmul), and so is the
//! encoder gradient once the code is dense enough. The nested-level losses and their
//! gradients take one pass over the rows ([`loss::nested_levels`]). Every large array of a
//! step comes from the pool of [`Scratch`] buffers, so steps do not pay page faults on fresh
//! memory. The result equals `Sae::loss_and_grads` up to floating-point summation order
//! (tested below).

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use super::config::{Arch, TopkVariant};
use super::gather;
use super::loss;
use super::model::{Grads, LossParts, Sae};
use super::scratch::Scratch;
use super::{Result, SaeError};

/// Outputs of the fast step besides losses and gradients.
pub(crate) struct FastExtras {
    /// Per-latent number of non-zero activations in the last level.
    pub counts: Vec<u32>,
    /// Mean number of non-zero activations per row in the first level.
    pub active: f64,
    /// BatchTopK: smallest positive code value (feeds the threshold estimate); otherwise None.
    pub min_positive: Option<f32>,
}

/// Whether the fast path handles this model on its device.
pub(crate) fn applicable(model: &Sae) -> bool {
    model.device().is_cpu()
        && model.config.soft_cap <= 0.0
        && match model.config.arch {
            Arch::Topk | Arch::Batchtopk => true,
            Arch::Msae => model.config.topk_variant == TopkVariant::Relu,
            _ => false,
        }
}

/// Run `f` on the contiguous f32 host data of a CPU tensor.
fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (st, layout) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(c) => {
            let s = c.as_slice::<f32>()?;
            let (a, b) = layout
                .contiguous_offsets()
                .ok_or_else(|| SaeError::Data("non-contiguous tensor".into()))?;
            Ok(f(&s[a..b]))
        }
        _ => Err(SaeError::Data("fast path needs CPU tensors".into())),
    }
}

/// Sparse code in row-major (CSR) form; within a row, entries are grouped by level.
struct Csr {
    /// Row offsets into the entry arrays, length B+1.
    offsets: Vec<usize>,
    /// Per row, the end (absolute entry index) of each level band, length B·L.
    band_end: Vec<usize>,
    idx: Scratch<u32>,
    val: Scratch<f32>,
    der: Scratch<f32>,
}

/// One row's entries (latent, value, derivative) and the length of each level band.
type RowEntries = (Vec<(u32, f32, f32)>, Vec<usize>);

/// Buckets of the value histogram in [`nested_thresholds`]: the top 11 bits of a positive
/// float (exponent and three mantissa bits).
const HIST_BUCKETS: usize = 2048;

/// Sort key of a positive code value at latent j: the bits of a positive float order like the
/// float, so keys ascending = values descending, then lower latent first — the order of the
/// dense path.
#[inline]
fn rank_key(v: f32, j: usize) -> u64 {
    ((!v.to_bits() as u64) << 32) | j as u64
}

/// Indices of the positive entries of `row`, ascending, written into `pos` (resized). The
/// loop has no data-dependent branch: random signs would make every other branch a miss.
fn positives(row: &[f32], pos: &mut Vec<u32>) {
    pos.resize(row.len(), 0);
    let mut m = 0;
    for (j, &v) in row.iter().enumerate() {
        pos[m] = j as u32;
        m += (v > 0.0) as usize;
    }
    pos.truncate(m);
}

/// Matryoshka level boundaries of one row of pre-activations whose positive entries are `pos`:
/// for each level but the last, the key ([`rank_key`]) of its last kept entry (0 when it keeps
/// nothing, u64::MAX when it keeps them all), and the number of entries each level keeps.
///
/// A histogram over the top bits of the values finds the bucket holding each boundary; only
/// the members of those few buckets are ranked exactly, so nothing is sorted and the loops
/// over the entries have no data-dependent branches. `hist` is scratch space of
/// [`HIST_BUCKETS`] counters.
fn nested_thresholds(
    row: &[f32],
    pos: &[u32],
    levels: &[usize],
    hist: &mut [u32],
) -> (Vec<u64>, Vec<usize>) {
    let nl = levels.len();
    let npos = pos.len();
    let bucket = |j: u32| (row[j as usize].to_bits() >> 20) as usize;
    hist.fill(0);
    for &j in pos {
        hist[bucket(j)] += 1;
    }
    let ends: Vec<usize> = (0..nl)
        .map(|l| {
            if l + 1 == nl {
                npos
            } else {
                levels[l].min(npos)
            }
        })
        .collect();
    let mut thresholds = vec![u64::MAX; nl - 1];
    // (level, bucket, rank within the bucket) of every boundary inside the positives.
    let mut cuts: Vec<(usize, usize, usize)> = Vec::new();
    let mut pending = (0..nl - 1).filter(|&l| levels[l] < npos).peekable();
    let mut above = 0;
    for h in (0..HIST_BUCKETS).rev() {
        let count = hist[h] as usize;
        while let Some(&l) = pending.peek() {
            if levels[l] > above + count {
                break;
            }
            if levels[l] == 0 {
                thresholds[l] = 0;
            } else {
                cuts.push((l, h, levels[l] - above));
            }
            pending.next();
        }
        above += count;
        if pending.peek().is_none() {
            break;
        }
    }
    // Keys of the entries in boundary buckets, gathered in one pass (the histogram is reused
    // as the mark of those buckets).
    hist.fill(0);
    for &(_, h, _) in &cuts {
        hist[h] = 1;
    }
    let mut members = vec![0u64; npos];
    let mut m = 0;
    for &j in pos {
        members[m] = rank_key(row[j as usize], j as usize);
        m += hist[bucket(j)] as usize;
    }
    members.truncate(m);
    let mut in_bucket: Vec<u64> = Vec::new();
    let mut last_bucket = usize::MAX;
    for &(l, h, rank) in &cuts {
        if h != last_bucket {
            in_bucket.clear();
            in_bucket.extend(
                members
                    .iter()
                    .filter(|&&k| ((!(k >> 32) as u32) >> 20) as usize == h),
            );
            last_bucket = h;
        }
        thresholds[l] = *in_bucket.select_nth_unstable(rank - 1).1;
    }
    (thresholds, ends)
}

/// Per-row selection on the pre-activations `p` + `bias` (a B×n matrix without the latent
/// bias, and that bias): entries (latent, value, derivative) grouped by level band.
fn select_rows(p: &[f32], bias: &[f32], b: usize, n: usize, model: &Sae) -> Csr {
    let cfg = &model.config;
    let variant = cfg.topk_variant;
    let levels: Vec<usize> = if cfg.arch == Arch::Msae {
        model.levels.clone()
    } else {
        vec![cfg.k()]
    };
    let nl = levels.len();
    // (entries, band lengths) per row.
    let rows: Vec<RowEntries> = (0..b)
        .into_par_iter()
        .map_init(
            || {
                (
                    vec![0u32; n],
                    vec![0u32; HIST_BUCKETS],
                    Vec::new(),
                    vec![0f32; n],
                )
            },
            |(buf, hist, pos, biased), r| {
                for ((o, v), c) in biased.iter_mut().zip(&p[r * n..(r + 1) * n]).zip(bias) {
                    *o = v + c;
                }
                let row = &biased[..];
                let mut bands = vec![0usize; nl];
                let mut out = Vec::new();
                if cfg.arch == Arch::Msae {
                    positives(row, pos);
                    let (thresholds, ends) = nested_thresholds(row, pos, &levels, hist);
                    // One pass over the latents in ascending order places each in its band,
                    // so every band comes out sorted by latent, as the blocked products need.
                    let mut cursor = vec![0usize; nl];
                    let mut start = 0;
                    for l in 0..nl {
                        bands[l] = ends[l] - start;
                        cursor[l] = start;
                        start = ends[l];
                    }
                    out.resize(ends[nl - 1], (0, 0.0, 1.0));
                    for &j in pos.iter() {
                        let j = j as usize;
                        let key = rank_key(row[j], j);
                        let l = thresholds.iter().filter(|&&t| key > t).count();
                        out[cursor[l]] = (j as u32, row[j], 1.0);
                        cursor[l] += 1;
                    }
                } else {
                    let k = levels[0].min(n);
                    let by_abs = matches!(variant, TopkVariant::Abs | TopkVariant::Absrelu);
                    super::activation::select_row(row, k, by_abs, buf);
                    buf[..k].sort_unstable();
                    for &j in &buf[..k] {
                        let v = row[j as usize];
                        let (z, d) = match variant {
                            TopkVariant::Plain => (v, 1.0),
                            TopkVariant::Relu => {
                                if v > 0.0 {
                                    (v, 1.0)
                                } else {
                                    continue;
                                }
                            }
                            TopkVariant::Abs | TopkVariant::Absrelu => {
                                let s = if v > 0.0 {
                                    1.0
                                } else if v < 0.0 {
                                    -1.0
                                } else {
                                    0.0
                                };
                                (v.abs(), s)
                            }
                        };
                        out.push((j, z, d));
                    }
                    bands[0] = out.len();
                }
                (out, bands)
            },
        )
        .collect();
    let mut offsets = Vec::with_capacity(b + 1);
    let mut band_end = Vec::with_capacity(b * nl);
    offsets.push(0);
    for (entries, bands) in &rows {
        let mut end = offsets[offsets.len() - 1];
        for len in bands {
            end += len;
            band_end.push(end);
        }
        offsets.push(end + entries.len() - bands.iter().sum::<usize>());
    }
    let total = offsets[b];
    let (mut idx, mut val, mut der) = (
        Scratch::zeros(total),
        Scratch::zeros(total),
        Scratch::zeros(total),
    );
    // Each row's entries are copied into its own slice of the CSR arrays, rows in parallel.
    let mut slices = Vec::with_capacity(b);
    let (mut ri, mut rv, mut rd) = (&mut idx[..], &mut val[..], &mut der[..]);
    for (entries, _) in &rows {
        let len = entries.len();
        let (a, ta) = ri.split_at_mut(len);
        let (v, tv) = rv.split_at_mut(len);
        let (g, tg) = rd.split_at_mut(len);
        slices.push((a, v, g));
        (ri, rv, rd) = (ta, tv, tg);
    }
    rows.par_iter()
        .zip(slices)
        .for_each(|((entries, _), (a, v, g))| {
            for (k, &(j, z, d)) in entries.iter().enumerate() {
                a[k] = j;
                v[k] = z;
                g[k] = d;
            }
        });
    Csr {
        offsets,
        band_end,
        idx,
        val,
        der,
    }
}

/// Flat indices (ascending) of the `total` largest keys of `p` under the order of
/// [`activation::global_topk_mask`](super::activation::global_topk_mask): larger key first,
/// then lower index. A threshold taken from a strided sample keeps the exact selection to a small
/// candidate set; when the sample underestimates the count, every entry is a candidate.
fn global_select(p: &[f32], total: usize, by_abs: bool) -> Vec<u32> {
    use super::activation::{desc_then_index, key};
    let len = p.len();
    let total = total.min(len);
    // Prime stride, so that the sample cycles through the columns of any row width.
    const STRIDE: usize = 61;
    let sample: Vec<f32> = p.iter().step_by(STRIDE).map(|&v| key(v, by_abs)).collect();
    let want = (total / STRIDE) * 5 / 4 + 64;
    let threshold = if total < len && want < sample.len() {
        let mut s = sample;
        s.select_nth_unstable_by(want - 1, |a, b| b.total_cmp(a));
        Some(s[want - 1])
    } else {
        None
    };
    let collect = |t: f32| -> Vec<u32> {
        p.par_chunks(4096)
            .enumerate()
            .flat_map_iter(|(c, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .filter(move |(_, &v)| key(v, by_abs).total_cmp(&t).is_ge())
                    .map(move |(i, _)| (c * 4096 + i) as u32)
            })
            .collect()
    };
    let mut cand = match threshold.map(collect) {
        Some(c) if c.len() >= total => c,
        _ => (0..len as u32).collect(),
    };
    if total < cand.len() && total > 0 {
        cand.select_nth_unstable_by(total - 1, |&a, &b| {
            desc_then_index(key(p[a as usize], by_abs), a, key(p[b as usize], by_abs), b)
        });
    }
    cand.truncate(total);
    cand.sort_unstable();
    cand
}

/// BatchTopK selection: the k·B largest entries of the batch, with the batch code of
/// [`activation::batch_topk`](super::activation::batch_topk) (signed values for the abs
/// variants, ReLU for the ReLU variants).
fn select_batch(p: &[f32], b: usize, n: usize, model: &Sae) -> Csr {
    let variant = model.config.topk_variant;
    let by_abs = super::activation::ranks_by_abs(variant);
    let chosen = global_select(p, (model.config.k() * b).min(b * n), by_abs);
    let relu = matches!(variant, TopkVariant::Relu | TopkVariant::Absrelu);
    let mut offsets = Vec::with_capacity(b + 1);
    let mut band_end = Vec::with_capacity(b);
    let (mut idx, mut val) = (
        Vec::with_capacity(chosen.len()),
        Vec::with_capacity(chosen.len()),
    );
    offsets.push(0);
    let mut it = chosen.iter().peekable();
    for r in 0..b {
        while let Some(&&f) = it.peek() {
            let f = f as usize;
            if f >= (r + 1) * n {
                break;
            }
            it.next();
            let v = p[f];
            if relu && v <= 0.0 {
                continue;
            }
            idx.push((f - r * n) as u32);
            val.push(v);
        }
        offsets.push(idx.len());
        band_end.push(idx.len());
    }
    let copy = |v: &[f32]| {
        let mut s = Scratch::zeros(v.len());
        s.copy_from_slice(v);
        s
    };
    let mut idx_s = Scratch::zeros(idx.len());
    idx_s.copy_from_slice(&idx);
    Csr {
        offsets,
        band_end,
        der: copy(&vec![1.0; idx.len()]),
        idx: idx_s,
        val: copy(&val),
    }
}

/// Choice between the sparse and the dense encoder-gradient product, and the cache blocking
/// (tests force each path and small blocks).
#[derive(Clone, Copy)]
struct Paths {
    /// Dense encoder-gradient product (x − b_pre)ᵀ·dP; None: chosen by the density of the code.
    dense_dp: Option<bool>,
    tiling: Tiling,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            dense_dp: None,
            tiling: TILING,
        }
    }
}

impl Csr {
    /// Number of rows.
    fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of level bands per row.
    fn levels(&self) -> usize {
        self.band_end.len() / self.rows().max(1)
    }

    /// Entry range of band `l` of row `r`.
    fn band(&self, r: usize, l: usize) -> std::ops::Range<usize> {
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
struct Csc {
    /// Offsets of each latent's entries, length n+1.
    start: Vec<usize>,
    /// Row of C = [B, L, d] the entry's code gradient comes from: row · L + level
    /// (ascending within a latent).
    vrow: Scratch<u32>,
    /// Code value.
    val: Scratch<f32>,
    /// Index of the entry in the CSR arrays (empty unless asked for).
    entry: Scratch<u32>,
}

/// Rows per part of the parallel transposition (a fixed split: the result never depends on
/// it, and the work does not depend on the thread count).
const TRANSPOSE_ROWS: usize = 256;

impl Csc {
    /// Transposes `csr` by a counting sort over parts of rows: each part counts its entries
    /// per latent, a prefix sum over (latent, part) gives every part its own output positions,
    /// and the parts then scatter their entries in parallel.
    fn new(csr: &Csr, n: usize, with_entry: bool) -> Csc {
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

/// Cache blocking of the sparse products.
#[derive(Clone, Copy)]
struct Tiling {
    /// Rows of the gathered matrix per block: a block's column chunk (768 × 64 floats,
    /// 192 KiB) stays in a 512 KiB L2 cache while a group of output rows takes its entries.
    gather_block: usize,
    /// Output rows per parallel task.
    out_group: usize,
}

/// Chosen on a 2-core AVX2 machine (512 KiB L2 per core): blocks of 512 to 3072 rows and
/// groups of 256 to 512 rows measured within a few per cent of this one.
const TILING: Tiling = Tiling {
    gather_block: 768,
    out_group: 512,
};

/// Column chunks of a width-`d` row: (start, end) pairs of at most `width` columns.
fn chunks(d: usize, width: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..d)
        .step_by(width)
        .map(move |c0| (c0, (c0 + width).min(d)))
}

/// `m` (rows × d, row-major) rearranged chunk-major: for each column chunk of [`chunks`], a
/// contiguous rows × width slab. The rows of a block of a slab then lie on few memory pages,
/// which the gathers of [`blocked_spmm`] need (row-major, a 64-float piece of each row would
/// sit on its own page).
fn chunk_major(m: &[f32], d: usize, width: usize) -> Scratch<f32> {
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
fn block_offsets(
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
struct Gathered {
    m: Scratch<f32>,
    rows: usize,
    block: usize,
    blocks: usize,
}

impl Gathered {
    fn new(m: &[f32], d: usize, tiling: Tiling) -> Self {
        let rows = m.len() / d.max(1);
        Gathered {
            m: chunk_major(m, d, gather::CHUNK),
            rows,
            block: tiling.gather_block,
            blocks: rows.div_ceil(tiling.gather_block).max(1),
        }
    }

    /// The rows × (c1 − c0) slab of column chunk c0..c1.
    fn slab(&self, c0: usize, c1: usize) -> &[f32] {
        &self.m[self.rows * c0..self.rows * c1]
    }

    /// [`block_offsets`] of output rows `rows` against these blocks.
    fn offsets(
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
fn blocked_spmm(
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
fn blocked_sddmm(
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

/// Reconstructions of every level, [L, B, d]: band sums from one blocked product (band l of
/// row r is output row l·B + r), then level l = b_pre + bands 0..=l.
fn reconstruct(
    csr: &Csr,
    w: &Gathered,
    d: usize,
    pre_bias: &[f32],
    tiling: Tiling,
) -> Scratch<f32> {
    let (b, nl) = (csr.rows(), csr.levels());
    let mut out = Scratch::zeros(b * nl * d);
    let range = |o: usize| csr.band(o % b, o / b);
    blocked_spmm(range, &csr.idx, &csr.val, w, d, &mut out, tiling);
    for l in 0..nl {
        let (prev, cur) = out.split_at_mut(l * b * d);
        let cur = &mut cur[..b * d];
        if l == 0 {
            cur.par_chunks_mut(d).for_each(|row| {
                for (o, p) in row.iter_mut().zip(pre_bias) {
                    *o += p;
                }
            });
        } else {
            cur.par_chunks_mut(d)
                .zip(prev[(l - 1) * b * d..].par_chunks(d))
                .for_each(|(row, p)| {
                    for (o, p) in row.iter_mut().zip(p) {
                        *o += p;
                    }
                });
        }
    }
    out
}

/// Code gradient at every entry (CSR order): dP_e = der_e · C_{lev(e)}[row] · W_dec[j], from
/// `c` = C as [B, L, d] (row r·L + l of C is band l of row r), one blocked product.
fn code_grad(csr: &Csr, c: &[f32], w: &Gathered, d: usize, tiling: Tiling) -> Scratch<f32> {
    let mut dp = Scratch::zeros(csr.idx.len());
    let starts: Vec<usize> = std::iter::once(csr.offsets[0])
        .chain(csr.band_end.iter().copied())
        .collect();
    blocked_sddmm(&starts, &csr.idx, c, w, d, &mut dp, tiling);
    dp.par_iter_mut()
        .zip(csr.der.par_iter())
        .for_each(|(o, g)| *o *= g);
    dp
}

/// `dst` (m × n, row-major) = lhs · rhs, where element (i, t) of lhs lies at
/// i·lhs_rs + t·lhs_cs and element (t, j) of rhs at t·rhs_rs + j·rhs_cs: one dense product on
/// all rayon threads by the routine candle's CPU matmul calls, written into memory the caller
/// owns (a pooled buffer spares the page faults of a fresh result).
#[allow(clippy::too_many_arguments)]
fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    dst: &mut [f32],
) {
    assert_eq!(dst.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    assert!((m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len());
    assert!((k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len());
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assertions keep every element the strides address inside the slices, and
    // dst (m × n, row-major) is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Σ over the batch of the per-entry values `v` (CSR order) for each latent: parts of
/// [`TRANSPOSE_ROWS`] rows sum in parallel, then the parts are added in order.
fn latent_sums(csr: &Csr, v: &[f32], n: usize, dev: &candle_core::Device) -> Result<Tensor> {
    let b = csr.rows();
    let parts: Vec<Vec<f32>> = (0..b)
        .step_by(TRANSPOSE_ROWS)
        .collect::<Vec<_>>()
        .par_iter()
        .map(|&r0| {
            let mut sums = vec![0f32; n];
            for e in csr.offsets[r0]..csr.offsets[(r0 + TRANSPOSE_ROWS).min(b)] {
                sums[csr.idx[e] as usize] += v[e];
            }
            sums
        })
        .collect();
    let mut total = vec![0f32; n];
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    Ok(Tensor::from_vec(total, n, dev)?)
}

/// Loss and gradients of a TopK / Matryoshka model on a standardised batch `x`.
pub(crate) fn loss_and_grads(
    model: &Sae,
    x: &Tensor,
    nmse_reference: Option<&Tensor>,
) -> Result<(LossParts, Grads, FastExtras)> {
    loss_and_grads_with(model, x, nmse_reference, Paths::default())
}

/// As [`loss_and_grads`], with the sparse / dense choices of `paths`.
fn loss_and_grads_with(
    model: &Sae,
    x: &Tensor,
    nmse_reference: Option<&Tensor>,
    paths: Paths,
) -> Result<(LossParts, Grads, FastExtras)> {
    let (b, d) = x.dims2()?;
    let n = model.n;
    let dev = model.device().clone();
    let pre_bias = model.pre_bias.to_vec1::<f32>()?;
    let mut xc = Scratch::zeros(b * d);
    with_slice(x, |x| {
        xc.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, x)| {
                for ((o, v), m) in o.iter_mut().zip(x).zip(&pre_bias) {
                    *o = v - m;
                }
            })
    })?;
    let mut p = Scratch::zeros(b * n);
    with_slice(&model.encoder, |w| {
        matmul_into(b, n, d, &xc, (d, 1), w, (n, 1), &mut p)
    })?;
    // Per-row selection adds the latent bias row by row, in cache; the batch-wide one needs
    // the whole biased matrix.
    let bias = model.latent_bias.to_vec1::<f32>()?;
    let csr = if model.config.arch == Arch::Batchtopk {
        p.par_chunks_mut(n).for_each(|row| {
            for (v, c) in row.iter_mut().zip(&bias) {
                *v += c;
            }
        });
        select_batch(&p, b, n, model)
    } else {
        select_rows(&p, &bias, b, n, model)
    };
    drop(p);
    let nl = model.level_weights.len();
    let w_dec = model
        .decoder
        .to_dtype(candle_core::DType::F32)?
        .contiguous()?;
    // One chunk-major copy of the decoder serves the reconstruction and the code gradient.
    let w_gathered = with_slice(&w_dec, |w| Gathered::new(w, d, paths.tiling))?;
    let recon = reconstruct(&csr, &w_gathered, d, &pre_bias, paths.tiling);

    // Losses and C_l = Σ_{i ≥ l} w_i ∂ℓ_i/∂X̂_i (suffix sums), C as [B, L, d].
    let reference = nmse_reference.map(|m| m.to_vec1::<f32>()).transpose()?;
    let mut c = Scratch::zeros(b * nl * d);
    let rec_total = with_slice(x, |x| {
        loss::nested_levels(
            model.config.loss,
            &recon,
            x,
            reference.as_deref(),
            &model.level_weights,
            d,
            &mut c,
        )
    })?;
    drop(recon);
    let mut g_pre_dec = vec![0f32; d];
    for row in c.chunks(nl * d) {
        for (g, v) in g_pre_dec.iter_mut().zip(&row[..d]) {
            *g += v;
        }
    }
    let g_pre_dec = Tensor::from_vec(g_pre_dec, d, &dev)?;

    let dp = code_grad(&csr, &c, &w_gathered, d, paths.tiling);
    drop(w_gathered);

    let mut counts = vec![0u32; n];
    for (&j, &v) in csr.idx.iter().zip(csr.val.iter()) {
        if v != 0.0 {
            counts[j as usize] += 1;
        }
    }
    let active = (0..b)
        .map(|r| csr.band(r, 0).filter(|&e| csr.val[e] != 0.0).count())
        .sum::<usize>() as f64
        / b as f64;
    let min_positive = if model.config.arch == Arch::Batchtopk {
        csr.val
            .iter()
            .copied()
            .filter(|&v| v > 0.0)
            .min_by(f32::total_cmp)
    } else {
        None
    };

    // A code dense enough makes the encoder gradient (x − b_pre)ᵀ·dP cheaper as one dense
    // matrix product than as per-latent sums of gathered rows.
    let dense_dp = paths.dense_dp.unwrap_or(csr.idx.len() * 4 > b * n);
    let csc = Csc::new(&csr, n, !dense_dp);
    let mut g_dec = vec![0f32; n * d];
    let range = |j: usize| csc.start[j]..csc.start[j + 1];
    let c_gathered = Gathered::new(&c, d, paths.tiling);
    blocked_spmm(
        range,
        &csc.vrow,
        &csc.val,
        &c_gathered,
        d,
        &mut g_dec,
        paths.tiling,
    );
    drop(c_gathered);
    drop(c);
    let g_dec = Tensor::from_vec(g_dec, (n, d), &dev)?;
    let (g_enc, g_lat) = if dense_dp {
        let mut dense = Scratch::zeros(b * n);
        dense.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
            for e in csr.offsets[r]..csr.offsets[r + 1] {
                row[csr.idx[e] as usize] = dp[e];
            }
        });
        let mut g_enc = vec![0f32; d * n];
        matmul_into(d, n, b, &xc, (1, d), &dense, (n, 1), &mut g_enc);
        (
            Tensor::from_vec(g_enc, (d, n), &dev)?,
            latent_sums(&csr, &dp, n, &dev)?,
        )
    } else {
        let dp_t: Vec<f32> = csc.entry.iter().map(|&e| dp[e as usize]).collect();
        let g_lat: Vec<f32> = (0..n)
            .map(|j| dp_t[csc.start[j]..csc.start[j + 1]].iter().sum())
            .collect();
        // Batch row of each entry; with one level it is the row of C.
        let rows: Vec<u32> = if nl == 1 {
            csc.vrow.to_vec()
        } else {
            csc.vrow.iter().map(|&v| v / nl as u32).collect()
        };
        let mut g_enc_t = vec![0f32; n * d];
        let range = |j: usize| csc.start[j]..csc.start[j + 1];
        let xc_gathered = Gathered::new(&xc, d, paths.tiling);
        blocked_spmm(
            range,
            &rows,
            &dp_t,
            &xc_gathered,
            d,
            &mut g_enc_t,
            paths.tiling,
        );
        (
            Tensor::from_vec(g_enc_t, (n, d), &dev)?.t()?.contiguous()?,
            Tensor::from_vec(g_lat, n, &dev)?,
        )
    };
    let g_pre = (g_pre_dec - model.encoder.matmul(&g_lat.unsqueeze(1)?)?.squeeze(1)?)?;
    let rec = Tensor::new(rec_total as f32, &dev)?;
    let zero = Tensor::zeros((), candle_core::DType::F32, &dev)?;
    Ok((
        LossParts {
            total: rec.clone(),
            rec,
            sparsity: zero,
        },
        Grads(vec![g_pre, g_enc, g_lat, g_dec]),
        FastExtras {
            counts,
            active,
            min_positive,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::config::{MsaeWeighting, RecLoss, TrainConfig};
    use candle_core::Device;

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 + 1e-4 * y.abs(),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// A 6 → 24 model with k = 5 (Matryoshka levels 3, 6, 12, 24) and a batch of 10 rows.
    fn small_case(
        arch: Arch,
        variant: TopkVariant,
        weighting: MsaeWeighting,
        lossk: RecLoss,
    ) -> (Sae, Tensor) {
        let cfg = TrainConfig {
            arch,
            topk_variant: variant,
            msae_weighting: weighting,
            loss: lossk,
            n_latents: Some(24),
            k: Some(5),
            nesting_start: 3,
            ..Default::default()
        };
        let mut m = Sae::new(&cfg, 6, &Device::Cpu).unwrap();
        m.scale_to_unit_norm().unwrap();
        m.pre_bias = Tensor::new(&[0.1f32, -0.2, 0.05, 0.0, 0.3, 0.1], &Device::Cpu).unwrap();
        let lat: Vec<f32> = (0..24).map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.05).collect();
        m.latent_bias = Tensor::from_vec(lat, 24, &Device::Cpu).unwrap();
        let xs: Vec<f32> = (0..60).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3).collect();
        (m, Tensor::from_vec(xs, (10, 6), &Device::Cpu).unwrap())
    }

    #[test]
    fn fast_path_matches_reference_backward() {
        let cases = [
            (
                Arch::Topk,
                TopkVariant::Relu,
                MsaeWeighting::Uw,
                RecLoss::Nmse,
            ),
            (
                Arch::Topk,
                TopkVariant::Plain,
                MsaeWeighting::Uw,
                RecLoss::Mse,
            ),
            (
                Arch::Topk,
                TopkVariant::Abs,
                MsaeWeighting::Uw,
                RecLoss::Cosine,
            ),
            (
                Arch::Msae,
                TopkVariant::Relu,
                MsaeWeighting::Uw,
                RecLoss::Nmse,
            ),
            (
                Arch::Msae,
                TopkVariant::Relu,
                MsaeWeighting::Rw,
                RecLoss::Mse,
            ),
            (
                Arch::Batchtopk,
                TopkVariant::Relu,
                MsaeWeighting::Uw,
                RecLoss::Nmse,
            ),
            (
                Arch::Batchtopk,
                TopkVariant::Plain,
                MsaeWeighting::Uw,
                RecLoss::Mse,
            ),
            (
                Arch::Batchtopk,
                TopkVariant::Abs,
                MsaeWeighting::Uw,
                RecLoss::Nmse,
            ),
            (
                Arch::Batchtopk,
                TopkVariant::Absrelu,
                MsaeWeighting::Uw,
                RecLoss::Cosine,
            ),
        ];
        for (arch, variant, weighting, lossk) in cases {
            let (m, x) = small_case(arch, variant, weighting, lossk);
            assert!(applicable(&m));
            let fwd = m.forward_train(&x).unwrap();
            let (lp, g) = m.loss_and_grads(&fwd, None).unwrap();
            // Small blocks and groups, so that the blocking itself is exercised.
            let tilings = [
                TILING,
                Tiling {
                    gather_block: 5,
                    out_group: 3,
                },
            ];
            for (dense_dp, tiling) in [false, true]
                .into_iter()
                .flat_map(|dp| tilings.map(|t| (dp, t)))
            {
                let paths = Paths {
                    dense_dp: Some(dense_dp),
                    tiling,
                };
                let (fp, fg, extra) = loss_and_grads_with(&m, &x, None, paths).unwrap();
                let what = format!(
                    "{arch:?} {variant:?} {weighting:?} {lossk:?} {dense_dp} {}",
                    tiling.gather_block
                );
                close(&fp.total, &lp.total, &what);
                for (i, (a, b)) in fg.0.iter().zip(&g.0).enumerate() {
                    close(a, b, &format!("{what} grad {i}"));
                }
                let mut stats = crate::sae::model::ActivationStats {
                    counts: vec![0; 24],
                    ..Default::default()
                };
                stats.update(&fwd.levels.last().unwrap().z).unwrap();
                assert_eq!(
                    stats.counts,
                    extra.counts.iter().map(|&c| c as u64).collect::<Vec<_>>()
                );
                let act = loss::mean_active(&fwd.levels[0].z)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!((extra.active - act as f64).abs() < 1e-6);
                if arch == Arch::Batchtopk {
                    assert_eq!(
                        extra.min_positive,
                        crate::sae::activation::min_positive(&fwd.levels[0].z).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn fast_path_matches_reference_backward_on_full_chunks() {
        // d = 136: two full 64-column chunks (the AVX2 kernels where available) and a
        // remainder; 40 rows × 5 levels give more gathered rows than a small block holds.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (arch, variant) in [
            (Arch::Msae, TopkVariant::Relu),
            (Arch::Topk, TopkVariant::Relu),
            (Arch::Batchtopk, TopkVariant::Abs),
        ] {
            let cfg = TrainConfig {
                arch,
                topk_variant: variant,
                n_latents: Some(96),
                k: Some(12),
                nesting_start: 6,
                ..Default::default()
            };
            let (d, b) = (136, 40);
            let mut m = Sae::new(&cfg, d, &Device::Cpu).unwrap();
            m.scale_to_unit_norm().unwrap();
            let lat: Vec<f32> = (0..96).map(|_| rng.random_range(-0.05..0.05)).collect();
            m.latent_bias = Tensor::from_vec(lat, 96, &Device::Cpu).unwrap();
            let xs: Vec<f32> = (0..b * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x = Tensor::from_vec(xs, (b, d), &Device::Cpu).unwrap();
            let fwd = m.forward_train(&x).unwrap();
            let (lp, g) = m.loss_and_grads(&fwd, None).unwrap();
            for (dense_dp, gather_block) in [(false, 1536), (false, 7), (true, 7)] {
                let paths = Paths {
                    dense_dp: Some(dense_dp),
                    tiling: Tiling {
                        gather_block,
                        out_group: 4,
                    },
                };
                let (fp, fg, _) = loss_and_grads_with(&m, &x, None, paths).unwrap();
                let what = format!("{arch:?} {dense_dp} {gather_block}");
                close(&fp.total, &lp.total, &what);
                for (i, (a, b)) in fg.0.iter().zip(&g.0).enumerate() {
                    close(a, b, &format!("{what} grad {i}"));
                }
            }
        }
    }

    #[test]
    fn nested_thresholds_match_a_full_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let levels = [2usize, 4, 8, 16, 32, 64, 100];
        let mut hist = vec![0u32; HIST_BUCKETS];
        for case in 0..60 {
            let n = 100;
            // Few distinct values (ties decided by the latent), some rows mostly negative, one
            // without any positive value, and wide-ranging magnitudes.
            let row: Vec<f32> = (0..n)
                .map(|_| match case % 4 {
                    0 => (rng.random_range(-20i32..20) as f32) * 0.25,
                    1 => rng.random_range(-3.0f32..0.5),
                    2 => -1.0,
                    _ => rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-6..6)),
                })
                .collect();
            let mut keys: Vec<u64> = (0..n)
                .filter(|&j| row[j] > 0.0)
                .map(|j| rank_key(row[j], j))
                .collect();
            keys.sort_unstable();
            let mut pos = Vec::new();
            positives(&row, &mut pos);
            let want: Vec<u32> = (0..n as u32).filter(|&j| row[j as usize] > 0.0).collect();
            assert_eq!(pos, want);
            let (thresholds, ends) = nested_thresholds(&row, &pos, &levels, &mut hist);
            assert_eq!(ends[levels.len() - 1], keys.len(), "case {case}");
            for l in 0..levels.len() - 1 {
                let k = levels[l].min(keys.len());
                assert_eq!(ends[l], k, "case {case} level {l}");
                let want = if k < keys.len() {
                    keys[k - 1]
                } else {
                    u64::MAX
                };
                assert_eq!(thresholds[l], want, "case {case} level {l}");
            }
        }
    }

    #[test]
    fn global_selection_matches_full_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (len, total) in [
            (100_000usize, 3_000usize),
            (50_000, 49_000),
            (200, 50),
            (61, 0),
        ] {
            // Few distinct values, so that ties are decided by the index.
            let p: Vec<f32> = (0..len)
                .map(|_| (rng.random_range(-50i32..50) as f32) * 0.1)
                .collect();
            for by_abs in [false, true] {
                let mut want = vec![0u32; len];
                crate::sae::activation::select_row(&p, total, by_abs, &mut want);
                let mut want = want[..total.min(len)].to_vec();
                want.sort_unstable();
                assert_eq!(
                    global_select(&p, total, by_abs),
                    want,
                    "{len} {total} {by_abs}"
                );
            }
        }
    }
}
