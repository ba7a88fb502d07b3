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
//! A Matryoshka code is far from sparse in its upper bands (the last level keeps every positive
//! pre-activation, about half of the latents), and there per-entry products are slower than
//! dense ones: a band holding more than [`DENSE_BAND`] of the B·n entries is written into a
//! B×n matrix and takes dense matrix products for its reconstruction (Z_l·W_dec), code gradient
//! (C_l·W_decᵀ) and decoder gradient (Z_lᵀ·C_l). The sparse products process rows in blocks
//! tall enough that each decoder row is reused within a block.
//!
//! The encoder product is dense (candle matmul), and so is the encoder gradient once the code
//! is dense enough. The result equals `Sae::loss_and_grads` up to floating-point summation
//! order (tested below).

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use super::config::{Arch, TopkVariant};
use super::loss;
use super::model::{Grads, LossParts, Sae};
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
    idx: Vec<u32>,
    val: Vec<f32>,
    der: Vec<f32>,
}

/// One row's entries (latent, value, derivative) and the length of each level band.
type RowEntries = (Vec<(u32, f32, f32)>, Vec<usize>);

/// Per-row selection: entries (latent, value, derivative) grouped by level band.
fn select_rows(p: &[f32], b: usize, n: usize, model: &Sae) -> Csr {
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
            || vec![0u32; n],
            |buf, r| {
                let row = &p[r * n..(r + 1) * n];
                let mut bands = vec![0usize; nl];
                let mut out = Vec::new();
                if cfg.arch == Arch::Msae {
                    // Positive entries; negative ones have zero code and zero derivative.
                    let mut pos: Vec<u32> =
                        (0..n as u32).filter(|&j| row[j as usize] > 0.0).collect();
                    let cmp = |a: &u32, c: &u32| {
                        row[*c as usize].total_cmp(&row[*a as usize]).then(a.cmp(c))
                    };
                    // Nested selection: top k_{L−2} within all, then k_{L−3} within that, …
                    let mut prefix = pos.len();
                    let mut ends = vec![0usize; nl];
                    ends[nl - 1] = pos.len();
                    for l in (0..nl - 1).rev() {
                        let kk = levels[l].min(prefix);
                        if kk > 0 && kk < prefix {
                            pos[..prefix].select_nth_unstable_by(kk - 1, cmp);
                        }
                        prefix = kk;
                        ends[l] = kk;
                    }
                    let mut start = 0;
                    for l in 0..nl {
                        bands[l] = ends[l] - start;
                        start = ends[l];
                    }
                    out.extend(pos.iter().map(|&j| (j, row[j as usize], 1.0f32)));
                } else {
                    let k = levels[0].min(n);
                    let by_abs = matches!(variant, TopkVariant::Abs | TopkVariant::Absrelu);
                    super::activation::select_row(row, k, by_abs, buf);
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
    let total: usize = rows.iter().map(|r| r.0.len()).sum();
    let mut csr = Csr {
        offsets: Vec::with_capacity(b + 1),
        band_end: Vec::with_capacity(b * nl),
        idx: Vec::with_capacity(total),
        val: Vec::with_capacity(total),
        der: Vec::with_capacity(total),
    };
    csr.offsets.push(0);
    for (entries, bands) in rows {
        let mut end = csr.idx.len();
        for len in bands {
            end += len;
            csr.band_end.push(end);
        }
        for (j, v, d) in entries {
            csr.idx.push(j);
            csr.val.push(v);
            csr.der.push(d);
        }
        csr.offsets.push(csr.idx.len());
    }
    csr
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
    let mut csr = Csr {
        offsets: Vec::with_capacity(b + 1),
        band_end: Vec::with_capacity(b),
        idx: Vec::with_capacity(chosen.len()),
        val: Vec::with_capacity(chosen.len()),
        der: Vec::with_capacity(chosen.len()),
    };
    csr.offsets.push(0);
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
            csr.idx.push((f - r * n) as u32);
            csr.val.push(v);
            csr.der.push(1.0);
        }
        csr.offsets.push(csr.idx.len());
        csr.band_end.push(csr.idx.len());
    }
    csr
}

/// Density above which a level band is handled by dense matrix products on a B×n matrix that
/// holds only the band's entries: measured on a 2-core AVX2 machine, the sparse per-entry
/// products of a band are slower than one dense product once the band holds about a tenth of
/// the code (Matryoshka's upper bands hold a sixth each).
const DENSE_BAND: f64 = 0.1;

