//! Float32 matrices on disk: NumPy `.npy` files (with header) and the reference code's headerless
//! raw files whose shape lives only in the name (`..._<N>_<D>.npy`).
//!
//! The two are told apart by the NumPy magic bytes at the start of the file, never by guessing
//! from the name. Matrices are memory-mapped, so a multi-gigabyte training set is never read
//! whole into memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;

const MAGIC: &[u8] = b"\x93NUMPY";

/// How a matrix file stores its numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// A NumPy `.npy` file; data starts after the header.
    Npy { data_offset: usize },
    /// Raw little-endian float32 (reference format); shape taken from the file name.
    Headerless,
}

/// A read-only, memory-mapped float32 matrix in row-major order.
pub struct Matrix {
    path: PathBuf,
    map: Option<Mmap>,
    offset: usize,
    rows: usize,
    cols: usize,
    pub layout: Layout,
}

#[cfg(not(target_endian = "little"))]
compile_error!("msae reads little-endian float32 files in place and needs a little-endian machine");

impl Matrix {
    /// Opens a `.npy` file or a headerless reference file.
    pub fn open(path: &Path) -> Result<Matrix> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata()?.len() as usize;
        // An empty file cannot be mapped; it is only valid as a headerless 0-row matrix.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the store's files are immutable once written; external files are hashed
            // before use and a concurrent writer would be a user error we cannot prevent.
            Some(
                unsafe { Mmap::map(&file) }
                    .with_context(|| format!("cannot map {}", path.display()))?,
            )
        };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let (layout, rows, cols) = if bytes.starts_with(MAGIC) {
            let (offset, rows, cols) = parse_header(bytes)
                .with_context(|| format!("{} is not a float32 matrix .npy file", path.display()))?;
            (
                Layout::Npy {
                    data_offset: offset,
                },
                rows,
                cols,
            )
        } else {
            let (rows, cols) = shape_from_name(path)?;
            (Layout::Headerless, rows, cols)
        };
        let offset = match layout {
            Layout::Npy { data_offset } => data_offset,
            Layout::Headerless => 0,
        };
        let expected = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| anyhow!("{}: shape {rows}×{cols} is too large", path.display()))?;
        if len - offset.min(len) != expected {
            bail!(
                "{}: size does not match its shape: {rows} rows × {cols} columns of float32 need {expected} bytes of data, the file has {}",
                path.display(),
                len.saturating_sub(offset)
            );
        }
        if offset % 4 != 0 {
            bail!(
                "{}: the data is not 4-byte aligned (header of {offset} bytes)",
                path.display()
            );
        }
        Ok(Matrix {
            path: path.to_path_buf(),
            map,
            offset,
            rows,
            cols,
            layout,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All values, row-major.
    pub fn data(&self) -> &[f32] {
        let Some(map) = &self.map else { return &[] };
        let bytes = &map[self.offset..];
        // SAFETY: checked above that the length is rows·cols·4 and the offset 4-byte aligned;
        // mmap bases are page aligned, so the pointer is aligned for f32.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, self.rows * self.cols) }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data()[i * self.cols..(i + 1) * self.cols]
    }

    /// Rows `start..end`, row-major.
    pub fn rows_slice(&self, start: usize, end: usize) -> &[f32] {
        &self.data()[start * self.cols..end * self.cols]
    }
}

/// Reads the `.npy` header: returns (data offset, rows, cols). Accepts 1-D (as one column) and
/// 2-D little-endian float32 arrays in C order, format versions 1 to 3.
fn parse_header(bytes: &[u8]) -> Result<(usize, usize, usize)> {
    if bytes.len() < 10 {
        bail!("truncated header");
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated header");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy format version {v}"),
    };
    let end = start + header_len;
    let header = std::str::from_utf8(
        bytes
            .get(start..end)
            .ok_or_else(|| anyhow!("truncated header"))?,
    )
    .map_err(|_| anyhow!("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| anyhow!("header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if descr != "<f4" && descr != "=f4" && descr != "|f4" {
        bail!("element type is '{descr}', but msae needs little-endian float32 ('<f4'); convert it with numpy: np.save(path, a.astype(np.float32))");
    }
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| anyhow!("header has no 'fortran_order'"))?;
    if fortran.trim() != "False" {
        bail!("the array is stored in Fortran order; save it in C order (np.ascontiguousarray)");
    }
    let shape = dict_value(header, "shape").ok_or_else(|| anyhow!("header has no 'shape'"))?;
    let dims: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| anyhow!("bad shape entry '{s}'"))
        })
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        _ => bail!(
            "the array has {} dimensions; msae needs a 2-D matrix",
            dims.len()
        ),
    };
    Ok((end, rows, cols))
}

