//! The encoders' image preprocessing: conversion to RGB, geometry, resampling and normalisation.
//!
//! [`Preprocess`] converts to RGB first (compositing alpha onto its background), computes the
//! geometry (CLIP: shorter side to `n`, then a centre crop; SigLIP: straight to `n × n`), resizes
//! only the kept window with [`super::resample`] (grey as one channel, replicated afterwards) and
//! writes `(x / 255 − mean) / std` as a CHW `f32` tensor.
//! Compatibility details: docs/embed.md, "Preprocessing".

use super::convert::{Background, Rgb8};
use super::decode::{decode, DecodedImage};
use super::resample::{resize_bicubic_window, PassOrder, Window};
use anyhow::Result;
use std::borrow::Cow;

/// OpenAI CLIP's per-channel mean and standard deviation as published (Python floats).
const CLIP_MEAN_F64: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD_F64: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// OpenAI CLIP's per-channel mean, in `f32` as torch holds it: the decimal is first a double,
/// then rounded to `f32` (which can differ from rounding the decimal to `f32` directly).
pub const CLIP_MEAN: [f32; 3] = [
    CLIP_MEAN_F64[0] as f32,
    CLIP_MEAN_F64[1] as f32,
    CLIP_MEAN_F64[2] as f32,
];
/// OpenAI CLIP's per-channel standard deviation, in `f32` as torch holds it.
pub const CLIP_STD: [f32; 3] = [
    CLIP_STD_F64[0] as f32,
    CLIP_STD_F64[1] as f32,
    CLIP_STD_F64[2] as f32,
];

/// How an image becomes an encoder's input tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Side of the square input, in pixels (at least 1).
    pub size: u32,
    /// `true`: shorter side to `size`, then centre crop (CLIP). `false`: resize straight to
    /// `size × size` (SigLIP).
    pub crop: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// What happens to an alpha channel.
    pub background: Background,
    /// Order of the resampling passes: which Pillow release's pixels to reproduce.
    pub pass_order: PassOrder,
}

/// Where the resize and crop put an image: its resized size and the window kept of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub resized_width: u64,
    pub resized_height: u64,
    pub window: Window,
}

/// Python's `int(round(x / 2.0))` for a non-negative integer `x`: halves go to the even side.
fn half_to_even(x: u64) -> u64 {
    (x as f64 / 2.0).round_ties_even() as u64
}

impl Preprocess {
    /// OpenAI CLIP's preprocessing at `size` (224 for B/32, B/16, L/14; 336 for L/14-336).
    /// Alpha is dropped, as `convert("RGB")` does in the reference.
    pub fn clip(size: u32) -> Preprocess {
        Preprocess {
            size,
            crop: true,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            background: Background::Drop,
            pass_order: PassOrder::HorizontalFirst,
        }
    }

    /// SigLIP's preprocessing: bicubic to `size × size`, no crop, mean = std = 0.5.
    pub fn siglip(size: u32) -> Preprocess {
        Preprocess {
            size,
            crop: false,
            mean: [0.5; 3],
            std: [0.5; 3],
            background: Background::Drop,
            pass_order: PassOrder::HorizontalFirst,
        }
    }

    /// The same preprocessing with another alpha policy.
    pub fn with_background(self, background: Background) -> Preprocess {
        Preprocess { background, ..self }
    }

    /// The same preprocessing with another resampling pass order.
    pub fn with_pass_order(self, pass_order: PassOrder) -> Preprocess {
        Preprocess { pass_order, ..self }
    }

    /// Number of floats in one image's tensor (`3 × size × size`).
    pub fn tensor_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// Resized size and crop window for a `width × height` image.
    pub fn geometry(&self, width: u32, height: u32) -> Geometry {
        let n = self.size as u64;
        let (w, h) = (width as u64, height as u64);
        if !self.crop {
            return Geometry {
                resized_width: n,
                resized_height: n,
                window: Window {
                    x: 0,
                    y: 0,
                    width: self.size,
                    height: self.size,
                },
            };
        }
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        // int(n * long / short): the product is exact (far below 2^53), the division correctly
        // rounded, then truncated — bit for bit Python's arithmetic.
        let new_long = ((n * long) as f64 / short as f64) as u64;
        let (rw, rh) = if w <= h { (n, new_long) } else { (new_long, n) };
        Geometry {
            resized_width: rw,
            resized_height: rh,
            window: Window {
                x: half_to_even(rw - n),
                y: half_to_even(rh - n),
                width: self.size,
                height: self.size,
            },
        }
    }

