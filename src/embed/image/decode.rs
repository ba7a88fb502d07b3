//! Decoding PNG and JPEG bytes into 8-bit interleaved pixels, in the image's own channel layout
//! (grey, grey + alpha, RGB, RGBA); [`DecodedImage::to_rgb`] converts them to RGB afterwards.
//!
//! The format is chosen by the leading magic bytes, never by the file name. PNG goes through the
//! `png` crate (palettes and low bit depths expanded, 16-bit samples cut to their high byte),
//! JPEG through `zune-jpeg` (CMYK converted here). Sizes are checked against [`MAX_PIXELS`]
//! before any pixel buffer is allocated, and a panic inside a decoder becomes an error.
//! Compatibility details: docs/embed.md, "Decoding".

use anyhow::{anyhow, bail, Context, Result};
use std::io::Cursor;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// The largest image (width × height) we decode: Pillow's `MAX_IMAGE_PIXELS` × 2, the size above
/// which `Image.open` raises `DecompressionBombError` instead of warning.
pub const MAX_PIXELS: u64 = 178_956_970;

/// An image as decoded: 8 bits per sample, interleaved, rows top to bottom without padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedImage {
    pub width: u32,
    pub height: u32,
    /// 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.
    pub channels: u8,
    /// `width × height × channels` samples.
    pub data: Vec<u8>,
}

impl DecodedImage {
    /// Whether the image carries an alpha channel.
    pub fn has_alpha(&self) -> bool {
        self.channels == 2 || self.channels == 4
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Decodes PNG or JPEG bytes (detected by their magic bytes).
pub fn decode(bytes: &[u8]) -> Result<DecodedImage> {
    if bytes.starts_with(PNG_SIGNATURE) {
        guarded("PNG", || decode_png(bytes))
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        guarded("JPEG", || decode_jpeg(bytes))
    } else {
        bail!(
            "not a PNG or JPEG image: the bytes look like {}",
            describe(bytes)
        )
    }
}

/// Runs a decoder, turning a panic inside it into an error.
fn guarded(format: &str, f: impl FnOnce() -> Result<DecodedImage>) -> Result<DecodedImage> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(anyhow!("{format} decoder failed on malformed data: {msg}"))
        }
    }
}

