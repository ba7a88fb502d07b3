//! Content hashes of external files, memoised by path, size and modification time, so an
//! unchanged multi-gigabyte file is not re-hashed on every run.

use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::store::objects::hash_file;
use crate::store::Index;

#[derive(Serialize, Deserialize)]
struct Memo {
    size: u64,
    mtime_ns: u128,
    hash: String,
}

impl Index {
    /// The BLAKE3 of an external file, re-hashed only if its size or mtime changed.
    pub fn file_hash(&self, path: &Path) -> Result<String> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = path.to_string_lossy().to_string();
        if let Some(bytes) = self.memo_get(&key)? {
            if let Ok(m) = serde_json::from_slice::<Memo>(&bytes) {
                if m.size == meta.len() && m.mtime_ns == mtime_ns {
                    return Ok(m.hash);
                }
            }
        }
        let (hash, size) = hash_file(path)?;
        let memo = Memo {
            size,
            mtime_ns,
            hash: hash.clone(),
        };
        self.memo_put(&key, serde_json::to_vec(&memo)?)?;
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_size_and_mtime_skip_rehashing() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(sled::Config::new().temporary(true).open().unwrap()).unwrap();
        let file = dir.path().join("m.bin");
        std::fs::write(&file, b"aaaa").unwrap();
        let first = index.file_hash(&file).unwrap();
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        // Same size, same mtime: the memo answers (this is what saves re-reading big files).
        std::fs::write(&file, b"bbbb").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(index.file_hash(&file).unwrap(), first);
        // A new mtime forces a fresh hash.
        let later = mtime + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let second = index.file_hash(&file).unwrap();
        assert_ne!(second, first);
        assert_eq!(second, blake3::hash(b"bbbb").to_hex().to_string());
    }
}
