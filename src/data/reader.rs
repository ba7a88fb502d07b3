//! Reading rows of a matrix file with positioned reads instead of through the memory map.
//!
//! Training gathers shuffled rows from the whole file every epoch; through a memory map every
//! touched page would count towards the process's resident set (8.9 GB for the CC3M training
//! matrix). Positioned reads go through the page cache without mapping it, so the resident set
//! stays at the size of one batch.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::data::npy::{Layout, Matrix};

pub struct RowReader {
    file: File,
    offset: u64,
    rows: usize,
    cols: usize,
    buf: Vec<f32>,
}

impl RowReader {
    /// A reader for the same data as `m` (which has validated shape and layout).
    pub fn new(m: &Matrix) -> Result<RowReader> {
        let file =
            File::open(m.path()).with_context(|| format!("cannot open {}", m.path().display()))?;
        let offset = match m.layout {
            Layout::Npy { data_offset } => data_offset as u64,
            Layout::Headerless => 0,
        };
        Ok(RowReader {
            file,
            offset,
            rows: m.rows(),
            cols: m.cols(),
            buf: Vec::new(),
        })
    }

    pub fn open(path: &Path) -> Result<RowReader> {
        RowReader::new(&Matrix::open(path)?)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row_bytes(&self) -> usize {
        self.cols * 4
    }

    /// Reads rows `start..end` into `out` (row-major).
    pub fn read_range(&self, start: usize, end: usize, out: &mut [f32]) -> Result<()> {
        if end > self.rows || start > end || out.len() != (end - start) * self.cols {
            bail!("internal: bad row range {start}..{end} of {}", self.rows);
        }
        // SAFETY: f32 has no invalid bit patterns; the slice covers exactly `out`.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, out.len() * 4) };
        let pos = self.offset + (start * self.row_bytes()) as u64;
        self.file
            .read_exact_at(bytes, pos)
            .context("reading matrix rows")?;
        Ok(())
    }

    /// Reads the given rows, in the given order, into `out`.
    pub fn gather(&self, rows: &[usize], out: &mut [f32]) -> Result<()> {
        if out.len() != rows.len() * self.cols {
            bail!("internal: gather buffer has the wrong size");
        }
        for (o, &r) in out.chunks_mut(self.cols).zip(rows) {
            self.read_range(r, r + 1, o)?;
        }
        Ok(())
    }

    /// Rows `start..end` in an internal buffer (for sequential passes such as statistics).
    pub fn chunk(&mut self, start: usize, end: usize) -> Result<&[f32]> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize((end.saturating_sub(start)) * self.cols, 0.0);
        let result = self.read_range(start, end, &mut buf);
        self.buf = buf;
        result?;
        Ok(&self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_same_rows_as_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        let values: Vec<f32> = (0..30).map(|i| i as f32).collect();
        crate::data::npy::write_matrix(&p, 10, 3, &values).unwrap();
        let m = Matrix::open(&p).unwrap();
        let mut r = RowReader::new(&m).unwrap();
        let mut out = vec![0f32; 6];
        r.gather(&[7, 2], &mut out).unwrap();
        assert_eq!(out, [21.0, 22.0, 23.0, 6.0, 7.0, 8.0]);
        assert_eq!(r.chunk(8, 10).unwrap(), m.rows_slice(8, 10));
        assert!(r.gather(&[10], &mut out[..3]).is_err());
    }
}