fn check_size(format: &str, width: u64, height: u64) -> Result<()> {
    if width == 0 || height == 0 {
        bail!("{format} image has zero size ({width}×{height})");
    }
    let pixels = width * height;
    if pixels > MAX_PIXELS {
        bail!(
            "{format} image is {width}×{height} = {pixels} pixels, over the limit of {MAX_PIXELS} \
             (a possible decompression bomb)"
        );
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> Result<DecodedImage> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    // Text and colour-profile chunks are not used; skipping them also skips decompressing them.
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    let header = decoder
        .read_header_info()
        .map_err(|e| anyhow!("corrupt PNG header: {e}"))?;
    check_size("PNG", header.width as u64, header.height as u64)?;
    // The crate's default allocation limit (64 MiB, for its own row buffers and chunk data)
    // would refuse legitimate very wide images; scale it with the announced width instead, now
    // that the pixel count has been checked. (The output buffer is ours and not counted.)
    let row_bytes = header.width as usize * 8 + 1;
    decoder.set_limits(png::Limits {
        bytes: (64 << 20) + 4 * row_bytes,
    });
    let mut reader = decoder
        .read_info()
        .map_err(|e| anyhow!("corrupt PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .context("PNG image too large for this machine's address space")?;
    let mut data = vec![0u8; size];
    let frame = reader
        .next_frame(&mut data)
        .map_err(|e| anyhow!("corrupt or truncated PNG data: {e}"))?;
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => bail!("PNG palette was not expanded"),
    };
    if frame.bit_depth != png::BitDepth::Eight {
        bail!("PNG samples were not reduced to 8 bits");
    }
    let (width, height) = (frame.width, frame.height);
    let row = width as usize * channels as usize;
    // The crate reports its line size; repack if it ever differs from the tight row length.
    if frame.line_size != row {
        let packed = data
            .chunks(frame.line_size)
            .take(height as usize)
            .flat_map(|line| &line[..row])
            .copied()
            .collect();
        data = packed;
    } else {
        data.truncate(row * height as usize);
    }
    Ok(DecodedImage {
        width,
        height,
        channels,
        data,
    })
}

fn decode_jpeg(bytes: &[u8]) -> Result<DecodedImage> {
    // JPEG dimensions are 16-bit; the crate's default cap (16384) is lower than what Pillow opens.
    let options = DecoderOptions::new_fast()
        .set_max_width(u16::MAX as usize)
        .set_max_height(u16::MAX as usize);
    let mut probe = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    probe
        .decode_headers()
        .map_err(|e| anyhow!("corrupt JPEG header: {e:?}"))?;
    let (width, height) = probe
        .dimensions()
        .context("JPEG headers carry no dimensions")?;
    check_size("JPEG", width as u64, height as u64)?;
    if !jpeg_has_end(bytes) {
        bail!("truncated JPEG: the data ends before the end-of-image marker");
    }
    let input = probe
        .input_colorspace()
        .context("JPEG headers carry no colour space")?;
    let (out_space, channels) = match input {
        ColorSpace::Luma => (ColorSpace::Luma, 1u8),
        // Raw samples; converted below with Pillow's formula.
        ColorSpace::CMYK => (ColorSpace::CMYK, 4),
        _ => (ColorSpace::RGB, 3),
    };
    let mut decoder = JpegDecoder::new_with_options(
        ZCursor::new(bytes),
        options.jpeg_set_out_colorspace(out_space),
    );
    let raw = decoder
        .decode()
        .map_err(|e| anyhow!("corrupt or truncated JPEG data: {e:?}"))?;
    let expected = width * height * channels as usize;
    if raw.len() < expected {
        bail!(
            "JPEG decoder returned {} bytes for a {width}×{height} image",
            raw.len()
        );
    }
    let data = if input == ColorSpace::CMYK {
        cmyk_to_rgb(&raw[..expected])
    } else {
        let mut raw = raw;
        raw.truncate(expected);
        raw
    };
    Ok(DecodedImage {
        width: width as u32,
        height: height as u32,
        channels: if input == ColorSpace::CMYK {
            3
        } else {
            channels
        },
        data,
    })
}

/// Whether the JPEG's compressed data runs to an end-of-image marker.
///
/// The decoder fills a cut-off image with grey and reports success; Pillow refuses such a file
/// ("image file is truncated"), even when only the final marker is missing, and so do we. The
/// marker segments before the first scan are walked by their lengths (an EXIF thumbnail inside
/// APP1 carries its own end marker, which must not count); after the first start-of-scan, the
/// bytes `FF D9` can only be the end marker, since compressed data stuffs every `FF` with `00`
/// and interleaves only restart and scan markers.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let mut pos = 2; // after SOI
    loop {
        // Markers may be preceded by any number of fill bytes.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if bytes.get(pos) != Some(&0xFF) {
            return false;
        }
        let Some(&marker) = bytes.get(pos + 1) else {
            return false;
        };
        match marker {
            0xDA => break,
            0xD9 => return false, // an image without any scan
            0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let Some(len) = bytes.get(pos + 2..pos + 4) else {
                    return false;
                };
                pos += 2 + u16::from_be_bytes([len[0], len[1]]) as usize;
            }
        }
    }
    bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// `a·b/255` rounded, in Pillow's integer form (exact for 8-bit operands).
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// Raw JPEG CMYK samples to RGB as Pillow does: it reads them as inverted ("Adobe") CMYK, then
/// converts with `R = (255 − K) − (255 − K)·C/255` on the re-inverted values.
fn cmyk_to_rgb(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / 4 * 3);
    for px in raw.chunks_exact(4) {
        let nk = px[3] as u32; // 255 − K with K = 255 − raw
        for &c in &px[..3] {
            let c = 255 - c as u32;
            out.push(nk.saturating_sub(muldiv255(c, nk)) as u8);
        }
    }
    out
}