/// Choice between sparse and dense products (tests force each path).
#[derive(Clone, Copy)]
struct Paths {
    /// Dense encoder-gradient product (x − b_pre)ᵀ·dP; None: chosen by the density of the code.
    dense_dp: Option<bool>,
    /// A band is dense when it holds more than this fraction of the B·n code entries.
    dense_band: f64,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            dense_dp: None,
            dense_band: DENSE_BAND,
        }
    }
}

impl Csr {
    /// Entry range of band `l` of row `r`.
    fn band(&self, r: usize, l: usize, nl: usize) -> std::ops::Range<usize> {
        let start = if l == 0 {
            self.offsets[r]
        } else {
            self.band_end[r * nl + l - 1]
        };
        start..self.band_end[r * nl + l]
    }
}

/// Row blocks of `rows` rows; per block, `Entries::block_columns` of its rows.
struct Blocks {
    rows: usize,
    buckets: Vec<(Vec<usize>, Vec<u32>)>,
}

/// The entries with their row and level, and which levels' bands use dense products.
struct Entries<'a> {
    csr: &'a Csr,
    row_of: Vec<u32>,
    lev_of: Vec<u8>,
    dense: Vec<bool>,
    /// Number of entries in sparse bands.
    sparse_nnz: usize,
}

impl<'a> Entries<'a> {
    fn new(csr: &'a Csr, b: usize, n: usize, nl: usize, dense_band: f64) -> Self {
        let nnz = csr.idx.len();
        let mut row_of = vec![0u32; nnz];
        let mut lev_of = vec![0u8; nnz];
        let mut band_nnz = vec![0usize; nl];
        for r in 0..b {
            for (l, count) in band_nnz.iter_mut().enumerate() {
                let range = csr.band(r, l, nl);
                *count += range.len();
                for e in range {
                    row_of[e] = r as u32;
                    lev_of[e] = l as u8;
                }
            }
        }
        let dense: Vec<bool> = band_nnz
            .iter()
            .map(|&c| c > 0 && c as f64 > dense_band * (b * n) as f64)
            .collect();
        let sparse_nnz = band_nnz
            .iter()
            .zip(&dense)
            .filter(|(_, &dn)| !dn)
            .map(|(c, _)| c)
            .sum();
        Entries {
            csr,
            row_of,
            lev_of,
            dense,
            sparse_nnz,
        }
    }

    /// Rows per block of the cache-blocked sparse products: enough rows that each decoder row
    /// is used about eight times per block (a block reads each decoder row it needs once, so
    /// sparser codes need taller blocks), at least 32.
    fn block_rows(&self, b: usize, n: usize) -> usize {
        let per_row = self.sparse_nnz.div_ceil(b.max(1)).max(1);
        (8 * n).div_ceil(per_row).max(32).min(b.max(1))
    }

    /// Sparse-band entries of rows `r0..r1` bucketed by latent (rows ascending within a
    /// latent): returns the bucket offsets (length n+1) and the entry indices.
    fn block_columns(&self, r0: usize, r1: usize, n: usize) -> (Vec<usize>, Vec<u32>) {
        let csr = self.csr;
        let sparse = |e: &usize| !self.dense[self.lev_of[*e] as usize];
        let (e0, e1) = (csr.offsets[r0], csr.offsets[r1]);
        let mut col_start = vec![0usize; n + 1];
        for e in (e0..e1).filter(sparse) {
            col_start[csr.idx[e] as usize + 1] += 1;
        }
        for j in 0..n {
            col_start[j + 1] += col_start[j];
        }
        let mut cursor = col_start[..n].to_vec();
        let mut by_col = vec![0u32; col_start[n]];
        for e in (e0..e1).filter(sparse) {
            let j = csr.idx[e] as usize;
            by_col[cursor[j]] = e as u32;
            cursor[j] += 1;
        }
        (col_start, by_col)
    }

    /// The bucketed entries of every row block, built once per step for the three sparse
    /// products that traverse them.
    fn blocks(&self, block: usize, n: usize) -> Blocks {
        let b = self.csr.offsets.len() - 1;
        let starts: Vec<usize> = (0..b).step_by(block).collect();
        Blocks {
            rows: block,
            buckets: starts
                .par_iter()
                .map(|&r0| self.block_columns(r0, (r0 + block).min(b), n))
                .collect(),
        }
    }

