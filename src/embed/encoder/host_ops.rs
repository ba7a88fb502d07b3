//! f32 kernels for running a transformer encoder on the CPU straight from host memory.
//!
//! Written for the shapes text encoders meet: many short sequences. A generic tensor library
//! spends most of such a forward pass outside the dense products: the exact GELU calls a scalar
//! `erf` per element, and attention becomes one tiny matrix product per (sequence, head), each
//! dispatched to the thread pool, followed by separate passes for scaling, masking and softmax.
//! Here the dense products go to `gemm` as one large product per layer, activations and
//! normalisation are single fused passes, and attention runs one sequence per task with its
//! scores held in a small buffer.
//!
//! `exp` and `erf` are polynomial approximations that the compiler can vectorise (no calls, no
//! branches per element): `exp` uses the Cephes range reduction and polynomial (about 1 ulp),
//! `erf` the Abramowitz–Stegun formula 7.1.26 (absolute error at most 1.5e-7 by the formula,
//! which is at the level of f32 rounding for `1 + erf`, the only form GELU uses). Tests check both
//! against f64 references.

use rayon::prelude::*;

use crate::matmul::matmul_add_into;

/// `x · wᵀ + b` for `x` `[m, k]` and `w` `[n, k]` (row-major, as checkpoints store linear
/// layers); writes `[m, n]` into `out`.
pub fn linear(x: &[f32], m: usize, k: usize, w: &[f32], b: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.reserve(m * b.len());
    for _ in 0..m {
        out.extend_from_slice(b);
    }
    accumulate_product(x, m, k, w, out);
}

/// `out += x · wᵀ + b`: a linear layer added onto a residual stream `out` (`[m, n]`).
pub fn linear_accumulate(x: &[f32], m: usize, k: usize, w: &[f32], b: &[f32], out: &mut [f32]) {
    let n = b.len();
    assert_eq!(out.len(), m * n, "residual stream shape");
    out.par_chunks_mut(n).for_each(|row| {
        for (o, &v) in row.iter_mut().zip(b) {
            *o += v;
        }
    });
    accumulate_product(x, m, k, w, out);
}