    /// The final `size × size` RGB pixels: to RGB (per [`Self::background`]), resize, crop.
    pub fn pixels(&self, image: &DecodedImage) -> Rgb8 {
        let g = self.geometry(image.width, image.height);
        let (w, h) = (image.width, image.height);
        let size = (g.resized_width, g.resized_height);
        let grey =
            image.channels == 1 || (image.channels == 2 && self.background == Background::Drop);
        let data = if grey {
            let plane: Cow<[u8]> = if image.channels == 1 {
                Cow::Borrowed(&image.data)
            } else {
                Cow::Owned(image.data.chunks_exact(2).map(|px| px[0]).collect())
            };
            let small = resize_bicubic_window(&plane, w, h, 1, size, g.window, self.pass_order);
            small.iter().flat_map(|&v| [v, v, v]).collect()
        } else {
            let rgb = image.to_rgb(self.background);
            resize_bicubic_window(&rgb.data, w, h, 3, size, g.window, self.pass_order)
        };
        Rgb8 {
            width: g.window.width,
            height: g.window.height,
            data,
        }
    }

    /// Writes `rgb` as a normalised CHW tensor: `(x / 255 − mean) / std` per channel, in `f32`
    /// as torchvision's `ToTensor` and `Normalize` compute it.
    ///
    /// Panics if `out` does not hold exactly `3 × width × height` floats.
    pub fn tensor(&self, rgb: &Rgb8, out: &mut [f32]) {
        let n = rgb.width as usize * rgb.height as usize;
        assert_eq!(out.len(), 3 * n, "tensor buffer size");
        assert_eq!(rgb.data.len(), 3 * n, "RGB buffer size");
        for (c, plane) in out.chunks_exact_mut(n).enumerate() {
            let (mean, std) = (self.mean[c], self.std[c]);
            for (o, px) in plane.iter_mut().zip(rgb.data.chunks_exact(3)) {
                // Two separately rounded steps, as torch does them: not fused, not reordered.
                let x = px[c] as f32 / 255.0;
                *o = (x - mean) / std;
            }
        }
    }

