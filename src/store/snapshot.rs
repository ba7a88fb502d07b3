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

/// The stamp file beside a snapshot: which publication the snapshot is, so that a holder can
/// tell at open, without reading it, that the snapshot still shows its index.
///
/// A publication writes the snapshot, then the stamp file (the stamp, the snapshot's size and
/// modification time), then the same stamp into the database. Every change of the index first
/// removes the stamp from the database, durably. At open the snapshot is current exactly when
/// the database holds a stamp and the stamp file names the same one for the snapshot as it is
/// on disk (any other writer of the snapshot changes its size or time).
pub fn stamp_path(snapshot: &Path) -> std::path::PathBuf {
    snapshot.with_extension("stamp")
}

/// Size and modification time (ns) of the snapshot, as the stamp file records them.
fn identity(snapshot: &Path) -> Option<String> {
    let meta = std::fs::metadata(snapshot).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {mtime}", meta.len()))
}

/// Records `stamp` for the snapshot as it is on disk now.
pub fn write_stamp(snapshot: &Path, stamp: &str) -> Result<()> {
    let id = identity(snapshot).context("the snapshot just written is gone")?;
    write_atomic(&stamp_path(snapshot), format!("{stamp}\n{id}\n").as_bytes())
}

/// The stamp of the snapshot on disk, if its stamp file describes it.
pub fn read_stamp(snapshot: &Path) -> Option<String> {
    let text = std::fs::read_to_string(stamp_path(snapshot)).ok()?;
    let mut lines = text.lines();
    let stamp = lines.next()?.to_string();
    (lines.next()? == identity(snapshot)?).then_some(stamp)
}