/// A short description of what unrecognised bytes look like, for error messages.
fn describe(bytes: &[u8]) -> String {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    let kind = if bytes.is_empty() {
        "nothing (empty input)"
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        "a GIF image"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "a WebP image"
    } else if starts(b"BM") {
        "a BMP image"
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        "a TIFF image"
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        match &bytes[8..12] {
            b"avif" | b"avis" => "an AVIF image",
            b"heic" | b"heix" | b"mif1" | b"msf1" => "a HEIF/HEIC image",
            _ => "an ISO media file (MP4/HEIF family)",
        }
    } else if starts(b"\xFF\x0A") || starts(b"\0\0\0\x0CJXL \r\n\x87\n") {
        "a JPEG XL image"
    } else if starts(b"\0\0\0\x0CjP  \r\n\x87\n") {
        "a JPEG 2000 image"
    } else if starts(b"8BPS") {
        "a Photoshop document"
    } else if starts(b"%PDF") {
        "a PDF document"
    } else if starts(b"\x1F\x8B") {
        "gzip-compressed data"
    } else if starts(b"PK\x03\x04") {
        "a ZIP archive"
    } else if starts(b"\x89PNG") {
        "a PNG with a damaged signature"
    } else if starts(b"\xFF\xD8") {
        "a JPEG with a damaged start marker"
    } else if looks_like_markup(bytes) {
        "HTML or XML text (an error page or an SVG?)"
    } else if bytes
        .iter()
        .take(512)
        .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7F).contains(&b))
    {
        "plain text"
    } else {
        "unrecognised binary data"
    };
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    if head.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} (first bytes {})", head.join(" "))
    }
}

