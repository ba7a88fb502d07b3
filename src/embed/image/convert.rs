//! From decoded samples to an opaque 8-bit RGB image.
//!
//! The alpha channel is either dropped ([`Background::Drop`], grey replicated into three
//! channels) or composited onto a solid colour ([`Background::Color`]) with the 8-bit integer
//! blend `t = v + 128; (t + (t >> 8)) >> 8`, an exact rounded division by 255. Images without
//! alpha are unaffected by the choice.
//! Compatibility details: docs/embed.md, "Colour conversion".

use super::decode::DecodedImage;

/// What to do with an alpha channel when converting to RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Background {
    /// Discard alpha (Pillow `convert("RGB")`).
    #[default]
    Drop,
    /// Composite onto this opaque colour (Pillow `paste` with the image's alpha as mask).
    Color([u8; 3]),
}

/// An opaque 8-bit RGB image, interleaved, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    /// `width × height × 3` samples.
    pub data: Vec<u8>,
}

/// `(bg·(255 − a) + fg·a) / 255`, rounded to nearest as Pillow's paste does.
#[inline]
pub(crate) fn blend(bg: u8, fg: u8, alpha: u8) -> u8 {
    let a = alpha as u32;
    let t = bg as u32 * (255 - a) + fg as u32 * a + 128;
    ((t + (t >> 8)) >> 8) as u8
}

impl DecodedImage {
    /// Converts to opaque RGB, dropping alpha or compositing it onto a background colour.
    pub fn to_rgb(&self, background: Background) -> Rgb8 {
        let n = self.width as usize * self.height as usize;
        let mut data = Vec::with_capacity(n * 3);
        // Rows are contiguous, so the whole image converts as one long row.
        rgb_row(
            &self.data[..n * self.channels as usize],
            self.channels,
            background,
            &mut data,
        );
        Rgb8 {
            width: self.width,
            height: self.height,
            data,
        }
    }

    /// Appends row `y` as opaque RGB to `out`, as [`Self::to_rgb`] converts it: for work that
    /// reads the image a row at a time without an RGB copy of the whole of it.
    pub fn rgb_row_into(&self, y: u32, background: Background, out: &mut Vec<u8>) {
        let stride = self.width as usize * self.channels as usize;
        let start = y as usize * stride;
        rgb_row(
            &self.data[start..start + stride],
            self.channels,
            background,
            out,
        );
    }
}

/// Appends the pixels of `src` (interleaved, `channels` samples each) to `out` as opaque RGB.
fn rgb_row(src: &[u8], channels: u8, background: Background, out: &mut Vec<u8>) {
    match (channels, background) {
        (3, _) => out.extend_from_slice(src),
        (1, _) => {
            for &g in src {
                out.extend_from_slice(&[g, g, g]);
            }
        }
        (2, Background::Drop) => {
            for px in src.chunks_exact(2) {
                out.extend_from_slice(&[px[0], px[0], px[0]]);
            }
        }
        (4, Background::Drop) => {
            for px in src.chunks_exact(4) {
                out.extend_from_slice(&px[..3]);
            }
        }
        (2, Background::Color(c)) => {
            for px in src.chunks_exact(2) {
                let (g, a) = (px[0], px[1]);
                out.extend_from_slice(&[blend(c[0], g, a), blend(c[1], g, a), blend(c[2], g, a)]);
            }
        }
        (4, Background::Color(c)) => {
            for px in src.chunks_exact(4) {
                let a = px[3];
                out.extend_from_slice(&[
                    blend(c[0], px[0], a),
                    blend(c[1], px[1], a),
                    blend(c[2], px[2], a),
                ]);
            }
        }
        (channels, _) => panic!("decoded image with {channels} channels"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_is_rounded_division_by_255() {
        for bg in (0..=255u32).step_by(5) {
            for fg in 0..=255u32 {
                for a in 0..=255u32 {
                    let exact = (bg * (255 - a) + fg * a) as f64 / 255.0;
                    // Never exactly half-way: 255 is odd.
                    let want = exact.round() as u8;
                    assert_eq!(blend(bg as u8, fg as u8, a as u8), want, "{bg} {fg} {a}");
                }
            }
        }
    }

    #[test]
    fn composite_rounding_examples() {
        // Half-transparent black on white: 255·127/255 + 0 = 127 (exact).
        assert_eq!(blend(255, 0, 128), 127);
        // 200·(255−1)/255 + 100·1/255 = 199.6078 → 200.
        assert_eq!(blend(200, 100, 1), 200);
        // Full alpha keeps the foreground, zero alpha the background.
        assert_eq!(blend(17, 230, 255), 230);
        assert_eq!(blend(17, 230, 0), 17);
        // 10·(255−170)/255 + 250·170/255 = 170.0 exactly.
        assert_eq!(blend(10, 250, 170), 170);
    }

    #[test]
    fn conversions() {
        let rgba = DecodedImage {
            width: 2,
            height: 1,
            channels: 4,
            data: vec![10, 20, 30, 0, 40, 50, 60, 255],
        };
        assert_eq!(
            rgba.to_rgb(Background::Drop).data,
            vec![10, 20, 30, 40, 50, 60]
        );
        assert_eq!(
            rgba.to_rgb(Background::Color([255, 128, 0])).data,
            vec![255, 128, 0, 40, 50, 60]
        );
        let la = DecodedImage {
            width: 2,
            height: 1,
            channels: 2,
            data: vec![100, 128, 7, 255],
        };
        assert_eq!(
            la.to_rgb(Background::Drop).data,
            vec![100, 100, 100, 7, 7, 7]
        );
        // 255·127/255 + 100·128/255 = 127 + 50.196 = 177.196 → 177.
        assert_eq!(
            la.to_rgb(Background::Color([255, 255, 255])).data,
            vec![177, 177, 177, 7, 7, 7]
        );
        let grey = DecodedImage {
            width: 1,
            height: 2,
            channels: 1,
            data: vec![3, 250],
        };
        for bg in [Background::Drop, Background::Color([1, 2, 3])] {
            assert_eq!(grey.to_rgb(bg).data, vec![3, 3, 3, 250, 250, 250]);
        }
    }
}
