//! Matrix files and their validation.

pub mod npy;

pub use npy::{Matrix, NpyWriter};
