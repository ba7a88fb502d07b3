//! Small previews of decoded images: opaque RGB, the longer side at most [`THUMBNAIL_SIDE`],
//! encoded as baseline JPEG.
//!
//! The reduction is an exact area average (a box filter with fractional coverage at the cell
//! edges): every output pixel is the mean of the input area it covers, which keeps the colours of
//! fine patterns instead of aliasing them, and costs one pass over the image whatever the
//! reduction factor (a bicubic with a stretched kernel reads hundreds of taps per output pixel on
//! a large photo). Rows are converted to RGB one at a time (alpha composited as the embedding
//! does), so no full-size RGB copy is made. The arithmetic is `f64` in a fixed order, so the same
//! image gives the same bytes on every run.

use anyhow::{Context, Result};
use jpeg_encoder::{ChromaSubsamplingMethod, ColorType, Encoder};

use super::convert::{Background, Rgb8};
use super::decode::DecodedImage;

/// The longer side of a thumbnail, in pixels (smaller images keep their size).
pub const THUMBNAIL_SIDE: u32 = 64;
/// JPEG quality of thumbnails (1–100).
pub const THUMBNAIL_QUALITY: u8 = 80;

/// The thumbnail size of a `width × height` image: the longer side `side`, the shorter one
/// scaled by the same factor and rounded (at least 1); images that fit keep their size.
pub fn thumbnail_size(width: u32, height: u32, side: u32) -> (u32, u32) {
    let (long, short) = (width.max(height) as u64, width.min(height) as u64);
    if long <= side as u64 {
        return (width, height);
    }
    let scaled = ((short * side as u64 + long / 2) / long).max(1) as u32;
    if width >= height {
        (side, scaled)
    } else {
        (scaled, side)
    }
}

/// For each output cell of an axis reduced from `input` to `output` samples: the first input
/// sample it covers and the share of the cell each covered sample takes (they sum to 1).
fn cell_weights(input: u32, output: u32) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    (0..output as u64)
        .map(|o| {
            // Cell edges as exact fractions of the input axis.
            let lo = (o * input as u64) as f64 / output as f64;
            let hi = ((o + 1) * input as u64) as f64 / output as f64;
            let first = lo.floor() as usize;
            let end = (hi.ceil() as usize).min(input as usize);
            let weights = (first..end)
                .map(|i| (hi.min(i as f64 + 1.0) - lo.max(i as f64)) / scale)
                .collect();
            (first, weights)
        })
        .collect()
}

/// The image as opaque RGB (alpha handled per `background`), area-averaged down so that its
/// longer side is at most `side`.
pub fn thumbnail(image: &DecodedImage, background: Background, side: u32) -> Rgb8 {
    let (w, h) = (image.width, image.height);
    let (tw, th) = thumbnail_size(w, h, side);
    if (tw, th) == (w, h) {
        return image.to_rgb(background);
    }
    let columns = cell_weights(w, tw);
    // Which output rows each input row adds to, and with what weight.
    let mut rows_into: Vec<Vec<(usize, f64)>> = vec![Vec::new(); h as usize];
    for (o, (first, weights)) in cell_weights(h, th).into_iter().enumerate() {
        for (k, wt) in weights.into_iter().enumerate() {
            rows_into[first + k].push((o, wt));
        }
    }
    let out_row = tw as usize * 3;
    let mut acc = vec![0f64; out_row * th as usize];
    let mut rgb = Vec::with_capacity(w as usize * 3);
    let mut reduced = vec![0f64; out_row];
    for (y, targets) in rows_into.iter().enumerate() {
        rgb.clear();
        image.rgb_row_into(y as u32, background, &mut rgb);
        for (x, (first, weights)) in columns.iter().enumerate() {
            let mut sum = [0f64; 3];
            for (k, wt) in weights.iter().enumerate() {
                let px = &rgb[(first + k) * 3..(first + k) * 3 + 3];
                for c in 0..3 {
                    sum[c] += wt * px[c] as f64;
                }
            }
            reduced[x * 3..x * 3 + 3].copy_from_slice(&sum);
        }
        for &(o, wt) in targets {
            for (a, r) in acc[o * out_row..(o + 1) * out_row].iter_mut().zip(&reduced) {
                *a += wt * r;
            }
        }
    }
    Rgb8 {
        width: tw,
        height: th,
        data: acc
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect(),
    }
}

/// `rgb` as a baseline JPEG at `quality` (chroma subsampled 2×2 by averaging below quality 90).
pub fn encode_jpeg(rgb: &Rgb8, quality: u8) -> Result<Vec<u8>> {
    let width = u16::try_from(rgb.width).context("image too wide for JPEG")?;
    let height = u16::try_from(rgb.height).context("image too tall for JPEG")?;
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, quality);
    encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
    encoder
        .encode(&rgb.data, width, height, ColorType::Rgb)
        .context("JPEG encoding of a thumbnail failed")?;
    Ok(out)
}