    /// Decodes image bytes and returns the encoder's input tensor (`3 × size × size`, CHW).
    pub fn image_tensor(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        let image = decode(bytes)?;
        let rgb = self.pixels(&image);
        let mut out = vec![0.0; 3 * rgb.width as usize * rgb.height as usize];
        self.tensor(&rgb, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::image::resample::resize_bicubic;

    #[test]
    fn clip_geometry() {
        let p = Preprocess::clip(224);
        // Landscape 500×375: height → 224, width int(224·500/375) = int(298.67) = 298;
        // crop offset round(74/2) = 37.
        let g = p.geometry(500, 375);
        assert_eq!((g.resized_width, g.resized_height), (298, 224));
        assert_eq!((g.window.x, g.window.y), (37, 0));
        // Portrait: the width is the shorter side.
        let g = p.geometry(375, 500);
        assert_eq!((g.resized_width, g.resized_height), (224, 298));
        assert_eq!((g.window.x, g.window.y), (0, 37));
        // Square and already-sized images.
        let g = p.geometry(100, 100);
        assert_eq!(
            (g.resized_width, g.resized_height, g.window.x),
            (224, 224, 0)
        );
        let g = p.geometry(224, 300);
        assert_eq!(
            (g.resized_width, g.resized_height, g.window.y),
            (224, 300, 38)
        );
        // Truncation, not rounding: 224·333/200 = 372.96 → 372.
        assert_eq!(p.geometry(333, 200).resized_width, 372);
    }

    #[test]
    fn crop_offsets_round_half_to_even() {
        let p = Preprocess::clip(224);
        // Resized long side 225: (225 − 224)/2 = 0.5 → 0; 227: 1.5 → 2; 229: 2.5 → 2; 226: 1.
        for (long, offset) in [
            (225u32, 0u64),
            (226, 1),
            (227, 2),
            (229, 2),
            (231, 4),
            (224, 0),
        ] {
            let g = p.geometry(long, 224);
            assert_eq!(g.resized_width, long as u64);
            assert_eq!(g.window.x, offset, "long side {long}");
        }
    }

    #[test]
    fn siglip_geometry_ignores_aspect() {
        let g = Preprocess::siglip(224).geometry(500, 101);
        assert_eq!((g.resized_width, g.resized_height), (224, 224));
        assert_eq!((g.window.x, g.window.y), (0, 0));
    }

    #[test]
    fn pixels_are_resize_then_crop() {
        let (w, h) = (61u32, 40u32);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let image = DecodedImage {
            width: w,
            height: h,
            channels: 3,
            data: data.clone(),
        };
        let p = Preprocess::clip(32);
        // 61×40 → int(32·61/40) = 48 × 32, crop x offset round(16/2) = 8.
        let full = resize_bicubic(&data, w, h, 3, 48, 32, PassOrder::HorizontalFirst);
        let mut want = Vec::new();
        for y in 0..32usize {
            want.extend_from_slice(&full[(y * 48 + 8) * 3..(y * 48 + 8 + 32) * 3]);
        }
        let got = p.pixels(&image);
        assert_eq!((got.width, got.height), (32, 32));
        assert_eq!(got.data, want);
    }

    #[test]
    fn grey_shortcut_equals_rgb_path() {
        let (w, h) = (37u32, 53u32);
        let grey: Vec<u8> = (0..w * h).map(|i| (i * 97 % 256) as u8).collect();
        let image = DecodedImage {
            width: w,
            height: h,
            channels: 1,
            data: grey.clone(),
        };
        let rgb = DecodedImage {
            width: w,
            height: h,
            channels: 3,
            data: grey.iter().flat_map(|&v| [v, v, v]).collect(),
        };
        for p in [
            Preprocess::clip(24),
            Preprocess::siglip(50),
            Preprocess::siglip(20).with_pass_order(PassOrder::Pillow13),
        ] {
            assert_eq!(p.pixels(&image), p.pixels(&rgb));
        }
        // Grey + alpha with a coloured background must go through RGB.
        let la = DecodedImage {
            width: 2,
            height: 2,
            channels: 2,
            data: vec![0, 0, 0, 0, 0, 0, 0, 0],
        };
        let p = Preprocess::siglip(2).with_background(Background::Color([255, 0, 0]));
        assert_eq!(p.pixels(&la).data, [255, 0, 0].repeat(4));
    }

    #[test]
    fn tensor_normalisation_values() {
        let p = Preprocess::clip(1);
        let rgb = Rgb8 {
            width: 1,
            height: 1,
            data: vec![0, 128, 255],
        };
        let mut out = [0f32; 3];
        p.tensor(&rgb, &mut out);
        // (0/255 − 0.48145466)/0.26862954, (128/255 − 0.4578275)/0.26130258,
        // (1 − 0.40821073)/0.27577711, each in f32.
        // The values NumPy computes in float32.
        assert_eq!(out, [-1.792_262_6, 0.168_897_32, 2.145_897]);
        // SigLIP maps 0 → −1, 255 → 1 exactly.
        let p = Preprocess::siglip(1);
        let rgb = Rgb8 {
            width: 1,
            height: 1,
            data: vec![0, 255, 51],
        };
        p.tensor(&rgb, &mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[1], 1.0);
        assert_eq!(out[2], (51f32 / 255.0 - 0.5) / 0.5);
    }

    #[test]
    fn tensor_is_channel_major() {
        let p = Preprocess::siglip(2);
        let rgb = Rgb8 {
            width: 2,
            height: 1,
            data: vec![0, 255, 0, 255, 0, 255],
        };
        let mut out = [0f32; 6];
        p.tensor(&rgb, &mut out);
        assert_eq!(out, [-1.0, 1.0, 1.0, -1.0, -1.0, 1.0]);
    }

    #[test]
    fn image_tensor_reports_bad_bytes() {
        let err = Preprocess::clip(224)
            .image_tensor(b"<html>not found</html>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTML"), "{err}");
    }
}