/// `out += x · wᵀ` for `x` `[m, k]` and `w` `[n, k]`, both row-major.
fn accumulate_product(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
    let n = w.len() / k.max(1);
    assert_eq!(x.len(), m * k, "input shape");
    assert_eq!(w.len(), n * k, "weight shape");
    assert_eq!(out.len(), m * n, "output shape");
    // wᵀ is read from w's rows: element (t, j) of wᵀ lies at j·k + t.
    matmul_add_into(m, n, k, x, (k, 1), w, (1, k), out);
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` for `x ≤ 88`; inputs below -87 give a value at most `e^-87` (effectively 0 where it is
/// used: softmax weights and erf's tail).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round x·log2(e) to the nearest integer by the float magic-number trick (vectorisable
    // without SSE4.1's round instruction).
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// The error function: its Maclaurin series below 0.75 (where the formula 7.1.26 loses
/// accuracy to cancellation in f32), the formula above; the selection compiles to a blend.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs().min(9.0);
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    let large = 1.0 - poly * exp(-a * a);
    // 2/√π · (x − x³/3 + x⁵/10 − x⁷/42 + x⁹/216 − x¹¹/1320 + x¹³/9360 − x¹⁵/75600)
    let a2 = a * a;
    const C: [f32; 8] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -3.761_263_9e-1,
        1.128_379_2e-1,
        -2.686_617e-2,
        5.223_977_6e-3,
        -8.548_327e-4,
        1.205_533_3e-4,
        -1.492_565e-5,
    ];
    let mut small = C[7];
    for c in C[..7].iter().rev() {
        small = small * a2 + c;
    }
    let y = if a < 0.75 { small * a } else { large };
    y.copysign(x)
}

/// The activations BERT-style encoders use between their two feed-forward layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `x/2 · (1 + erf(x/√2))`
    GeluErf,
    /// `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`
    GeluTanh,
    /// `x · σ(1.702 x)` (CLIP)
    QuickGelu,
    Relu,
}

#[inline(always)]
fn activate(a: Activation, x: f32) -> f32 {
    match a {
        Activation::GeluErf => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => {
            let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
            // tanh(u) = 1 - 2 / (e^{2u} + 1)
            let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
            0.5 * x * (1.0 + tanh)
        }
        Activation::QuickGelu => x / (1.0 + exp(-1.702 * x)),
        Activation::Relu => x.max(0.0),
    }
}

#[inline(always)]
fn activate_slice_generic(a: Activation, xs: &mut [f32]) {
    for x in xs {
        *x = activate(a, *x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn activate_slice_avx2(a: Activation, xs: &mut [f32]) {
    activate_slice_generic(a, xs)
}

/// Whether the AVX2 + FMA versions of the kernels can run (the portable build targets SSE2).
#[inline(always)]
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn activate_slice(a: Activation, xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { activate_slice_avx2(a, xs) };
    }
    activate_slice_generic(a, xs)
}

/// Applies `a` to every value, in parallel chunks.
pub fn activate_all(a: Activation, xs: &mut [f32]) {
    xs.par_chunks_mut(1 << 14)
        .for_each(|c| activate_slice(a, c));
}

/// `y = LayerNorm(x + residual)` row by row over rows of `gamma.len()` values, in place in `x`.
/// Mean and variance are accumulated in f64 (the biased variance, as PyTorch's layer norm).
pub fn add_layer_norm(
    x: &mut [f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) {
    let h = gamma.len();
    let norm_row = |(r, row): (usize, &mut [f32])| {
        if let Some(res) = residual {
            for (v, &e) in row.iter_mut().zip(&res[r * h..(r + 1) * h]) {
                *v += e;
            }
        }
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / h as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + b;
        }
    };
    x.par_chunks_mut(h).enumerate().for_each(norm_row);
}

/// Heads of a multi-head attention.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub count: usize,
    pub dim: usize,
}

/// Multi-head scaled dot-product attention over packed sequences: `qkv` holds one row of
/// `3 · hidden` values per token (queries, keys and values side by side, each split into heads),
/// sequence `s` being rows `offsets[s]..offsets[s + 1]`. No padding is stored, so none is
/// computed; every token attends to every token of its own sequence (which equals masking padded
/// keys with the dtype's minimum before the softmax). Writes the context, one row of `hidden`
/// per token, into `out`.
pub fn attention(qkv: &[f32], offsets: &[usize], heads: Heads, out: &mut Vec<f32>) {
    let hidden = heads.count * heads.dim;
    let tokens = offsets.last().copied().unwrap_or(0);
    assert_eq!(qkv.len(), tokens * 3 * hidden, "qkv shape");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "offsets ascend");
    out.clear();
    out.resize(tokens * hidden, 0.0);
    // One disjoint slice of the output per sequence, so sequences run as parallel tasks.
    let mut parts = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut rest = out.as_mut_slice();
    for w in offsets.windows(2) {
        let (part, tail) = rest.split_at_mut((w[1] - w[0]) * hidden);
        parts.push((w[0], part));
        rest = tail;
    }
    parts
        .into_par_iter()
        .for_each_init(Scores::default, |scores, (start, ctx)| {
            let len = ctx.len() / hidden;
            let seq = &qkv[start * 3 * hidden..(start + len) * 3 * hidden];
            scores.weights.resize(len, 0.0);
            scores.keys.resize(len * heads.dim, 0.0);
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU has the features the function was compiled for.
                unsafe { attend_sequence_avx2(seq, scores, ctx, heads) };
                return;
            }
            attend_sequence(seq, scores, ctx, heads)
        });
}

/// Per-task buffers of [`attention`]: one score per key, and one head's keys transposed.
#[derive(Default)]
struct Scores {
    weights: Vec<f32>,
    keys: Vec<f32>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_sequence_avx2(seq: &[f32], scores: &mut Scores, ctx: &mut [f32], heads: Heads) {
    attend_sequence(seq, scores, ctx, heads)
}

/// Attention of one sequence (`seq`: its rows of queries, keys and values), every head, into
/// `ctx` (zeroed, one row of `hidden` per token). A head's keys are first transposed so that a
/// query's scores accumulate over the keys side by side (vector lanes over keys, no horizontal
/// sums).
#[inline(always)]
fn attend_sequence(seq: &[f32], scores: &mut Scores, ctx: &mut [f32], heads: Heads) {
    let Heads { count, dim } = heads;
    let hidden = count * dim;
    let row = 3 * hidden;
    let Scores { weights, keys } = scores;
    let len = weights.len();
    let scale = 1.0 / (dim as f32).sqrt();
    for h in 0..count {
        let (qo, ko, vo) = (h * dim, hidden + h * dim, 2 * hidden + h * dim);
        for j in 0..len {
            for d in 0..dim {
                keys[d * len + j] = seq[j * row + ko + d];
            }
        }
        for i in 0..len {
            let q = &seq[i * row + qo..i * row + qo + dim];
            weights.fill(0.0);
            for (d, &qd) in q.iter().enumerate() {
                let qd = qd * scale;
                for (w, &k) in weights.iter_mut().zip(&keys[d * len..(d + 1) * len]) {
                    *w += qd * k;
                }
            }
            let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for w in weights.iter_mut() {
                *w = exp(*w - max);
                sum += *w;
            }
            let o = &mut ctx[i * hidden + qo..i * hidden + qo + dim];
            for (j, &w) in weights.iter().enumerate() {
                let p = w / sum;
                let v = &seq[j * row + vo..j * row + vo + dim];
                for (a, &b) in o.iter_mut().zip(v) {
                    *a += p * b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-200.0) < 1e-37);
    }

    #[test]
    fn erf_is_within_the_formula_bound_of_f64() {
        let mut worst = 0f64;
        let mut x = -10.0f32;
        while x < 10.0 {
            let want = libm::erf(x as f64);
            worst = worst.max((erf(x) as f64 - want).abs());
            x += 0.00113;
        }
        assert!(worst < 2.5e-7, "worst absolute error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(20.0), 1.0);
        assert_eq!(erf(-20.0), -1.0);
    }

    #[test]
    fn activations_match_their_definitions_in_f64() {
        for i in -400..400 {
            let x = i as f32 * 0.0217;
            let xd = x as f64;
            let gelu = 0.5 * xd * (1.0 + libm::erf(xd / 2f64.sqrt()));
            let tanh = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            let quick = xd / (1.0 + (-1.702 * xd).exp());
            let mut v = [x, x, x, x];
            activate_slice(Activation::GeluErf, &mut v[0..1]);
            activate_slice(Activation::GeluTanh, &mut v[1..2]);
            activate_slice(Activation::Relu, &mut v[2..3]);
            activate_slice(Activation::QuickGelu, &mut v[3..4]);
            assert!((v[3] as f64 - quick).abs() < 1e-6, "quick_gelu({x})");
            assert!((v[0] as f64 - gelu).abs() < 1e-6, "gelu({x})");
            assert!((v[1] as f64 - tanh).abs() < 1e-6, "gelu_tanh({x})");
            assert_eq!(v[2], x.max(0.0));
        }
    }

    #[test]
    fn linear_adds_the_bias_to_x_times_w_transposed() {
        // x = [[1, 2], [3, 4], [5, 6]], w = [[1, 0], [1, 1], [0, 2]], b = [0.5, -1, 2]
        let x = [1., 2., 3., 4., 5., 6.];
        let w = [1., 0., 1., 1., 0., 2.];
        let b = [0.5, -1., 2.];
        let mut out = Vec::new();
        linear(&x, 3, 2, &w, &b, &mut out);
        assert_eq!(out, vec![1.5, 2., 6., 3.5, 6., 10., 5.5, 10., 14.]);
        // Onto a residual stream of ones.
        let mut stream = vec![1.0; 9];
        linear_accumulate(&x, 3, 2, &w, &b, &mut stream);
        assert_eq!(stream, vec![2.5, 3., 7., 4.5, 7., 11., 6.5, 11., 15.]);
    }

    #[test]
    fn layer_norm_of_a_row_with_residual_is_hand_computed() {
        // x + r = [1, 2, 3, 6]: mean 3, biased variance 3.5.
        let mut x = vec![0., 1., 2., 3.];
        let r = [1., 1., 1., 3.];
        add_layer_norm(&mut x, Some(&r), &[1., 2., 1., 1.], &[0., 0., 1., 0.], 0.0);
        let s = 3.5f64.sqrt();
        let want = [-2.0 / s, 2.0 * (-1.0 / s), 1.0, 3.0 / s];
        for (g, w) in x.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{x:?}");
        }
    }

    /// Attention in f64 from its definition, one sequence at a time.
    fn attention_f64(qkv: &[f32], offsets: &[usize], heads: Heads) -> Vec<f64> {
        let hidden = heads.count * heads.dim;
        let at = |t: usize, part: usize, h: usize, d: usize| {
            qkv[t * 3 * hidden + part * hidden + h * heads.dim + d] as f64
        };
        let mut out = vec![0f64; offsets.last().unwrap() * hidden];
        for w in offsets.windows(2) {
            for h in 0..heads.count {
                for i in w[0]..w[1] {
                    let scores: Vec<f64> = (w[0]..w[1])
                        .map(|j| {
                            (0..heads.dim)
                                .map(|d| at(i, 0, h, d) * at(j, 1, h, d))
                                .sum::<f64>()
                                / (heads.dim as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..heads.dim {
                        out[i * hidden + h * heads.dim + d] =
                            (w[0]..w[1]).map(|j| e[j - w[0]] / z * at(j, 2, h, d)).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_its_definition_on_ragged_sequences() {
        // Head size 12 exercises both the 8-wide and the remainder part of the dot product;
        // sequences of 5, 3, 1 and 0 tokens.
        let heads = Heads { count: 2, dim: 12 };
        let offsets = [0, 5, 8, 9, 9];
        let n = 9 * 3 * 24;
        let qkv: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.3)
            .collect();
        let mut out = Vec::new();
        attention(&qkv, &offsets, heads, &mut out);
        let want = attention_f64(&qkv, &offsets, heads);
        assert_eq!(out.len(), want.len());
        let worst = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "worst {worst}");
        // A token alone attends only to itself: its context is its own value.
        assert_eq!(&out[8 * 24..9 * 24], &qkv[8 * 72 + 48..9 * 72]);
    }
}
