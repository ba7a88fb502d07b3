//! Selection of the kept code entries of a batch, in the order and with the ties of the dense
//! path (larger value first, then lower latent).
//!
//! Per row (TopK, Matryoshka): the positive pre-activations are found without data-dependent
//! branches, and the boundary of each nested level is located by a histogram over the top bits
//! of the values, so only the members of the few boundary buckets are ranked exactly and no row
//! is sorted. Over the batch (BatchTopK): the k·B largest entries of the whole batch, where a
//! threshold taken from a strided sample narrows the exact selection to a small candidate set.
//! Both return a [`Csr`] code.

use rayon::prelude::*;

use crate::sae::config::{Arch, TopkVariant};
use crate::sae::kernels::scratch::Scratch;
use crate::sae::kernels::sparse::format::{Csr, RowEntries};
use crate::sae::model::Sae;

/// Buckets of the value histogram in [`nested_thresholds`]: the top 11 bits of a positive
/// float (exponent and three mantissa bits).
pub(super) const HIST_BUCKETS: usize = 2048;

/// Sort key of a positive code value at latent j: the bits of a positive float order like the
/// float, so keys ascending = values descending, then lower latent first — the order of the
/// dense path.
#[inline]
pub(super) fn rank_key(v: f32, j: usize) -> u64 {
    ((!v.to_bits() as u64) << 32) | j as u64
}

/// Indices of the positive entries of `row`, ascending, written into `pos` (resized). The
/// loop has no data-dependent branch: random signs would make every other branch a miss.
pub(super) fn positives(row: &[f32], pos: &mut Vec<u32>) {
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
pub(super) fn nested_thresholds(
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
pub(super) fn select_rows(p: &[f32], bias: &[f32], b: usize, n: usize, model: &Sae) -> Csr {
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
                    crate::sae::model::activation::select_row(row, k, by_abs, buf);
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
/// [`activation::global_topk_mask`](crate::sae::model::activation::global_topk_mask): larger key first,
/// then lower index. A threshold taken from a strided sample keeps the exact selection to a small
/// candidate set; when the sample underestimates the count, every entry is a candidate.
pub(super) fn global_select(p: &[f32], total: usize, by_abs: bool) -> Vec<u32> {
    use crate::sae::model::activation::{desc_then_index, key};
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
/// [`activation::batch_topk`](crate::sae::model::activation::batch_topk) (signed values for the abs
/// variants, ReLU for the ReLU variants).
pub(super) fn select_batch(p: &[f32], b: usize, n: usize, model: &Sae) -> Csr {
    let variant = model.config.topk_variant;
    let by_abs = crate::sae::model::activation::ranks_by_abs(variant);
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

#[cfg(test)]
mod tests {
    use super::*;

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
                crate::sae::model::activation::select_row(&p, total, by_abs, &mut want);
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
