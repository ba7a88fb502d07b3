//! Sparse codes on disk: one safetensors file holding a matrix in compressed sparse rows (CSR),
//! the layout SciPy's `csr_matrix((values, indices, indptr), shape)` takes.
//!
//! Tensors: `indptr` (int64, rows + 1 entries, from 0 to nnz, non-decreasing), `indices` (int32,
//! nnz column numbers; row r's entries are `indptr[r]..indptr[r+1]`) and `values` (float32, nnz).
//! The shape is the metadata entry `csr_shape` = `"<rows>,<cols>"`, the only metadata entry, so
//! the bytes are the same on every run (safetensors writes its metadata map in hash order).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// A sparse matrix in compressed sparse rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub rows: usize,
    pub cols: usize,
    pub indptr: Vec<i64>,
    pub indices: Vec<i32>,
    pub values: Vec<f32>,
}

impl Csr {
    /// Row `r`'s column numbers and values.
    pub fn row(&self, r: usize) -> (&[i32], &[f32]) {
        let (a, b) = (self.indptr[r] as usize, self.indptr[r + 1] as usize);
        (&self.indices[a..b], &self.values[a..b])
    }
}

/// Writes `indptr`, `indices` and `values` of a `[indptr.len() - 1, cols]` matrix to `path`.
pub fn write_csr(
    path: &Path,
    indptr: &[i64],
    indices: &[i32],
    values: &[f32],
    cols: usize,
) -> Result<()> {
    let rows = indptr.len() - 1;
    let indptr: Vec<u8> = indptr.iter().flat_map(|v| v.to_le_bytes()).collect();
    let index_bytes: Vec<u8> = indices.iter().flat_map(|v| v.to_le_bytes()).collect();
    let value_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let nnz = values.len();
    let tensors = vec![
        (
            "indptr",
            TensorView::new(Dtype::I64, vec![rows + 1], &indptr)?,
        ),
        (
            "indices",
            TensorView::new(Dtype::I32, vec![nnz], &index_bytes)?,
        ),
        (
            "values",
            TensorView::new(Dtype::F32, vec![nnz], &value_bytes)?,
        ),
    ];
    let meta = HashMap::from([("csr_shape".to_string(), format!("{rows},{cols}"))]);
    safetensors::serialize_to_file(tensors, Some(meta), path)?;
    Ok(())
}

/// The raw little-endian bytes of tensor `name`, checked to be of `dtype` and one-dimensional.
fn tensor<'a>(st: &'a SafeTensors, name: &str, dtype: Dtype) -> Result<&'a [u8]> {
    let t = st
        .tensor(name)
        .map_err(|_| anyhow!("it has no tensor `{name}`"))?;
    if t.dtype() != dtype || t.shape().len() != 1 {
        bail!(
            "tensor `{name}` is {:?} {:?}, not a vector of {dtype:?}",
            t.dtype(),
            t.shape()
        );
    }
    Ok(t.data())
}

/// Reads and validates a CSR file written by [`write_csr`] (or by anything writing the layout
/// of the module documentation).
pub fn read_csr(path: &Path) -> Result<Csr> {
    let what = || format!("{} is not a CSR codes file", path.display());
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(what)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).with_context(what)?;
    let shape = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("csr_shape"))
        .ok_or_else(|| anyhow!("it has no `csr_shape` metadata"))
        .with_context(what)?;
    let parsed: Option<(usize, usize)> = shape
        .split_once(',')
        .and_then(|(r, c)| Some((r.trim().parse().ok()?, c.trim().parse().ok()?)));
    let (rows, cols) = parsed
        .ok_or_else(|| anyhow!("`csr_shape` is `{shape}`, not `<rows>,<cols>`"))
        .with_context(what)?;
    let indptr: Vec<i64> = tensor(&st, "indptr", Dtype::I64)
        .with_context(what)?
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let indices: Vec<i32> = tensor(&st, "indices", Dtype::I32)
        .with_context(what)?
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let values: Vec<f32> = tensor(&st, "values", Dtype::F32)
        .with_context(what)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let csr = Csr {
        rows,
        cols,
        indptr,
        indices,
        values,
    };
    check(&csr).with_context(what)?;
    Ok(csr)
}

/// The invariants every reader relies on, so that [`Csr::row`] can never index out of bounds.
fn check(c: &Csr) -> Result<()> {
    if c.indptr.len() != c.rows + 1 {
        bail!(
            "`indptr` has {} entries for {} rows (needs rows + 1)",
            c.indptr.len(),
            c.rows
        );
    }
    if c.indices.len() != c.values.len() {
        bail!("{} indices but {} values", c.indices.len(), c.values.len());
    }
    if c.indptr[0] != 0 || c.indptr[c.rows] != c.values.len() as i64 {
        bail!(
            "`indptr` runs from {} to {}, not from 0 to the {} stored entries",
            c.indptr[0],
            c.indptr[c.rows],
            c.values.len()
        );
    }
    if let Some(r) = c.indptr.windows(2).position(|w| w[1] < w[0]) {
        bail!("`indptr` decreases at row {r}");
    }
    if let Some(&j) = c.indices.iter().find(|&&j| j < 0 || j as usize >= c.cols) {
        bail!("column {j} is outside 0..{}", c.cols);
    }
    Ok(())
}

#[cfg(test)]
// Index loops mirror the formulas the tests check against.
#[allow(
    clippy::needless_range_loop,
    clippy::type_complexity,
    clippy::useless_vec
)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rows() {
        let dir = std::env::temp_dir().join(format!("msae-csr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("codes.safetensors");
        // [[0, 2.5, 0], [0, 0, 0], [1, 0, -3]]
        write_csr(&path, &[0, 1, 1, 3], &[1, 0, 2], &[2.5, 1.0, -3.0], 3).unwrap();
        let c = read_csr(&path).unwrap();
        assert_eq!((c.rows, c.cols), (3, 3));
        assert_eq!(c.row(0), (&[1][..], &[2.5f32][..]));
        assert_eq!(c.row(1), (&[][..], &[][..]));
        assert_eq!(c.row(2), (&[0, 2][..], &[1.0f32, -3.0][..]));
        // The same call writes the same bytes.
        let first = std::fs::read(&path).unwrap();
        write_csr(&path, &[0, 1, 1, 3], &[1, 0, 2], &[2.5, 1.0, -3.0], 3).unwrap();
        assert_eq!(first, std::fs::read(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_files_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("msae-csr-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("codes.safetensors");
        let cases: [(&[i64], &[i32], &[f32], usize, &str); 4] = [
            (&[0, 1], &[3], &[1.0], 3, "column 3 is outside 0..3"),
            (&[0, 2], &[0], &[1.0], 3, "not from 0 to the 1 stored"),
            (&[0, 2, 1, 2], &[0, 1], &[1.0, 1.0], 3, "decreases at row 1"),
            (&[0, 1], &[-1], &[1.0], 3, "column -1 is outside"),
        ];
        for (indptr, indices, values, cols, want) in cases {
            write_csr(&path, indptr, indices, values, cols).unwrap();
            let err = format!("{:#}", read_csr(&path).unwrap_err());
            assert!(err.contains(want), "{err}");
            assert!(err.contains("is not a CSR codes file"), "{err}");
        }
        std::fs::write(&path, b"\x93NUMPY not safetensors").unwrap();
        assert!(read_csr(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
