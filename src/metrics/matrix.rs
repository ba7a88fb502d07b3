//! A borrowed, row-major `f32` matrix with its shape checked once.
//!
//! Metrics take `MatRef` rather than a bare slice so that every entry point
//! validates `len == rows × cols` in one place and the per-row loops below can
//! index without further checks.

use super::error::{MetricsError, Result};

/// Row-major view: row `i` is `data[i * cols .. (i + 1) * cols]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatRef<'a> {
    /// Wraps `data` as a `rows × cols` matrix; fails if the length does not match.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::named("matrix", data, rows, cols)
    }

    /// As [`MatRef::new`], with a name used in the error message.
    pub fn named(what: &'static str, data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        let expected = rows
            .checked_mul(cols)
            .ok_or(MetricsError::TooLarge { what, rows, cols })?;
        if data.len() != expected {
            return Err(MetricsError::BadLength {
                what,
                len: data.len(),
                rows,
                cols,
                expected,
            });
        }
        Ok(Self { data, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Row `i`; callers iterate `0..rows()`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Rows as consecutive slices. A matrix with zero columns yields no rows
    /// here, so per-row loops use `rows()` when that case matters.
    pub(crate) fn row_slices(&self) -> std::slice::ChunksExact<'a, f32> {
        self.data.chunks_exact(self.cols.max(1))
    }
}

/// Fails unless `a` and `b` have identical shapes (a sample and its
/// reconstruction, for instance).
pub(crate) fn same_shape(
    what: &'static str,
    left: &'static str,
    a: &MatRef<'_>,
    right: &'static str,
    b: &MatRef<'_>,
) -> Result<()> {
    if a.rows() != b.rows() || a.cols() != b.cols() {
        return Err(MetricsError::ShapeMismatch {
            what,
            left,
            left_rows: a.rows(),
            left_cols: a.cols(),
            right,
            right_rows: b.rows(),
            right_cols: b.cols(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_length() {
        let data = [1.0f32; 5];
        assert!(matches!(
            MatRef::new(&data, 2, 3),
            Err(MetricsError::BadLength { expected: 6, .. })
        ));
        let m = MatRef::new(&data[..4], 2, 2).unwrap();
        assert_eq!(m.row(1), &[1.0, 1.0]);
    }

    #[test]
    fn rejects_overflowing_shape() {
        assert!(matches!(
            MatRef::new(&[], usize::MAX, 2),
            Err(MetricsError::TooLarge { .. })
        ));
    }
}
