//! Standardisation statistics on disk (safetensors): `mean` \[d\] f32, `scale` and `target_norm`
//! as one-element f64 tensors, and the row count in the metadata.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::stats::DatasetStats;

pub fn save(path: &Path, stats: &DatasetStats) -> Result<()> {
    let mean: Vec<u8> = stats.mean.iter().flat_map(|v| v.to_le_bytes()).collect();
    let scale = stats.scale.to_le_bytes();
    let target = stats.target_norm.to_le_bytes();
    let msq = stats.mean_sq_norm.unwrap_or(f64::NAN).to_le_bytes();
    let tensors = vec![
        (
            "mean",
            TensorView::new(Dtype::F32, vec![stats.mean.len()], &mean)?,
        ),
        ("scale", TensorView::new(Dtype::F64, vec![1], &scale)?),
        (
            "target_norm",
            TensorView::new(Dtype::F64, vec![1], &target)?,
        ),
        ("mean_sq_norm", TensorView::new(Dtype::F64, vec![1], &msq)?),
    ];
    let meta = HashMap::from([("rows".to_string(), stats.rows.to_string())]);
    safetensors::serialize_to_file(tensors, Some(meta), path)?;
    Ok(())
}

fn f64_of(st: &SafeTensors, name: &str) -> Result<f64> {
    let t = st.tensor(name)?;
    let bytes: [u8; 8] = t
        .data()
        .try_into()
        .map_err(|_| anyhow!("`{name}` is not one f64"))?;
    Ok(f64::from_le_bytes(bytes))
}

pub fn load(path: &Path) -> Result<DatasetStats> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a statistics file", path.display()))?;
    let mean: Vec<f32> = st
        .tensor("mean")?
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let rows = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("rows"))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let msq = f64_of(&st, "mean_sq_norm")?;
    Ok(DatasetStats {
        mean,
        scale: f64_of(&st, "scale")?,
        target_norm: f64_of(&st, "target_norm")?,
        mean_sq_norm: (!msq.is_nan()).then_some(msq),
        rows,
    })
}
