//! Reading a checkpoint's tensors as flat host vectors, for the encoders that run on the host
//! kernels ([`super::host_ops`]).

use anyhow::{Context, Result};
use candle_nn::VarBuilder;

/// The tensor `name` of `shape`, flattened, with the name in the error.
pub fn get(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Vec<f32>> {
    Ok(vb
        .get(shape, name)
        .with_context(|| format!("weight {name}"))?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// A layer norm's weight and bias of width `h`.
pub fn norm(vb: &VarBuilder, h: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    Ok((get(vb, &[h], "weight")?, get(vb, &[h], "bias")?))
}