fn looks_like_markup(bytes: &[u8]) -> bool {
    let text = bytes
        .iter()
        .skip_while(|b| b.is_ascii_whitespace() || **b == 0xEF || **b == 0xBB || **b == 0xBF)
        .take(64)
        .map(|b| b.to_ascii_lowercase())
        .collect::<Vec<u8>>();
    text.starts_with(b"<")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG from its parts, with correct CRCs, so tests can build any colour type and damage it.
    fn png_bytes(width: u32, height: u32, color: u8, depth: u8, rows: &[Vec<u8>]) -> Vec<u8> {
        png_with_chunks(width, height, color, depth, rows, &[])
    }

    fn png_with_chunks(
        width: u32,
        height: u32,
        color: u8,
        depth: u8,
        rows: &[Vec<u8>],
        extra: &[(&[u8; 4], Vec<u8>)],
    ) -> Vec<u8> {
        let mut out = PNG_SIGNATURE.to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        for (kind, data) in extra {
            chunk(&mut out, kind, data);
        }
        let mut raw = Vec::new();
        for row in rows {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        chunk(&mut out, b"IDAT", &zlib_stored(&raw));
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// zlib stream with stored (uncompressed) blocks: no compressor needed in the tests.
    fn zlib_stored(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0x78, 0x01];
        let blocks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(65_535).collect()
        };
        for (i, block) in blocks.iter().enumerate() {
            out.push(u8::from(i + 1 == blocks.len()));
            let len = block.len() as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(block);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + x as u32) % 65_521;
            b = (b + a) % 65_521;
        }
        out.extend_from_slice(&((b << 16) | a).to_be_bytes());
        out
    }

    #[test]
    fn decodes_rgba_png() {
        let rows = vec![
            vec![1, 2, 3, 4, 5, 6, 7, 8],
            vec![9, 10, 11, 12, 13, 14, 15, 16],
        ];
        let img = decode(&png_bytes(2, 2, 6, 8, &rows)).unwrap();
        assert_eq!((img.width, img.height, img.channels), (2, 2, 4));
        assert_eq!(img.data, (1..=16).collect::<Vec<u8>>());
        assert!(img.has_alpha());
    }

    #[test]
    fn expands_palette_with_transparency() {
        // Two palette entries, alpha for the first only; index 2 is past the palette: black.
        let img = decode(&png_with_chunks(
            3,
            1,
            3,
            8,
            &[vec![0, 1, 2]],
            &[
                (b"PLTE", vec![10, 20, 30, 40, 50, 60]),
                (b"tRNS", vec![128]),
            ],
        ))
        .unwrap();
        assert_eq!(img.channels, 4);
        assert_eq!(
            img.data,
            vec![10, 20, 30, 128, 40, 50, 60, 255, 0, 0, 0, 255]
        );
    }

    #[test]
    fn scales_low_bit_grey_and_truncates_16_bit() {
        // 2-bit grey 0..3 → 0, 85, 170, 255.
        let img = decode(&png_bytes(4, 1, 0, 2, &[vec![0b0001_1011]])).unwrap();
        assert_eq!((img.channels, img.data.clone()), (1, vec![0, 85, 170, 255]));
        // 16-bit RGB keeps the high byte (0x12ff → 0x12, not rounded up).
        let img = decode(&png_bytes(
            1,
            1,
            2,
            16,
            &[vec![0x12, 0xff, 0x80, 0x00, 0x7f, 0xff]],
        ))
        .unwrap();
        assert_eq!(
            (img.channels, img.data.clone()),
            (3, vec![0x12, 0x80, 0x7f])
        );
    }

    #[test]
    fn sixteen_bit_grey_keeps_the_high_byte() {
        // Pillow would clip these to 255 (mode I;16 → RGB); see docs/embed.md, "Decoding".
        let img = decode(&png_bytes(
            3,
            1,
            0,
            16,
            &[vec![0x00, 0xff, 0x12, 0x34, 0xff, 0x00]],
        ))
        .unwrap();
        assert_eq!(
            (img.channels, img.data.clone()),
            (1, vec![0x00, 0x12, 0xff])
        );
    }

    #[test]
    fn low_bit_grey_transparency_value_becomes_alpha() {
        // 2-bit grey 0..3 with value 1 transparent: alpha 0 on the second pixel (scaled to 85).
        let img = decode(&png_with_chunks(
            4,
            1,
            0,
            2,
            &[vec![0b0001_1011]],
            &[(b"tRNS", vec![0, 1])],
        ))
        .unwrap();
        assert_eq!(img.channels, 2);
        assert_eq!(img.data, vec![0, 255, 85, 0, 170, 255, 255, 255]);
    }

    #[test]
    fn rgb_transparency_value_becomes_alpha() {
        let img = decode(&png_with_chunks(
            2,
            1,
            2,
            8,
            &[vec![1, 2, 3, 4, 5, 6]],
            &[(b"tRNS", vec![0, 4, 0, 5, 0, 6])],
        ))
        .unwrap();
        assert_eq!(img.channels, 4);
        assert_eq!(img.data, vec![1, 2, 3, 255, 4, 5, 6, 0]);
    }

    #[test]
    fn truncated_png_is_an_error() {
        let rows: Vec<Vec<u8>> = (0..64).map(|y| vec![y as u8; 64 * 3]).collect();
        let full = png_bytes(64, 64, 2, 8, &rows);
        assert!(decode(&full).is_ok());
        for cut in [9, 20, 33, 60, full.len() / 2, full.len() - 13] {
            let err = decode(&full[..cut]).unwrap_err().to_string();
            assert!(err.contains("PNG"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn corrupt_png_data_is_an_error() {
        let rows: Vec<Vec<u8>> = (0..16).map(|y| vec![y as u8; 16]).collect();
        let mut bytes = png_bytes(16, 16, 0, 8, &rows);
        // Flip a byte inside the IDAT payload: the CRC no longer matches.
        let idat = bytes.windows(4).position(|w| w == b"IDAT").unwrap();
        bytes[idat + 20] ^= 0x55;
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("PNG"), "{err}");
    }

    #[test]
    fn random_bytes_are_an_error_not_a_panic() {
        // A small xorshift generator: deterministic garbage, some of it behind valid magic bytes.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..300 {
            let len = (next() % 2048) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            match round % 3 {
                0 => {}
                1 => {
                    bytes.splice(0..0, PNG_SIGNATURE.iter().copied());
                }
                _ => {
                    bytes.splice(0..0, [0xFF, 0xD8, 0xFF, 0xE0]);
                }
            }
            assert!(decode(&bytes).is_err(), "round {round} decoded garbage");
        }
    }

    #[test]
    fn unknown_formats_are_named() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty"),
            (b"GIF89a\x01\x00\x01\x00", "GIF"),
            (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WebP"),
            (b"<!DOCTYPE html><html>", "HTML"),
            (b"just some words\n", "plain text"),
            (b"\x00\x01\x02\x03\xfe", "unrecognised binary"),
        ];
        for (bytes, want) in cases {
            let err = decode(bytes).unwrap_err().to_string();
            assert!(err.contains("not a PNG or JPEG"), "{err}");
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    /// An 8×8 grey JPEG written by Pillow (libjpeg-turbo, quality 90, optimised tables). Pillow
    /// decodes its first row as 1, 30, 61, 90, 121, 149, 181, 210.
    const TINY_JPEG: [u8; 169] = [
        0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x03, 0x02, 0x02, 0x03, 0x02,
        0x02, 0x03, 0x03, 0x03, 0x03, 0x04, 0x03, 0x03, 0x04, 0x05, 0x08, 0x05, 0x05, 0x04, 0x04,
        0x05, 0x0a, 0x07, 0x07, 0x06, 0x08, 0x0c, 0x0a, 0x0c, 0x0c, 0x0b, 0x0a, 0x0b, 0x0b, 0x0d,
        0x0e, 0x12, 0x10, 0x0d, 0x0e, 0x11, 0x0e, 0x0b, 0x0b, 0x10, 0x16, 0x10, 0x11, 0x13, 0x14,
        0x15, 0x15, 0x15, 0x0c, 0x0f, 0x17, 0x18, 0x16, 0x14, 0x18, 0x12, 0x14, 0x15, 0x14, 0xff,
        0xc0, 0x00, 0x0b, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00, 0xff, 0xc4, 0x00,
        0x14, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x06, 0xff, 0xc4, 0x00, 0x19, 0x10, 0x00, 0x01, 0x05, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x09, 0x21, 0x35,
        0x52, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3f, 0x00, 0x28, 0xdd, 0xc9, 0xb5,
        0x91, 0x93, 0xff, 0xd9,
    ];

    #[test]
    fn decodes_grey_jpeg() {
        let img = decode(&TINY_JPEG).unwrap();
        assert_eq!((img.width, img.height, img.channels), (8, 8, 1));
        let pillow = [1u8, 30, 61, 90, 121, 149, 181, 210];
        for (ours, theirs) in img.data[..8].iter().zip(pillow) {
            // Another decoder: within a few levels, not bit-exact.
            assert!(
                ours.abs_diff(theirs) <= 3,
                "{:?} vs {pillow:?}",
                &img.data[..8]
            );
        }
        // Trailing bytes after the end marker are ignored, as Pillow ignores them.
        let mut padded = TINY_JPEG.to_vec();
        padded.extend_from_slice(b"trailing\xff\xd8");
        assert_eq!(decode(&padded).unwrap(), img);
    }

    #[test]
    fn truncated_jpeg_is_an_error() {
        for cut in [3, 20, 90, 100, 150, 160, 166, 167, 168] {
            let err = decode(&TINY_JPEG[..cut]).unwrap_err().to_string();
            assert!(err.contains("JPEG"), "cut at {cut}: {err}");
        }
        // An end marker inside an APP segment (an EXIF thumbnail's) does not count.
        let mut with_app = TINY_JPEG[..2].to_vec();
        with_app.extend_from_slice(&[0xff, 0xe1, 0x00, 0x06, 0xff, 0xd9, 0xff, 0xd9]);
        with_app.extend_from_slice(&TINY_JPEG[2..]);
        assert!(decode(&with_app).is_ok());
        let err = decode(&with_app[..with_app.len() - 2])
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated JPEG"), "{err}");
    }

    #[test]
    fn refuses_decompression_bombs_from_the_header() {
        // 20000 × 20000 announced in a tiny file: refused before allocating 1.2 GB.
        let bytes = png_bytes(20_000, 20_000, 2, 8, &[]);
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("decompression bomb"), "{err}");
        assert!(err.contains("400000000"), "{err}");
        // Just under the limit is only a size check here (the data is missing → an error, but
        // not the bomb error).
        let err = decode(&png_bytes(13_000, 13_000, 0, 8, &[]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("bomb"), "{err}");
        // A JPEG start-of-frame announcing 65535 × 65535.
        let mut jpeg = vec![
            0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 3,
        ];
        for id in 1..=3u8 {
            jpeg.extend_from_slice(&[id, 0x11, 0]);
        }
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        let err = decode(&jpeg).unwrap_err().to_string();
        assert!(err.contains("JPEG"), "{err}");
    }

    #[test]
    fn pillow_cmyk_formula() {
        // Raw (inverted) K = 255 means no black ink; raw C = 255 means no cyan: white.
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255]), vec![255, 255, 255]);
        // Full black ink: black whatever the colour.
        assert_eq!(cmyk_to_rgb(&[10, 200, 255, 0]), vec![0, 0, 0]);
        // Full cyan, no black: red channel 0, others 255.
        assert_eq!(cmyk_to_rgb(&[0, 255, 255, 255]), vec![0, 255, 255]);
        // Rounding: nk = 128, c = 255 − 55 = 200 → 128 − round(200·128/255) = 128 − 100 = 28.
        assert_eq!(cmyk_to_rgb(&[55, 55, 55, 128]), vec![28, 28, 28]);
    }

    #[test]
    fn muldiv255_is_rounded_division() {
        for a in 0..=255u32 {
            for b in 0..=255u32 {
                let exact = (a * b) as f64 / 255.0;
                assert_eq!(muldiv255(a, b), exact.round() as u32, "{a}·{b}");
            }
        }
    }
}