/// The thumbnail of a decoded image as JPEG bytes: [`THUMBNAIL_SIDE`], [`THUMBNAIL_QUALITY`].
pub fn thumbnail_jpeg(image: &DecodedImage, background: Background) -> Result<Vec<u8>> {
    encode_jpeg(
        &thumbnail(image, background, THUMBNAIL_SIDE),
        THUMBNAIL_QUALITY,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float64 mean of the input area each output pixel covers, computed pixel by pixel
    /// from the cell edges (the straightforward two-dimensional definition).
    fn area_mean_reference(rgb: &Rgb8, tw: u32, th: u32) -> Vec<f64> {
        let (w, h) = (rgb.width as f64, rgb.height as f64);
        let (sx, sy) = (w / tw as f64, h / th as f64);
        let mut out = Vec::new();
        for oy in 0..th {
            for ox in 0..tw {
                let (x0, x1) = (ox as f64 * sx, (ox + 1) as f64 * sx);
                let (y0, y1) = (oy as f64 * sy, (oy + 1) as f64 * sy);
                let mut sum = [0f64; 3];
                for y in 0..rgb.height {
                    let cy = (y1.min(y as f64 + 1.0) - y0.max(y as f64)).max(0.0);
                    for x in 0..rgb.width {
                        let cx = (x1.min(x as f64 + 1.0) - x0.max(x as f64)).max(0.0);
                        let i = (y * rgb.width + x) as usize * 3;
                        for (acc, &v) in sum.iter_mut().zip(&rgb.data[i..i + 3]) {
                            *acc += cx * cy * v as f64;
                        }
                    }
                }
                out.extend(sum.iter().map(|s| s / (sx * sy)));
            }
        }
        out
    }

    fn pattern(w: u32, h: u32, channels: u8) -> DecodedImage {
        let data = (0..w * h * channels as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        DecodedImage {
            width: w,
            height: h,
            channels,
            data,
        }
    }

    #[test]
    fn sizes_keep_the_aspect_and_never_enlarge() {
        assert_eq!(thumbnail_size(640, 480, 64), (64, 48));
        assert_eq!(thumbnail_size(480, 640, 64), (48, 64));
        assert_eq!(thumbnail_size(1000, 10, 64), (64, 1));
        assert_eq!(thumbnail_size(10_000, 1, 64), (64, 1));
        // 100 × 63 → 64 × 40.32 → 40.
        assert_eq!(thumbnail_size(100, 63, 64), (64, 40));
        assert_eq!(thumbnail_size(64, 20, 64), (64, 20));
        assert_eq!(thumbnail_size(30, 50, 64), (30, 50));
    }

    #[test]
    fn area_average_matches_the_float64_definition() {
        for (w, h, channels) in [
            (200u32, 130u32, 3u8),
            (97, 211, 4),
            (129, 65, 1),
            (70, 66, 2),
        ] {
            let image = pattern(w, h, channels);
            let bg = Background::Color([250, 20, 90]);
            let got = thumbnail(&image, bg, 64);
            let (tw, th) = thumbnail_size(w, h, 64);
            assert_eq!((got.width, got.height), (tw, th));
            let want = area_mean_reference(&image.to_rgb(bg), tw, th);
            let worst = got
                .data
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .fold(0f64, f64::max);
            // Rounding to 8 bits: at most half a level (plus float noise).
            assert!(worst <= 0.5 + 1e-9, "{w}×{h}×{channels}: {worst}");
        }
    }

    #[test]
    fn rows_convert_as_the_whole_image_does() {
        for channels in 1..=4 {
            let image = pattern(7, 5, channels);
            for bg in [Background::Drop, Background::Color([3, 200, 77])] {
                let mut rows = Vec::new();
                for y in 0..5 {
                    image.rgb_row_into(y, bg, &mut rows);
                }
                assert_eq!(rows, image.to_rgb(bg).data, "{channels} channels");
            }
        }
    }

    #[test]
    fn small_images_are_composited_only_and_jpeg_decodes_to_the_same_colours() {
        // Transparent red half over a white background.
        let image = DecodedImage {
            width: 20,
            height: 10,
            channels: 4,
            data: (0..200)
                .flat_map(|i| {
                    if i % 20 < 10 {
                        [255, 0, 0, 255]
                    } else {
                        [0, 0, 0, 0]
                    }
                })
                .collect(),
        };
        let rgb = thumbnail(&image, Background::Color([255, 255, 255]), 64);
        assert_eq!(rgb, image.to_rgb(Background::Color([255, 255, 255])));
        let jpeg = encode_jpeg(&rgb, THUMBNAIL_QUALITY).unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]));
        // SOF0: a baseline frame.
        assert!(jpeg.windows(2).any(|m| m == [0xFF, 0xC0]));
        let back = crate::embed::image::decode(&jpeg).unwrap();
        assert_eq!((back.width, back.height, back.channels), (20, 10, 3));
        let mean = |x0: u32, c: usize| {
            let mut s = 0f64;
            for y in 0..10 {
                for x in x0..x0 + 10 {
                    s += back.data[((y * 20 + x) * 3) as usize + c] as f64;
                }
            }
            s / 100.0
        };
        assert!(mean(0, 0) > 230.0 && mean(0, 1) < 30.0, "red half");
        assert!(mean(10, 0) > 230.0 && mean(10, 1) > 230.0, "white half");
    }
}
