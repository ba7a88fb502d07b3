//! Matrix files and their validation.

pub mod npy;
pub mod reader;

pub use npy::{Matrix, NpyWriter};