/// The text of `key`'s value in a Python dict literal such as the `.npy` header.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    if rest.starts_with('(') {
        let close = rest.find(')')?;
        Some(&rest[..=close])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

/// The reference code's rule: base name up to its first `.`, split on `_`, last two fields are
/// N and D.
pub fn shape_from_name(path: &Path) -> Result<(usize, usize)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name.split('.').next().unwrap_or("");
    let fields: Vec<&str> = stem.split('_').collect();
    let parsed = if fields.len() >= 2 {
        let n = fields[fields.len() - 2].parse::<usize>();
        let d = fields[fields.len() - 1].parse::<usize>();
        n.ok().zip(d.ok())
    } else {
        None
    };
    parsed.ok_or_else(|| {
        anyhow!(
            "{} has no NumPy header and its name does not end in _<rows>_<cols> (e.g. data_1000_384.npy), so its shape is unknown",
            path.display()
        )
    })
}

/// Writes a float32 `.npy` file row by row, so large outputs never sit whole in memory.
pub struct NpyWriter {
    out: BufWriter<File>,
    rows: usize,
    cols: usize,
    written: usize,
    path: PathBuf,
}

impl NpyWriter {
    pub fn create(path: &Path, rows: usize, cols: usize) -> Result<NpyWriter> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header_bytes(rows, cols))?;
        Ok(NpyWriter {
            out,
            rows,
            cols,
            written: 0,
            path: path.to_path_buf(),
        })
    }

    /// Appends whole rows (a multiple of `cols` values).
    pub fn write_rows(&mut self, values: &[f32]) -> Result<()> {
        if !values.len().is_multiple_of(self.cols.max(1)) {
            bail!(
                "internal: {} values are not whole rows of {}",
                values.len(),
                self.cols
            );
        }
        let n = values.len() / self.cols.max(1);
        if self.written + n > self.rows {
            bail!("internal: writing more rows than declared ({})", self.rows);
        }
        // SAFETY: f32 has no padding; little-endian is asserted at compile time.
        let bytes =
            unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, values.len() * 4) };
        self.out.write_all(bytes)?;
        self.written += n;
        Ok(())
    }

    /// Flushes and checks that every declared row was written.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.rows {
            bail!(
                "internal: {} has {} of {} rows",
                self.path.display(),
                self.written,
                self.rows
            );
        }
        self.out.flush()?;
        Ok(())
    }
}

/// Writes a whole in-memory matrix as `.npy`.
pub fn write_matrix(path: &Path, rows: usize, cols: usize, values: &[f32]) -> Result<()> {
    let mut w = NpyWriter::create(path, rows, cols)?;
    w.write_rows(values)?;
    w.finish()
}

/// The header msae writes before a float32 [rows, cols] matrix, the one NumPy writes for it: a
/// version 1.0 header, padded so the data starts on a 64-byte boundary.
pub fn header_bytes(rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + pad + 1;
    let mut out = Vec::with_capacity(unpadded + pad);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_npy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_matrix(&p, 3, 4, &values).unwrap();
        let m = Matrix::open(&p).unwrap();
        assert_eq!((m.rows(), m.cols()), (3, 4));
        assert_eq!(m.row(2), &values[8..12]);
        assert!(matches!(m.layout, Layout::Npy { data_offset } if data_offset % 64 == 0));
    }

    #[test]
    fn reads_headerless_files_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mscoco_model_-1_text_2_3.npy");
        let values: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, bytes).unwrap();
        let m = Matrix::open(&p).unwrap();
        assert_eq!(m.layout, Layout::Headerless);
        assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x_2_3.npy");
        std::fs::write(&p, [0u8; 20]).unwrap();
        let err = Matrix::open(&p).err().unwrap().to_string();
        assert!(err.contains("does not match its shape"), "{err}");
    }

    #[test]
    fn headerless_name_without_shape_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plain.npy");
        std::fs::write(&p, [0u8; 8]).unwrap();
        let err = Matrix::open(&p).err().unwrap().to_string();
        assert!(err.contains("shape is unknown"), "{err}");
    }

    #[test]
    fn rejects_float64() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.npy");
        let mut bytes = header_bytes(1, 1);
        let pos = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        bytes[pos + 2] = b'8';
        bytes.extend_from_slice(&[0u8; 8]);
        std::fs::write(&p, bytes).unwrap();
        let err = format!("{:#}", Matrix::open(&p).err().unwrap());
        assert!(err.contains("float32"), "{err}");
    }
}
