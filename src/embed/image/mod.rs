//! Images: decoding (PNG, JPEG) and the reference's preprocessing, with Pillow's resampling
//! semantics so that pixels agree with the Python pipeline.
//!
//! The path from bytes to an encoder's input:
//!
//! 1. [`decode`]: PNG or JPEG (by magic bytes) to 8-bit samples in the image's own layout (grey,
//!    grey + alpha, RGB, RGBA), with Pillow's handling of palettes, transparency and bit depths.
//! 2. [`DecodedImage::to_rgb`]: to opaque RGB, dropping alpha (Pillow `convert("RGB")`, the
//!    reference's choice) or compositing onto a [`Background`] colour with Pillow's integer blend.
//! 3. [`resize_bicubic`] / [`resize_bicubic_window`]: Pillow's bicubic resampler, reproduced
//!    step by step (kernel, support, fixed-point weights, 8-bit intermediate) so that the
//!    pixels are Pillow's, not merely close to them.
//! 4. [`Preprocess`]: torchvision's `Resize` / `CenterCrop` geometry for CLIP, the plain square
//!    resize for SigLIP, then `ToTensor` and `Normalize` into a CHW `f32` tensor.
//!
//! Conversion to RGB comes first, before resizing; see [`preprocess`] for why that matches the
//! reference although the OpenAI transform lists it after the crop.

mod convert;
mod decode;
pub mod preprocess;
pub mod resample;

pub use convert::{Background, Rgb8};
pub use decode::{decode, DecodedImage, MAX_PIXELS};
pub use preprocess::{Geometry, Preprocess, CLIP_MEAN, CLIP_STD};
pub use resample::{resize_bicubic, resize_bicubic_window, PassOrder, Window};
