//! The store: a sled index of small records plus content-addressed object files.
//!
//! Layout of the store folder:
//! * `db/`       the sled index (see [`index`])
//! * `objects/`  immutable outputs named by their BLAKE3 hash
//! * `partial/`  checkpoints of unfinished steps, by step key (kept across interrupted runs)
//! * `tmp/`      scratch folders of steps being run (emptied when a run starts)
//! * `holder.json` who holds the store now (for the message a second process gets)
//!
//! One process at a time: sled locks its database with an OS file lock that the kernel drops when
//! the process dies, so there is never a lock file to clean by hand after a crash.

pub mod index;
pub mod memo;
pub mod objects;
pub mod record;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use index::Index;
pub use objects::Objects;
pub use record::{ArtifactRecord, FailureRecord, FileComponent, KeyComponents, Record};

pub struct Store {
    pub root: PathBuf,
    pub index: Index,
    pub objects: Objects,
}

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    command: String,
    since_unix: u64,
}

/// Raised when another process holds the store and `--wait` was not given.
#[derive(Debug)]
pub struct StoreBusy(pub String);

impl std::fmt::Display for StoreBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for StoreBusy {}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock")
        }
        _ => false,
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`. If another process holds it, fails with a
    /// message naming that process, or with `wait` polls until it is free.
    pub fn open(root: &Path, command: &str, wait: bool) -> Result<Store> {
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create the store folder {}", root.display()))?;
        let start = Instant::now();
        let mut told = false;
        let db = loop {
            match sled::Config::new().path(root.join("db")).open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) => {
                    let who = describe_holder(root);
                    if !wait {
                        return Err(StoreBusy(format!(
                            "the store {} is in use by {who}\n  = help: wait for it to finish, run with --wait to queue behind it, or use another store with --cache DIR",
                            root.display()
                        ))
                        .into());
                    }
                    if !told {
                        eprintln!("waiting for the store {} (held by {who})…", root.display());
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    bail!(
                        "cannot open the store index {}: {e}\n  = help: if the folder is damaged, move it away and run again (results will be recomputed)",
                        root.join("db").display()
                    )
                }
            }
        };
        if told {
            eprintln!("store free after {:.1} s", start.elapsed().as_secs_f64());
        }
        let holder = Holder {
            pid: std::process::id(),
            command: command.to_string(),
            since_unix: now_unix(),
        };
        fs::write(root.join("holder.json"), serde_json::to_vec(&holder)?).ok();
        for sub in ["objects", "partial", "tmp"] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            index: Index::new(db)?,
            objects: Objects::new(root.join("objects")),
        })
    }

    /// Scratch space of an unfinished run is stale once we hold the lock.
    pub fn clear_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).ok();
        }
        fs::create_dir_all(&tmp)?;
        Ok(())
    }

    /// A fresh scratch folder for one step run.
    pub fn scratch(&self, key: &str) -> Result<PathBuf> {
        let dir = self.root.join("tmp").join(&key[..16]);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub fn partial_dir(&self, key: &str) -> PathBuf {
        self.root.join("partial").join(key)
    }
}

fn describe_holder(root: &Path) -> String {
    match fs::read(root.join("holder.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
    {
        Some(h) => {
            let age = now_unix().saturating_sub(h.since_unix);
            format!(
                "another msae process (pid {}, `{}`, running for {age} s)",
                h.pid, h.command
            )
        }
        None => "another msae process".to_string(),
    }
}
