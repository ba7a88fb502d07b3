//! Matrix files and their validation.

pub mod npy;
pub mod reader;
pub mod stats_file;

pub use npy::{Matrix, NpyWriter};
