//! Bicubic resizing with Pillow's semantics (`Image.resize(size, Image.BICUBIC)`).
//!
//! Separable passes with Keys' cubic kernel (`a = −0.5`), stretched when downscaling, whose
//! normalised weights become 22-bit fixed-point integers; the intermediate image is clamped and
//! stored as 8-bit, and [`PassOrder`] picks which pass runs first. [`resize_bicubic_window`]
//! computes only a rectangle of the result (what a centre crop keeps); the integer inner loop is
//! vectorised (with an AVX2 variant on x86-64) and rows run in parallel.
//! Compatibility details: docs/embed.md, "Resampling".

use rayon::prelude::*;
use std::ops::Range;

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS`: 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;
/// ½ in fixed point: the accumulator's start value, so that the final shift rounds.
const HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Keys' cubic parameter (Pillow's bicubic filter).
const A: f64 = -0.5;
/// Support of the unscaled cubic kernel.
const SUPPORT: f64 = 2.0;
/// Multiply-adds per parallel task: below this, threads cost more than they save.
const WORK_PER_TASK: usize = 1 << 16;

/// The cubic kernel, in the nested form whose rounding Pillow's results depend on.
#[inline]
fn cubic(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Normalised floating-point weights for output positions `range` of an axis resized from
/// `in_size` to `out_size`: for each, the first input index and its weights.
fn float_taps(in_size: u64, out_size: u64, range: Range<u64>) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    // Multiplying by the reciprocal (rather than dividing by the scale) is part of the recipe:
    // the two differ in the last bit, and the last bit can move a fixed-point weight.
    let inv = 1.0 / filterscale;
    range
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let first = ((center - support + 0.5) as i64).max(0);
            let end = ((center + support + 0.5) as i64).min(in_size as i64);
            let mut weights: Vec<f64> = (first..end)
                .map(|x| cubic((x as f64 - center + 0.5) * inv))
                .collect();
            let sum: f64 = weights.iter().sum();
            if sum != 0.0 {
                for w in &mut weights {
                    *w /= sum;
                }
            }
            (first as usize, weights)
        })
        .collect()
}

/// A weight in fixed point, rounded half away from zero.
#[inline]
fn to_fixed(w: f64) -> i32 {
    let scaled = w * (1u32 << PRECISION_BITS) as f64;
    if w < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Fixed-point taps of one axis for a range of output positions.
struct Taps {
    /// Stride of `weights` (the widest window).
    width: usize,
    first: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<i32>,
}

impl Taps {
    fn new(in_size: u64, out_size: u64, range: Range<u64>) -> Taps {
        let float = float_taps(in_size, out_size, range);
        let width = float.iter().map(|(_, w)| w.len()).max().unwrap_or(0);
        let mut taps = Taps {
            width,
            first: Vec::with_capacity(float.len()),
            count: Vec::with_capacity(float.len()),
            weights: vec![0; float.len() * width],
        };
        for (i, (first, weights)) in float.iter().enumerate() {
            taps.first.push(*first);
            taps.count.push(weights.len());
            for (dst, &w) in taps.weights[i * width..].iter_mut().zip(weights) {
                *dst = to_fixed(w);
            }
        }
        taps
    }

    fn of(&self, i: usize) -> (usize, &[i32]) {
        let start = i * self.width;
        (self.first[i], &self.weights[start..start + self.count[i]])
    }

    /// Input indices read by all outputs.
    fn span(&self) -> Range<usize> {
        let lo = self.first.iter().copied().min().unwrap_or(0);
        let hi = (0..self.first.len())
            .map(|i| self.first[i] + self.count[i])
            .max()
            .unwrap_or(0);
        lo..hi
    }
}

/// From the fixed-point accumulator to a sample: shift out the fraction, clamp to 0..255.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The order of the two passes when both dimensions change. It matters: the intermediate image
/// is rounded to 8 bits, so the two orders differ by a level here and there (and by up to ~20
/// levels next to hard edges, where one order clamps an overshoot the other does not produce).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Always horizontal, then vertical: Pillow up to 12.x, which the reference pipeline ran
    /// on (2024–2025).
    #[default]
    HorizontalFirst,
    /// Pillow 13: vertical first when the height shrinks by more than twice as many pixels as
    /// the width (`h − h′ > 0` and `h − h′ > 2·(w − w′)`), horizontal first otherwise.
    Pillow13,
}

impl PassOrder {
    fn vertical_first(self, width: u32, height: u32, out_width: u64, out_height: u64) -> bool {
        match self {
            PassOrder::HorizontalFirst => false,
            PassOrder::Pillow13 => {
                let dh = height as i128 - out_height as i128;
                let dw = width as i128 - out_width as i128;
                dh > 0 && dh > 2 * dw
            }
        }
    }
}

/// A rectangle of the resized image: columns `x..x + width`, rows `y..y + height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub x: u64,
    pub y: u64,
    pub width: u32,
    pub height: u32,
}

