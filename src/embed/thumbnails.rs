//! The thumbnails of an embed: per part, the JPEG files of its rows back to back in one file
//! (their sizes kept in the part's metadata), joined at the end into one POSIX tar archive.
//!
//! The archive holds one member per row of the matrix, named `<row>.jpg` (the row's 0-based
//! index in decimal), in row order, as ustar headers with fixed metadata (mode 0644, owner 0,
//! time 0), so the same rows give the same bytes however the embed was cut into parts or
//! interrupted. Joining streams one thumbnail at a time: memory does not grow with the run.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One part's thumbnails: the file of concatenated JPEGs and each one's size in bytes.
pub struct PartThumbnails<'a> {
    pub path: PathBuf,
    pub sizes: &'a [u32],
}

/// Writes `bytes` (a part's concatenated JPEGs) to `path` and flushes them to disk.
pub fn write_part(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path)
        .with_context(|| format!("cannot write thumbnails to {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Whether the part file at `path` holds exactly the thumbnails of `sizes`.
pub fn part_is_whole(path: &Path, sizes: &[u32]) -> bool {
    let want: u64 = sizes.iter().map(|&s| s as u64).sum();
    std::fs::metadata(path).is_ok_and(|m| m.len() == want)
}

/// The ustar header of member `<row>.jpg` of `size` bytes.
fn header(row: usize, size: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(format!("{row}.jpg"))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Joins the parts' thumbnails, in order, into the archive at `out`; returns the member count.
pub fn write_archive<'a>(
    parts: impl IntoIterator<Item = PartThumbnails<'a>>,
    out: &Path,
) -> Result<usize> {
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut archive = tar::Builder::new(BufWriter::new(file));
    let mut row = 0usize;
    let mut buf = Vec::new();
    for part in parts {
        let mut reader = BufReader::new(
            File::open(&part.path)
                .with_context(|| format!("thumbnails {} are missing", part.path.display()))?,
        );
        for &size in part.sizes {
            buf.resize(size as usize, 0);
            reader.read_exact(&mut buf).with_context(|| {
                format!("thumbnails {} are shorter than listed", part.path.display())
            })?;
            archive.append(&header(row, size as u64)?, buf.as_slice())?;
            row += 1;
        }
        if reader.read(&mut [0u8])? != 0 {
            bail!("thumbnails {} are longer than listed", part.path.display());
        }
    }
    let mut w = archive.into_inner()?;
    w.flush()?;
    w.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_join_into_one_ustar_archive_named_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        write_part(&a, b"xyzw").unwrap();
        write_part(&b, b"").unwrap();
        let c = dir.path().join("c");
        write_part(&c, &[7u8; 600]).unwrap();
        assert!(part_is_whole(&a, &[1, 3]));
        assert!(!part_is_whole(&a, &[1, 2]));
        let out = dir.path().join("thumbs.tar");
        let parts = [(&a, &[1u32, 3][..]), (&b, &[][..]), (&c, &[600][..])];
        let n = write_archive(
            parts.iter().map(|(p, s)| PartThumbnails {
                path: p.to_path_buf(),
                sizes: s,
            }),
            &out,
        )
        .unwrap();
        assert_eq!(n, 3);
        let bytes = std::fs::read(&out).unwrap();
        // Headers and data in 512-byte blocks, two zero blocks at the end.
        assert_eq!(bytes.len(), 512 * (2 + 2 + 3) + 1024);
        assert_eq!(&bytes[257..263], b"ustar\0");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let members: Vec<(String, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), data)
            })
            .collect();
        assert_eq!(
            members,
            vec![
                ("0.jpg".to_string(), b"x".to_vec()),
                ("1.jpg".to_string(), b"yzw".to_vec()),
                ("2.jpg".to_string(), vec![7u8; 600]),
            ]
        );
        // A part shorter or longer than listed is an error, not a shifted archive.
        let short = write_archive(
            [PartThumbnails {
                path: a.clone(),
                sizes: &[5],
            }],
            &out,
        );
        assert!(short.unwrap_err().to_string().contains("shorter"));
        let long = write_archive(
            [PartThumbnails {
                path: a,
                sizes: &[1],
            }],
            &out,
        );
        assert!(long.unwrap_err().to_string().contains("longer"));
    }
}
