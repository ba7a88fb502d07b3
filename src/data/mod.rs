//! Matrix files and their validation; sparse codes (CSR).

pub mod csr;
pub mod npy;
pub mod reader;

pub use npy::{Matrix, NpyWriter};
