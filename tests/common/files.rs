//! `.npy` files written for msae and read back from it and the oracles, and folder listings.

use std::path::{Path, PathBuf};

/// Writes a float32 `.npy` matrix for tests.
pub fn write_npy(path: &Path, rows: usize, cols: usize, values: &[f32]) {
    msae::data::npy::write_matrix(path, rows, cols, values).unwrap();
}

/// A float32 `.npy` matrix: rows, columns and values.
pub fn npy_f32(path: &Path) -> (usize, usize, Vec<f32>) {
    let m = msae::data::npy::Matrix::open(path).unwrap();
    (m.rows(), m.cols(), m.data().to_vec())
}

/// Writes a C-order `.npy` array (`descr` `<f4` or `<i8`).
pub fn write_npy_array(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// Reads a 2-D C-order float64 `.npy` array (what the NumPy oracles write).
pub fn read_npy_f64(path: &Path) -> (usize, usize, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f8'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let shape = &shape[..shape.find(')').unwrap()];
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(dims.len(), 2, "{header}");
    let data: Vec<f64> = bytes[start + header_len..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    (dims[0], dims[1], data)
}

/// [`read_npy_f64`] as its columns count and its rows, for comparing row by row.
pub fn read_npy_f64_rows(path: &Path) -> (usize, Vec<Vec<f64>>) {
    let (_, cols, v) = read_npy_f64(path);
    (cols, v.chunks(cols).map(<[f64]>::to_vec).collect())
}

/// Every file under `dir`, recursively (unordered).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Every file under `dir` (relative path) with the BLAKE3 of its content, sorted: two calls
/// compare equal exactly when nothing in the folder was written.
pub fn file_hashes(dir: &Path) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string(),
            )
        })
        .collect();
    all.sort();
    all
}