/// Resizes an interleaved 8-bit image (`channels` 1 to 4) to `out_width × out_height` with
/// Pillow's bicubic filter.
pub fn resize_bicubic(
    src: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    out_width: u32,
    out_height: u32,
    order: PassOrder,
) -> Vec<u8> {
    let window = Window {
        x: 0,
        y: 0,
        width: out_width,
        height: out_height,
    };
    let size = (out_width as u64, out_height as u64);
    resize_bicubic_window(src, width, height, channels, size, window, order)
}

/// The `window` rectangle of the image resized to `out_size` (width, height): bit-identical to
/// [`resize_bicubic`] followed by a crop, computing only what the crop keeps.
///
/// Panics if the window is not inside the resized image, `src` is shorter than
/// `width × height × channels`, or `channels` is not 1 to 4.
pub fn resize_bicubic_window(
    src: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    out_size: (u64, u64),
    window: Window,
    order: PassOrder,
) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let (out_width, out_height) = out_size;
    assert!(w > 0 && h > 0, "resize of an empty image");
    assert!(out_width > 0 && out_height > 0, "resize to an empty size");
    assert!(
        src.len() >= w * h * channels,
        "resize: source buffer too short"
    );
    assert!(
        window.x + window.width as u64 <= out_width
            && window.y + window.height as u64 <= out_height,
        "resize: window {window:?} outside {out_width}×{out_height}"
    );
    let plan = Plan {
        src,
        width: w,
        cols: window.x..window.x + window.width as u64,
        rows: window.y..window.y + window.height as u64,
        horizontal: (out_width != width as u64).then(|| {
            Taps::new(
                width as u64,
                out_width,
                window.x..window.x + window.width as u64,
            )
        }),
        vertical: (out_height != height as u64).then(|| {
            Taps::new(
                height as u64,
                out_height,
                window.y..window.y + window.height as u64,
            )
        }),
        vertical_first: order.vertical_first(width, height, out_width, out_height),
    };
    match channels {
        1 => plan.run::<1>(),
        2 => plan.run::<2>(),
        3 => plan.run::<3>(),
        4 => plan.run::<4>(),
        _ => panic!("resize: {channels} channels (1 to 4 supported)"),
    }
}

/// One resize: the source, the window wanted, and the taps of the passes that are needed.
struct Plan<'a> {
    src: &'a [u8],
    width: usize,
    cols: Range<u64>,
    rows: Range<u64>,
    horizontal: Option<Taps>,
    vertical: Option<Taps>,
    vertical_first: bool,
}

impl Plan<'_> {
    fn run<const C: usize>(&self) -> Vec<u8> {
        let (ww, wh) = (
            self.cols.end - self.cols.start,
            self.rows.end - self.rows.start,
        );
        let (ww, wh) = (ww as usize, wh as usize);
        let mut out = vec![0u8; ww * wh * C];
        if ww == 0 || wh == 0 {
            return out;
        }
        let (src, w) = (self.src, self.width);
        let cols = self.cols.start as usize..self.cols.end as usize;
        let rows = self.rows.start as usize..self.rows.end as usize;
        match (&self.horizontal, &self.vertical) {
            (None, None) => {
                for (r, dst) in rows.zip(out.chunks_exact_mut(ww * C)) {
                    dst.copy_from_slice(&src[(r * w + cols.start) * C..(r * w + cols.end) * C]);
                }
            }
            (Some(h), None) => horizontal::<C>(src, w, 0, rows, h, &mut out),
            (None, Some(v)) => vertical::<C>(src, w, cols.start, 0, v, ww, &mut out),
            (Some(h), Some(v)) if !self.vertical_first => {
                // Only the source rows the vertical pass reads go through the horizontal one.
                let span = v.span();
                let mut inter = vec![0u8; span.len() * ww * C];
                horizontal::<C>(src, w, 0, span.clone(), h, &mut inter);
                vertical::<C>(&inter, ww, 0, span.start, v, ww, &mut out);
            }
            (Some(h), Some(v)) => {
                // Only the source columns the horizontal pass reads go through the vertical one.
                let span = h.span();
                let mut inter = vec![0u8; wh * span.len() * C];
                vertical::<C>(src, w, span.start, 0, v, span.len(), &mut inter);
                horizontal::<C>(&inter, span.len(), span.start, 0..wh, h, &mut out);
            }
        }
        out
    }
}

