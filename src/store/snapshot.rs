//! The published copy of the index that readers use while another process holds the store.
//!
//! sled lets one process open a database. The holder therefore writes the whole index as one
//! JSON file, `snapshot.json`, beside the database whenever it changed (temporary file, fsync,
//! rename: a reader sees the previous snapshot or the new one, never a torn file). Objects are
//! in the store before their record, so every object a snapshot names exists.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::store::record::{FailureRecord, Record};

pub const FILE: &str = "snapshot.json";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub records: BTreeMap<String, Record>,
    pub latest: BTreeMap<String, String>,
    pub failures: BTreeMap<String, FailureRecord>,
    /// Path → memo JSON (size, mtime, hash) of external files.
    pub file_memo: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec(self)?)
    }

    pub fn read(path: &Path) -> Result<Snapshot> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("the index snapshot {} is unreadable", path.display()))
    }
}

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole new one: a
/// temporary file in the same folder, fsynced, then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    crate::store::objects::sync_dir(dir)?;
    Ok(())
}
