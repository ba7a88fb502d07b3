//! Content-addressed, immutable object files: `objects/ab/cdef…` named by their BLAKE3 hash.
//!
//! An object is written to a temporary file, fsynced, then renamed into place, so a crash leaves
//! either no object or a complete one. Identical content is stored once.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Objects {
    root: PathBuf,
}

/// BLAKE3 of a file's content, read in blocks (hashed in parallel within each block). Plain reads
/// rather than a memory map keep the resident set small for multi-gigabyte files.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update_rayon(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

impl Objects {
    pub fn new(root: PathBuf) -> Objects {
        Objects { root }
    }

    pub fn path(&self, hash: &str) -> PathBuf {
        self.root.join(&hash[..2]).join(&hash[2..])
    }

    /// Moves a finished file into the store under its hash and returns (hash, size).
    /// If the object already exists with the right size the new copy is dropped.
    pub fn insert(&self, file: &Path) -> Result<(String, u64)> {
        let (hash, size) = hash_file(file)?;
        let dest = self.path(&hash);
        if fs::metadata(&dest)
            .map(|m| m.len() == size)
            .unwrap_or(false)
        {
            fs::remove_file(file).ok();
            return Ok((hash, size));
        }
        File::open(file)?.sync_all()?;
        let dir = dest.parent().expect("objects have a parent folder");
        fs::create_dir_all(dir)?;
        fs::rename(file, &dest)
            .with_context(|| format!("cannot move {} into the store", file.display()))?;
        sync_dir(dir)?;
        Ok((hash, size))
    }

    /// Cheap check: the object exists with the recorded size.
    pub fn present(&self, hash: &str, size: u64) -> bool {
        fs::metadata(self.path(hash))
            .map(|m| m.len() == size)
            .unwrap_or(false)
    }

    /// Full check: the object's content still hashes to its name.
    pub fn verify(&self, hash: &str, size: u64) -> Result<bool> {
        let path = self.path(hash);
        match fs::metadata(&path) {
            Ok(m) if m.len() == size => Ok(hash_file(&path)?.0 == hash),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a damaged object so that the step that made it writes it anew.
    pub fn discard(&self, hash: &str) {
        fs::remove_file(self.path(hash)).ok();
    }

    /// Every object file with its size: (hash, size).
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let Ok(dirs) = fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for d in dirs {
            let d = d?;
            let prefix = d.file_name().to_string_lossy().to_string();
            if !d.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(d.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().to_string();
                out.push((format!("{prefix}{name}"), f.metadata()?.len()));
            }
        }
        Ok(out)
    }
}

/// Makes a rename durable by syncing its folder (a no-op where folders cannot be opened).
pub fn sync_dir(dir: &Path) -> Result<()> {
    if let Ok(f) = File::open(dir) {
        f.sync_all().ok();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_content_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::new(dir.path().join("objects"));
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"same bytes").unwrap();
        fs::write(&b, b"same bytes").unwrap();
        let (ha, sa) = objects.insert(&a).unwrap();
        let (hb, _) = objects.insert(&b).unwrap();
        assert_eq!(ha, hb);
        assert_eq!(objects.list().unwrap().len(), 1);
        assert!(objects.verify(&ha, sa).unwrap());
        fs::write(objects.path(&ha), b"same bytez").unwrap();
        assert!(objects.present(&ha, sa));
        assert!(!objects.verify(&ha, sa).unwrap());
    }
}