/// Rows per parallel task so that each task has about [`WORK_PER_TASK`] multiply-adds.
fn rows_per_task(work_per_row: usize) -> usize {
    (WORK_PER_TASK / work_per_row.max(1)).max(1)
}

/// Lanes processed together by [`convolve_lines`]: a multiple of every SIMD width in use, small
/// enough for the accumulators to stay in registers across the taps.
const LANES: usize = 16;
/// Rows transposed together by the horizontal pass: `BLOCK × C` is a multiple of [`LANES`].
const BLOCK: usize = 16;

/// The one hot loop: `out[i] = clip8(½ + Σₜ kₜ · base[(first + t)·stride + i])` for every `i`.
///
/// Both passes are phrased this way (the horizontal one on a transposed block of rows), so the
/// innermost loop runs over contiguous lanes with one weight broadcast per tap: it vectorises,
/// while a direct horizontal convolution over interleaved RGB does not.
#[inline(always)]
fn convolve_lines_body(base: &[u8], stride: usize, first: usize, weights: &[i32], out: &mut [u8]) {
    let n = out.len();
    let mut i = 0;
    while i + LANES <= n {
        let mut acc = [HALF; LANES];
        for (t, &k) in weights.iter().enumerate() {
            let s = (first + t) * stride + i;
            let line: &[u8; LANES] = base[s..s + LANES].try_into().unwrap();
            for j in 0..LANES {
                acc[j] += line[j] as i32 * k;
            }
        }
        // Through a fixed-size array: one bounds check, and the clamp-and-narrow vectorises.
        let dst: &mut [u8; LANES] = (&mut out[i..i + LANES]).try_into().unwrap();
        for j in 0..LANES {
            dst[j] = clip8(acc[j]);
        }
        i += LANES;
    }
    for (j, o) in out.iter_mut().enumerate().skip(i) {
        let mut acc = HALF;
        for (t, &k) in weights.iter().enumerate() {
            acc += base[(first + t) * stride + j] as i32 * k;
        }
        *o = clip8(acc);
    }
}

/// [`convolve_lines_body`] compiled for AVX2: the baseline x86-64 target has no 32-bit vector
/// multiply (SSE4.1 `pmulld`), which is this loop's main instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn convolve_lines_avx2(
    base: &[u8],
    stride: usize,
    first: usize,
    weights: &[i32],
    out: &mut [u8],
) {
    convolve_lines_body(base, stride, first, weights, out)
}

#[inline]
fn convolve_lines(base: &[u8], stride: usize, first: usize, weights: &[i32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { convolve_lines_avx2(base, stride, first, weights, out) };
        return;
    }
    convolve_lines_body(base, stride, first, weights, out)
}

/// Horizontal pass over rows `rows` of `src` (rows of `src_width` pixels, the first of which is
/// column `col0` of the image the taps refer to); output columns as given by `taps`.
///
/// Works on blocks of [`BLOCK`] rows: the block is transposed (column `x` of the block becomes
/// a line of `BLOCK × C` samples), convolved line-wise, and transposed back.
fn horizontal<const C: usize>(
    src: &[u8],
    src_width: usize,
    col0: usize,
    rows: Range<usize>,
    taps: &Taps,
    out: &mut [u8],
) {
    let n = taps.first.len();
    let span = taps.span();
    let lanes = BLOCK * C;
    let min_len = rows_per_task(BLOCK * n * C * taps.width);
    out.par_chunks_mut(BLOCK * n * C)
        .with_min_len(min_len)
        .enumerate()
        .for_each_init(
            || (vec![0u8; span.len() * lanes], vec![0u8; n * lanes]),
            |(block, lines), (b, out_rows)| {
                let y0 = rows.start + b * BLOCK;
                let count = out_rows.len() / (n * C);
                for r in 0..count {
                    let row = &src[(y0 + r) * src_width * C..(y0 + r + 1) * src_width * C];
                    let row = &row[(span.start - col0) * C..(span.end - col0) * C];
                    for (line, px) in block.chunks_exact_mut(lanes).zip(row.chunks_exact(C)) {
                        let dst: &mut [u8; C] = (&mut line[r * C..r * C + C]).try_into().unwrap();
                        *dst = px.try_into().unwrap();
                    }
                }
                for (o, line) in lines.chunks_exact_mut(lanes).enumerate() {
                    let (first, weights) = taps.of(o);
                    convolve_lines(block, lanes, first - span.start, weights, line);
                }
                for (r, out_row) in out_rows.chunks_exact_mut(n * C).enumerate() {
                    for (px, line) in out_row.chunks_exact_mut(C).zip(lines.chunks_exact(lanes)) {
                        let src: &[u8; C] = line[r * C..r * C + C].try_into().unwrap();
                        px.copy_from_slice(src);
                    }
                }
            },
        );
}