    /// Levels whose bands use dense products.
    fn dense_levels(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.dense.len()).filter(|&l| self.dense[l])
    }

    /// The code restricted to band `l`, as a dense B×n matrix.
    fn band_matrix(&self, l: usize, n: usize, dev: &candle_core::Device) -> Result<Tensor> {
        let csr = self.csr;
        let (b, nl) = (csr.offsets.len() - 1, self.dense.len());
        let mut z = vec![0f32; b * n];
        for r in 0..b {
            for e in csr.band(r, l, nl) {
                z[r * n + csr.idx[e] as usize] = csr.val[e];
            }
        }
        Ok(Tensor::from_vec(z, (b, n), dev)?)
    }
}

#[inline]
fn axpy(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // 32 partial sums: the loop vectorises into eight independent accumulator registers, so
    // that the additions do not wait on one another.
    const W: usize = 32;
    let mut acc = [0f32; W];
    let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
    let mut s: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    s += acc.iter().sum::<f32>();
    s
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
    let xc = x.broadcast_sub(&model.pre_bias)?;
    let p = xc
        .matmul(&model.encoder)?
        .broadcast_add(&model.latent_bias)?;
    let csr = with_slice(&p, |p| {
        if model.config.arch == Arch::Batchtopk {
            select_batch(p, b, n, model)
        } else {
            select_rows(p, b, n, model)
        }
    })?;
    drop(p);
    let nl = model.level_weights.len();
    let w_dec = model
        .decoder
        .to_dtype(candle_core::DType::F32)?
        .contiguous()?;
    let pre_bias = model.pre_bias.to_vec1::<f32>()?;
    let ent = Entries::new(&csr, b, n, nl, paths.dense_band);
    let blocks = ent.blocks(ent.block_rows(b, n), n);
    let bands = ent
        .dense_levels()
        .map(|l| Ok((l, ent.band_matrix(l, n, &dev)?)))
        .collect::<Result<Vec<_>>>()?;

    let recon = reconstruct(&ent, &w_dec, &pre_bias, &bands, &blocks)?;

    // Losses and C_l = Σ_{i ≥ l} w_i ∂ℓ_i/∂X̂_i (suffix sums).
    let mut rec_total: Option<Tensor> = None;
    let mut grads_l = Vec::with_capacity(nl);
    for l in 0..nl {
        let w = model.level_weights[l];
        let lg = loss::reconstruction(model.config.loss, &recon.get(l)?, x, nmse_reference, true)?;
        let v = (lg.value * w)?;
        rec_total = Some(match rec_total {
            Some(t) => (t + v)?,
            None => v,
        });
        let g = lg
            .grad
            .ok_or_else(|| SaeError::Config("missing gradient".into()))?;
        grads_l.push(if w == 1.0 { g } else { (g * w)? });
    }
    let mut suffix = vec![grads_l[nl - 1].clone()];
    for l in (0..nl - 1).rev() {
        let s = (&grads_l[l]
            + suffix
                .last()
                .ok_or_else(|| SaeError::Config("no level".into()))?)?;
        suffix.push(s);
    }
    suffix.reverse();
    let c = Tensor::stack(&suffix, 0)?.contiguous()?;
    let g_pre_dec = suffix[0].sum(0)?;

    let dp = code_grad(&ent, &c, &w_dec, &blocks)?;

    let mut counts = vec![0u32; n];
    for (&j, &v) in csr.idx.iter().zip(&csr.val) {
        if v != 0.0 {
            counts[j as usize] += 1;
        }
    }
    let active = (0..b)
        .map(|r| {
            (csr.offsets[r]..csr.band_end[r * nl])
                .filter(|&e| csr.val[e] != 0.0)
                .count()
        })
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

    // When the code is dense enough, the encoder-side sums are one dense matrix product
    // (x − b_pre)ᵀ·dP, far more cache-friendly than per-entry row updates; dense bands always
    // take it, since the sparse sums visit only the entries of sparse bands.
    let dense_dp = !bands.is_empty() || paths.dense_dp.unwrap_or(csr.idx.len() * 16 > b * n);
    let (g_dec, g_enc_t, g_lat) = param_grads(&ent, &c, &xc, &dp, dense_dp, n, &blocks)?;
    let mut g_dec = Tensor::from_vec(g_dec, (n, d), &dev)?;
    for (l, z) in &bands {
        g_dec = (g_dec + z.t()?.matmul(&c.get(*l)?)?)?;
    }
    let (g_enc, g_lat) = if dense_dp {
        let mut dense = vec![0f32; b * n];
        for r in 0..b {
            for e in csr.offsets[r]..csr.offsets[r + 1] {
                dense[r * n + csr.idx[e] as usize] = dp[e];
            }
        }
        let dense = Tensor::from_vec(dense, (b, n), &dev)?;
        (xc.t()?.matmul(&dense)?, dense.sum(0)?)
    } else {
        (
            Tensor::from_vec(g_enc_t, (n, d), &dev)?.t()?.contiguous()?,
            Tensor::from_vec(g_lat, n, &dev)?,
        )
    };
    let g_pre = (g_pre_dec - model.encoder.matmul(&g_lat.unsqueeze(1)?)?.squeeze(1)?)?;
    let rec = rec_total.ok_or_else(|| SaeError::Config("no level".into()))?;
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

/// Reconstructions of every level, [L, B, d]. Sparse bands: rows are processed in blocks (one
/// per task); inside a block the entries are visited latent by latent, so each decoder row is
/// read once per block, and the contribution of each band is accumulated separately in a
/// buffer [B, L, d]. Dense bands (`bands`: level and B×n band code) add Z_l·W_dec. Level l is
/// then b_pre + the prefix sum of bands 0..=l.
fn reconstruct(
    ent: &Entries,
    w_dec: &Tensor,
    pre_bias: &[f32],
    bands: &[(usize, Tensor)],
    blocks: &Blocks,
) -> Result<Tensor> {
    let block = blocks.rows;
    let (b, nl) = (ent.csr.offsets.len() - 1, ent.dense.len());
    let (n, d) = w_dec.dims2()?;
    let dense = bands
        .iter()
        .map(|(l, z)| Ok((*l, z.matmul(w_dec)?.flatten_all()?.to_vec1::<f32>()?)))
        .collect::<Result<Vec<_>>>()?;
    let mut recon = vec![0f32; b * nl * d];
    with_slice(w_dec, |w| {
        recon
            .par_chunks_mut(block * nl * d)
            .enumerate()
            .for_each(|(bi, out)| {
                let r0 = bi * block;
                let (col_start, by_col) = &blocks.buckets[bi];
                for j in 0..n {
                    let wj = &w[j * d..(j + 1) * d];
                    for &e in &by_col[col_start[j]..col_start[j + 1]] {
                        let e = e as usize;
                        let (r, l) = (ent.row_of[e] as usize - r0, ent.lev_of[e] as usize);
                        axpy(
                            &mut out[(r * nl + l) * d..(r * nl + l + 1) * d],
                            ent.csr.val[e],
                            wj,
                        );
                    }
                }
                for (r, row) in out.chunks_mut(nl * d).enumerate() {
                    for (l, y) in &dense {
                        axpy(
                            &mut row[l * d..(l + 1) * d],
                            1.0,
                            &y[(r0 + r) * d..(r0 + r + 1) * d],
                        );
                    }
                    for (o, bp) in row[..d].iter_mut().zip(pre_bias) {
                        *o += bp;
                    }
                    for l in 1..nl {
                        let (prev, cur) = row.split_at_mut(l * d);
                        for (o, p) in cur[..d].iter_mut().zip(&prev[(l - 1) * d..]) {
                            *o += p;
                        }
                    }
                }
            });
    })?;
    Ok(Tensor::from_vec(recon, (b, nl, d), w_dec.device())?
        .transpose(0, 1)?
        .contiguous()?)
}

/// Code gradient at every entry: dP_e = der_e · C_{lev(e)}[row] · W_dec[j], from `c` = C as
/// [L, B, d]. Sparse bands use the block / latent-major traversal of the reconstruction; dense
/// bands read the dense product C_l·W_decᵀ.
fn code_grad(ent: &Entries, c: &Tensor, w_dec: &Tensor, blocks: &Blocks) -> Result<Vec<f32>> {
    let block = blocks.rows;
    let csr = ent.csr;
    let (b, nl) = (csr.offsets.len() - 1, ent.dense.len());
    let (n, d) = w_dec.dims2()?;
    let mut dp: Vec<f32> = with_slice(c, |c| {
        with_slice(w_dec, |w| {
            let starts: Vec<usize> = (0..b).step_by(block).collect();
            let per_block: Vec<Vec<f32>> = starts
                .par_iter()
                .map(|&r0| {
                    let r1 = (r0 + block).min(b);
                    let e0 = csr.offsets[r0];
                    let mut out = vec![0f32; csr.offsets[r1] - e0];
                    let (col_start, by_col) = &blocks.buckets[r0 / block];
                    for j in 0..n {
                        let wj = &w[j * d..(j + 1) * d];
                        for &e in &by_col[col_start[j]..col_start[j + 1]] {
                            let e = e as usize;
                            let (r, l) = (ent.row_of[e] as usize, ent.lev_of[e] as usize);
                            out[e - e0] =
                                csr.der[e] * dot(&c[(l * b + r) * d..(l * b + r + 1) * d], wj);
                        }
                    }
                    out
                })
                .collect();
            per_block.concat()
        })
    })??;
    let w_t = w_dec.t()?;
    for l in ent.dense_levels() {
        let q = c.get(l)?.matmul(&w_t)?;
        with_slice(&q, |q| {
            for r in 0..b {
                for e in csr.band(r, l, nl) {
                    dp[e] = csr.der[e] * q[r * n + csr.idx[e] as usize];
                }
            }
        })?;
    }
    Ok(dp)
}

/// Decoder-gradient rows, transposed encoder-gradient rows and latent-bias gradient of the
/// sparse bands: per-latent sums over entries (the encoder parts only when not `dense_dp`, and
/// then empty). Rows are processed in blocks so that the rows of C and x − b_pre a block
/// touches stay in cache; within a block the entries are bucketed by latent (rows ascending),
/// and latents are split across threads. The summation order depends only on the data, never
/// on the thread count.
fn param_grads(
    ent: &Entries,
    c: &Tensor,
    xc: &Tensor,
    dp: &[f32],
    dense_dp: bool,
    n: usize,
    blocks: &Blocks,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let csr = ent.csr;
    let b = csr.offsets.len() - 1;
    let (_, _, d) = c.dims3()?;
    let mut g_dec = vec![0f32; n * d];
    let mut g_enc_t = vec![0f32; if dense_dp { 0 } else { n * d }];
    let mut g_lat = vec![0f32; if dense_dp { 0 } else { n }];
    with_slice(c, |c| {
        with_slice(xc, |xc| {
            for (col_start, by_col) in &blocks.buckets {
                let update = |j: usize, gd: &mut [f32], ge: Option<&mut [f32]>, gl: &mut f32| {
                    let mut ge = ge;
                    for &e in &by_col[col_start[j]..col_start[j + 1]] {
                        let e = e as usize;
                        let r = ent.row_of[e] as usize;
                        let l = ent.lev_of[e] as usize;
                        axpy(gd, csr.val[e], &c[(l * b + r) * d..(l * b + r + 1) * d]);
                        if let Some(ge) = ge.as_deref_mut() {
                            axpy(ge, dp[e], &xc[r * d..(r + 1) * d]);
                            *gl += dp[e];
                        }
                    }
                };
                if dense_dp {
                    g_dec
                        .par_chunks_mut(d)
                        .with_min_len(16)
                        .enumerate()
                        .for_each(|(j, gd)| update(j, gd, None, &mut 0.0));
                } else {
                    g_dec
                        .par_chunks_mut(d)
                        .zip(g_enc_t.par_chunks_mut(d))
                        .zip(g_lat.par_iter_mut())
                        .with_min_len(16)
                        .enumerate()
                        .for_each(|(j, ((gd, ge), gl))| update(j, gd, Some(ge), gl));
                }
            }
        })
    })??;
    Ok((g_dec, g_enc_t, g_lat))
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
    fn matryoshka_bands_split_between_sparse_and_dense() {
        // The 0.2 threshold of the reference comparison mixes both paths in one step.
        let (m, x) = small_case(
            Arch::Msae,
            TopkVariant::Relu,
            MsaeWeighting::Uw,
            RecLoss::Nmse,
        );
        let p = x
            .broadcast_sub(&m.pre_bias)
            .unwrap()
            .matmul(&m.encoder)
            .unwrap()
            .broadcast_add(&m.latent_bias)
            .unwrap();
        let csr = with_slice(&p, |p| select_rows(p, 10, 24, &m)).unwrap();
        let ent = Entries::new(&csr, 10, 24, m.level_weights.len(), 0.2);
        assert!(ent.dense.contains(&true) && ent.dense.contains(&false));
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
            // Bands all sparse, all dense, and (Matryoshka) the upper ones dense.
            for (dense_dp, dense_band) in [false, true]
                .into_iter()
                .flat_map(|dp| [(dp, 2.0), (dp, 0.0), (dp, 0.2)])
            {
                let paths = Paths {
                    dense_dp: Some(dense_dp),
                    dense_band,
                };
                let (fp, fg, extra) = loss_and_grads_with(&m, &x, None, paths).unwrap();
                let what =
                    format!("{arch:?} {variant:?} {weighting:?} {lossk:?} {dense_dp} {dense_band}");
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
