//! Images: from PNG or JPEG bytes to an encoder's input, with Pillow's semantics.
//!
//! [`decode`] gives 8-bit samples in the image's own layout, [`DecodedImage::to_rgb`] makes them
//! opaque RGB (dropping alpha or compositing onto a [`Background`]), [`resize_bicubic`] /
//! [`resize_bicubic_window`] reproduce Pillow's bicubic resampler, and [`Preprocess`] applies
//! the encoders' geometry and normalisation, converting to RGB before resizing; [`thumbnail`]
//! makes the small JPEG previews the embed step stores beside its rows.
//! Compatibility details: docs/embed.md, "Compatibility with Pillow, PyTorch and open_clip".

mod convert;
mod decode;
pub mod preprocess;
pub mod resample;
pub mod thumbnail;

pub use convert::{Background, Rgb8};
pub use decode::{decode, DecodedImage, MAX_PIXELS};
pub use preprocess::{Geometry, Preprocess, CLIP_MEAN, CLIP_STD};
pub use resample::{resize_bicubic, resize_bicubic_window, PassOrder, Window};
pub use thumbnail::{thumbnail_jpeg, THUMBNAIL_QUALITY, THUMBNAIL_SIDE};
