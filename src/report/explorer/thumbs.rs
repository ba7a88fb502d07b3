//! Thumbnails from a `thumbnails` output: one POSIX tar archive with a member `<row>.jpg` per row
//! of the matrix (row 0-based, decimal, no padding). Only the rows shown as top examples are
//! read: one pass over the headers (seeking past the data) finds where they are, and each is
//! then read at its offset, so a large archive costs its header count, not its size.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;

/// A thumbnail larger than this is not inlined (a JPEG of at most 64 × 64 pixels is a few KiB;
/// the cap keeps every chunk file under its bound whatever an archive holds).
pub const MAX_BYTES: u64 = 16 << 10;

/// Where each wanted row's image lies in the archive.
pub struct Thumbnails {
    path: PathBuf,
    /// Row → (offset of its data, size).
    at: BTreeMap<u64, (u64, u64)>,
    /// Wanted rows whose member is larger than [`MAX_BYTES`].
    pub too_large: usize,
}

impl Thumbnails {
    /// Indexes the members of `wanted` rows; other members are skipped unread.
    pub fn index(path: &Path, wanted: &BTreeSet<u64>) -> Result<Thumbnails> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read the thumbnails ({})", path.display()))?;
        let mut archive = tar::Archive::new(file);
        let mut at = BTreeMap::new();
        let mut too_large = 0;
        for entry in archive
            .entries_with_seek()
            .context("the thumbnails are not a tar archive")?
        {
            let entry = entry.context("the thumbnails archive is damaged")?;
            let name = entry.path_bytes();
            let Some(row) = std::str::from_utf8(&name)
                .ok()
                .map(|n| n.trim_start_matches("./"))
                .and_then(|n| n.strip_suffix(".jpg"))
                .and_then(|r| r.parse::<u64>().ok())
            else {
                continue;
            };
            if !wanted.contains(&row) {
                continue;
            }
            let size = entry.size();
            if size > MAX_BYTES {
                too_large += 1;
                continue;
            }
            at.insert(row, (entry.raw_file_position(), size));
        }
        Ok(Thumbnails {
            path: path.to_path_buf(),
            at,
            too_large,
        })
    }

    /// Rows that have a thumbnail.
    pub fn has(&self, row: u64) -> bool {
        self.at.contains_key(&row)
    }

    /// The thumbnails of `rows` (those the archive has) as `data:` URIs.
    pub fn data_uris(&self, rows: &BTreeSet<u64>) -> Result<BTreeMap<u64, String>> {
        let file = std::fs::File::open(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let mut out = BTreeMap::new();
        let mut bytes = Vec::new();
        for &row in rows {
            let Some(&(offset, size)) = self.at.get(&row) else {
                continue;
            };
            bytes.resize(size as usize, 0);
            file.read_exact_at(&mut bytes, offset)
                .with_context(|| format!("reading thumbnail {row}.jpg"))?;
            out.insert(row, data_uri(&bytes));
        }
        Ok(out)
    }
}

/// An image as a `data:` URI, its type from its first bytes (the archive's members are JPEG;
/// PNG is told apart so a mislabelled member still shows).
pub fn data_uri(bytes: &[u8]) -> String {
    let mime = if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else {
        "image/jpeg"
    };
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(dir: &Path, members: &[(&str, Vec<u8>)]) -> PathBuf {
        let path = dir.join("thumbs.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn only_wanted_rows_are_read_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = |tag: u8| vec![0xff, 0xd8, tag, 0xff, 0xd9];
        let path = archive(
            dir.path(),
            &[
                ("0.jpg", jpeg(0)),
                ("1.jpg", jpeg(1)),
                ("notes.txt", b"not a row".to_vec()),
                ("2.jpg", vec![0; MAX_BYTES as usize + 1]),
                ("10.jpg", jpeg(10)),
            ],
        );
        let wanted: BTreeSet<u64> = [1, 2, 10, 11].into();
        let t = Thumbnails::index(&path, &wanted).unwrap();
        assert!(!t.has(0) && t.has(1) && !t.has(2) && t.has(10) && !t.has(11));
        assert_eq!(t.too_large, 1);
        let uris = t.data_uris(&wanted).unwrap();
        assert_eq!(uris.len(), 2);
        assert_eq!(uris[&10], data_uri(&jpeg(10)));
        // The five bytes FF D8 0A FF D9 in base64.
        assert_eq!(uris[&10], "data:image/jpeg;base64,/9gK/9k=");
    }

    #[test]
    fn a_file_that_is_not_tar_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar");
        std::fs::write(&path, vec![7u8; 1024]).unwrap();
        let Err(e) = Thumbnails::index(&path, &[0].into()) else {
            panic!("accepted a file that is not tar");
        };
        assert!(format!("{e:#}").contains("thumbnails"), "{e:#}");
    }
}
