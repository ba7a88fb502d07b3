//! Upstream stores (`--cache-from DIR`): other stores, typically a team's shared results folder,
//! that serve results this store lacks. An upstream is only ever read, from the index snapshot
//! its holder published (never its sled database, which would take its lock and could block a
//! colleague's run), and its objects are verified on the way in: each is copied into a
//! temporary file while its BLAKE3 is computed, and enters the local store only if content and
//! size match the record. A damaged upstream object is reported and the instance is computed
//! here; it is never copied, and nothing is ever written upstream.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::store::snapshot::{self, Snapshot};
use crate::store::{Index, Objects, Record, Store};

/// One upstream store, opened for reading.
pub struct Upstream {
    pub root: PathBuf,
    index: Index,
    objects: Objects,
}

/// What an upstream has for a key.
pub enum Fetched {
    /// Nothing.
    Absent,
    /// The record, whose objects are now verified copies in the local store.
    Served(Box<Record>),
    /// A record whose output `output` is missing or does not hash to its name upstream.
    Damaged { output: String, why: String },
}

impl Upstream {
    /// Opens the store at `root` through its published snapshot.
    pub fn open(root: &Path) -> Result<Upstream> {
        let path = root.join(snapshot::FILE);
        if !root.is_dir() {
            bail!(
                "the upstream store {} (--cache-from) does not exist or is not a folder",
                root.display()
            );
        }
        if !path.is_file() {
            bail!(
                "the upstream store {} (--cache-from) has no published index ({}); is it an msae store? Any msae command that holds it once publishes one",
                root.display(),
                snapshot::FILE
            );
        }
        Ok(Upstream {
            root: root.to_path_buf(),
            index: Index::from_snapshot(Snapshot::read(&path)?),
            objects: Objects::new(root.join("objects")),
        })
    }

    /// Copies the record of `key` and its objects into `local` when this upstream has them
    /// intact. The local record is written only after every object is in place.
    pub fn fetch(&self, key: &str, local: &Store) -> Result<Fetched> {
        let Some(record) = self.index.record(key)? else {
            return Ok(Fetched::Absent);
        };
        for (name, a) in &record.outputs {
            if local.objects.present(&a.hash, a.size) && local.objects.verify(&a.hash, a.size)? {
                continue;
            }
            let tmp = local
                .root
                .join("tmp")
                .join(format!("upstream-{}", &a.hash[..16]));
            match copy_hashed(&self.objects.path(&a.hash), &tmp) {
                Ok((hash, size)) if hash == a.hash && size == a.size => {
                    local.objects.insert(&tmp)?;
                }
                Ok((hash, size)) => {
                    fs::remove_file(&tmp).ok();
                    return Ok(Fetched::Damaged {
                        output: name.clone(),
                        why: format!(
                            "its content hashes to {}… ({size} bytes), not to its name {}… ({} bytes)",
                            &hash[..16],
                            &a.hash[..16],
                            a.size
                        ),
                    });
                }
                Err(e) => {
                    fs::remove_file(&tmp).ok();
                    return Ok(Fetched::Damaged {
                        output: name.clone(),
                        why: format!("{e:#}"),
                    });
                }
            }
        }
        Ok(Fetched::Served(Box::new(record)))
    }
}

/// Copies `from` to `to` (fsynced), returning the BLAKE3 and size of the bytes copied.
fn copy_hashed(from: &Path, to: &Path) -> Result<(String, u64)> {
    let mut src = File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut dst = File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut size = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", from.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        size += n as u64;
    }
    dst.sync_all()?;
    Ok((hasher.finalize().to_hex().to_string(), size))
}
