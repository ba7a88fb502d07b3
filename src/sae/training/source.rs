//! Where training rows come from: any matrix whose rows can be gathered in any order.

use crate::sae::{Result, SaeError};

/// A matrix of rows that can be gathered in any order (e.g. a memory-mapped embedding file).
pub trait RowSource: Sync {
    /// Number of rows.
    fn n_rows(&self) -> usize;
    /// Row width.
    fn dim(&self) -> usize;
    /// Copy the given rows, in the given order, into `out` (`rows.len() · dim` values).
    fn gather(&self, rows: &[usize], out: &mut [f32]) -> Result<()>;
}

/// An in-memory row-major matrix.
#[derive(Debug, Clone)]
pub struct MatrixSource {
    data: Vec<f32>,
    dim: usize,
}

impl MatrixSource {
    /// Wrap `data` (row-major, `dim` columns).
    pub fn new(data: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(SaeError::Data(format!(
                "{} values do not form rows of width {dim}",
                data.len()
            )));
        }
        Ok(MatrixSource { data, dim })
    }

    /// The underlying values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}

impl RowSource for MatrixSource {
    fn n_rows(&self) -> usize {
        self.data.len() / self.dim
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn gather(&self, rows: &[usize], out: &mut [f32]) -> Result<()> {
        let d = self.dim;
        if out.len() != rows.len() * d {
            return Err(SaeError::Data("gather buffer has the wrong size".into()));
        }
        for (o, &r) in out.chunks_mut(d).zip(rows) {
            let src = self
                .data
                .get(r * d..(r + 1) * d)
                .ok_or_else(|| SaeError::Data(format!("row {r} out of range")))?;
            o.copy_from_slice(src);
        }
        Ok(())
    }
}