/// Vertical pass: reads `width` pixels of each `src` row (rows of `src_width` pixels) from
/// column `col0`; row `y` of the taps is row `y − row0` of `src`.
fn vertical<const C: usize>(
    src: &[u8],
    src_width: usize,
    col0: usize,
    row0: usize,
    taps: &Taps,
    width: usize,
    out: &mut [u8],
) {
    let row_len = width * C;
    let min_len = rows_per_task(row_len * taps.width);
    let base = &src[col0 * C..];
    out.par_chunks_mut(row_len)
        .with_min_len(min_len)
        .enumerate()
        .for_each(|(r, out_row)| {
            let (first, weights) = taps.of(r);
            convolve_lines(base, src_width * C, first - row0, weights, out_row);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test pixels.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// Hard edges and flat areas: where overshoot and clamping happen.
    fn blocks(w: usize, h: usize, c: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * c);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let on = ((x / 3 + y / 2 + ch) % 2) == 0;
                    v.push(if on { 255 } else { 0 });
                }
            }
        }
        v
    }

    /// Keys' kernel written from the textbook polynomial (not the nested form).
    fn keys(t: f64) -> f64 {
        let t = t.abs();
        let a = -0.5;
        if t < 1.0 {
            (a + 2.0) * t.powi(3) - (a + 3.0) * t.powi(2) + 1.0
        } else if t < 2.0 {
            a * t.powi(3) - 5.0 * a * t.powi(2) + 8.0 * a * t - 4.0 * a
        } else {
            0.0
        }
    }

    /// Weight matrix `n_out × n_in` from the definition: every input pixel, its distance to the
    /// output centre, the kernel stretched when downscaling, rows normalised to sum 1.
    fn matrix(n_in: usize, n_out: usize) -> Vec<Vec<f64>> {
        let scale = n_in as f64 / n_out as f64;
        let stretch = scale.max(1.0);
        (0..n_out)
            .map(|o| {
                let center = (o as f64 + 0.5) * scale;
                let row: Vec<f64> = (0..n_in)
                    .map(|i| keys((i as f64 + 0.5 - center) / stretch))
                    .collect();
                let sum: f64 = row.iter().sum();
                row.into_iter().map(|w| w / sum).collect()
            })
            .collect()
    }

    fn to_u8(v: f64) -> u8 {
        (v + 0.5).floor().clamp(0.0, 255.0) as u8
    }

    /// One pass in `f64` from the weight matrix, rounded to 8 bits (half up) and clamped.
    fn pass(src: &[u8], w: usize, h: usize, c: usize, ow: usize, oh: usize) -> Vec<u8> {
        // Horizontal when the width changes, vertical when the height does (one at a time).
        let mut out = vec![0; ow * oh * c];
        if ow != w {
            let m = matrix(w, ow);
            for y in 0..h {
                for (x, row) in m.iter().enumerate() {
                    for ch in 0..c {
                        let v: f64 = (0..w)
                            .map(|i| row[i] * src[(y * w + i) * c + ch] as f64)
                            .sum();
                        out[(y * ow + x) * c + ch] = to_u8(v);
                    }
                }
            }
        } else {
            let m = matrix(h, oh);
            for (y, row) in m.iter().enumerate() {
                for x in 0..w {
                    for ch in 0..c {
                        let v: f64 = (0..h)
                            .map(|i| row[i] * src[(i * w + x) * c + ch] as f64)
                            .sum();
                        out[(y * w + x) * c + ch] = to_u8(v);
                    }
                }
            }
        }
        out
    }

    /// The separable convolution in `f64` with 8-bit rounding between the passes, in the given
    /// order; a pass whose dimension does not change is skipped.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        src: &[u8],
        w: usize,
        h: usize,
        c: usize,
        ow: usize,
        oh: usize,
        vertical_first: bool,
    ) -> Vec<u8> {
        match (ow != w, oh != h) {
            (false, false) => src.to_vec(),
            (true, false) | (false, true) => pass(src, w, h, c, ow, oh),
            (true, true) if vertical_first => {
                let tmp = pass(src, w, h, c, w, oh);
                pass(&tmp, w, oh, c, ow, oh)
            }
            (true, true) => {
                let tmp = pass(src, w, h, c, ow, h);
                pass(&tmp, ow, h, c, ow, oh)
            }
        }
    }

    fn max_diff(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    fn check(w: usize, h: usize, c: usize, ow: usize, oh: usize) {
        for (name, src) in [
            ("noise", noise(w * h * c, (w * 31 + h * 7 + ow) as u64)),
            ("blocks", blocks(w, h, c)),
        ] {
            for order in [PassOrder::HorizontalFirst, PassOrder::Pillow13] {
                let vfirst = order.vertical_first(w as u32, h as u32, ow as u64, oh as u64);
                let ours = resize_bicubic(&src, w as u32, h as u32, c, ow as u32, oh as u32, order);
                let want = reference(&src, w, h, c, ow, oh, vfirst);
                let d = max_diff(&ours, &want);
                assert!(
                    d <= 1,
                    "{name} {w}×{h}×{c} → {ow}×{oh} {order:?}: max diff {d}"
                );
            }
        }
    }

    #[test]
    fn matches_float_reference_downscaling() {
        check(97, 61, 3, 40, 29);
        check(60, 45, 1, 17, 12);
        check(50, 50, 4, 7, 7);
    }

    #[test]
    fn matches_float_reference_upscaling() {
        check(13, 7, 3, 50, 31);
        check(5, 9, 2, 23, 24);
        check(2, 2, 1, 9, 9);
    }

    #[test]
    fn matches_float_reference_mixed_and_single_pass() {
        check(64, 20, 3, 30, 45); // down in x, up in y
        check(3, 5, 3, 3, 19); // vertical pass only
        check(30, 4, 1, 11, 4); // horizontal pass only
    }

    #[test]
    fn one_pixel_wide_and_tall() {
        check(1, 17, 3, 1, 40);
        check(1, 17, 3, 5, 6);
        check(17, 1, 1, 3, 1);
        check(1, 1, 3, 5, 5);
        // A single pixel stays its value whatever the size: the weights are normalised.
        let out = resize_bicubic(&[10, 200, 77], 1, 1, 3, 4, 3, PassOrder::HorizontalFirst);
        assert_eq!(out, [10, 200, 77].repeat(12));
    }

    #[test]
    fn unchanged_size_is_a_copy() {
        let src = blocks(9, 7, 3);
        assert_eq!(
            resize_bicubic(&src, 9, 7, 3, 9, 7, PassOrder::Pillow13),
            src
        );
        let src = noise(11 * 5, 3);
        assert_eq!(
            resize_bicubic(&src, 11, 5, 1, 11, 5, PassOrder::HorizontalFirst),
            src
        );
    }

    #[test]
    fn flat_images_stay_flat() {
        for v in [0u8, 1, 128, 254, 255] {
            let src = vec![v; 37 * 23 * 3];
            for (ow, oh) in [(10, 7), (80, 51), (37, 5), (3, 23)] {
                let out = resize_bicubic(&src, 37, 23, 3, ow, oh, PassOrder::Pillow13);
                assert!(out.iter().all(|&p| p == v), "{v} → {ow}×{oh}");
            }
        }
    }

    #[test]
    fn window_equals_crop_of_full_resize() {
        let (w, h) = (41, 29);
        let src = noise(w * h * 3, 11);
        // Up, down, one dimension only, and a strong height reduction (vertical first in
        // Pillow 13).
        for (ow, oh) in [(60u32, 43u32), (17, 12), (41, 50), (70, 29), (40, 9)] {
            for order in [PassOrder::HorizontalFirst, PassOrder::Pillow13] {
                let full = resize_bicubic(&src, w as u32, h as u32, 3, ow, oh, order);
                for win in [
                    Window {
                        x: 0,
                        y: 0,
                        width: ow,
                        height: oh,
                    },
                    Window {
                        x: 3,
                        y: 1,
                        width: ow - 5,
                        height: oh - 2,
                    },
                    Window {
                        x: ow as u64 - 1,
                        y: oh as u64 - 1,
                        width: 1,
                        height: 1,
                    },
                ] {
                    let size = (ow as u64, oh as u64);
                    let part = resize_bicubic_window(&src, w as u32, h as u32, 3, size, win, order);
                    let mut want = Vec::new();
                    for y in win.y as usize..win.y as usize + win.height as usize {
                        let s = (y * ow as usize + win.x as usize) * 3;
                        want.extend_from_slice(&full[s..s + win.width as usize * 3]);
                    }
                    assert_eq!(part, want, "{ow}×{oh} {win:?} {order:?}");
                }
            }
        }
    }

    #[test]
    fn pillow13_pass_order_rule() {
        let vf = |w, h, ow, oh| PassOrder::Pillow13.vertical_first(w, h, ow, oh);
        // 256×864 → 224×756: the height loses 108 rows, more than twice the 32 columns lost.
        assert!(vf(256, 864, 224, 756));
        // 500×375 → 298×224: the width loses more.
        assert!(!vf(500, 375, 298, 224));
        // Exactly twice is not more than twice.
        assert!(!vf(100, 100, 90, 80));
        assert!(vf(100, 100, 90, 79));
        // Upscaling the height never puts it first; upscaling the width makes `w − w′` negative.
        assert!(!vf(50, 50, 40, 60));
        assert!(vf(50, 50, 80, 49));
        assert!(!PassOrder::HorizontalFirst.vertical_first(256, 864, 224, 756));
    }

    #[test]
    fn pass_orders_differ_at_edges() {
        // The order is observable: hard edges make the 8-bit intermediates differ.
        let (w, h) = (40, 90);
        let src = blocks(w, h, 3);
        let a = resize_bicubic(&src, 40, 90, 3, 31, 37, PassOrder::HorizontalFirst);
        let b = resize_bicubic(&src, 40, 90, 3, 31, 37, PassOrder::Pillow13);
        assert_ne!(a, b);
    }

    #[test]
    fn window_of_an_enormous_resize_is_cheap() {
        // A 1×5000 strip whose shorter side goes to 224 would be 224×1,120,000 resized; only the
        // window is computed.
        let src = noise(5000, 5);
        let win = Window {
            x: 0,
            y: 560_000 - 112,
            width: 224,
            height: 224,
        };
        for order in [PassOrder::HorizontalFirst, PassOrder::Pillow13] {
            let out = resize_bicubic_window(&src, 1, 5000, 1, (224, 1_120_000), win, order);
            assert_eq!(out.len(), 224 * 224);
        }
    }

    #[test]
    fn fixed_point_weights() {
        assert_eq!(to_fixed(1.0), 1 << 22);
        assert_eq!(to_fixed(0.5 / (1 << 22) as f64), 1); // half rounds away from zero
        assert_eq!(to_fixed(-0.5 / (1 << 22) as f64), -1);
        assert_eq!(to_fixed(0.49 / (1 << 22) as f64), 0);
        // Each window's weights still sum to one within the rounding of its taps.
        for (n_in, n_out) in [(500u64, 298u64), (28, 224), (7, 3), (100, 100)] {
            let taps = Taps::new(n_in, n_out, 0..n_out);
            for i in 0..n_out as usize {
                let (_, w) = taps.of(i);
                let sum: i64 = w.iter().map(|&k| k as i64).sum();
                assert!(
                    (sum - (1 << 22)).abs() <= w.len() as i64,
                    "{n_in}→{n_out} #{i}: {sum}"
                );
            }
        }
    }

    #[test]
    fn kernel_values() {
        assert_eq!(cubic(0.0), 1.0);
        assert_eq!(cubic(1.0), 0.0);
        assert_eq!(cubic(2.0), 0.0);
        assert_eq!(cubic(0.5), 0.5625);
        assert_eq!(cubic(-1.5), -0.0625);
        for i in 0..400 {
            let t = i as f64 / 100.0 - 2.0;
            assert!((cubic(t) - keys(t)).abs() < 1e-12, "{t}");
        }
    }
}
