//! The store: a sled index of small records plus content-addressed object files.
//!
//! Layout of the store folder:
//! * `db/`       the sled index (see [`index`])
//! * `objects/`  immutable outputs named by their BLAKE3 hash
//! * `partial/`  checkpoints of unfinished steps, by step key (kept across interrupted runs)
//! * `tmp/`      scratch folders of steps being run (emptied when a run starts)
//! * `holder.json` who holds the store now (for the message a second process gets)
//! * `snapshot.json` the index as the holder last published it (see [`snapshot`])
//! * `live.json` what the holder's run is doing now (see [`live`])
//! * `jobs/`     per-instance folders of scheduler jobs (specification, log, result)
//!
//! One writer at a time: sled locks its database with an OS file lock that the kernel drops when
//! the process dies, so there is never a lock file to clean by hand after a crash. Commands that
//! only read ([`Store::open_read`]) fall back to the published snapshot while another process
//! holds the store, so they never wait for, block or disturb a run.

pub mod index;
pub mod live;
pub mod memo;
pub mod objects;
pub mod record;
pub mod snapshot;
pub mod upstream;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use index::Index;
pub use live::LiveRun;
pub use objects::Objects;
pub use record::{ArtifactRecord, FailureRecord, FileComponent, KeyComponents, Record};
pub use upstream::{Fetched, Upstream};

pub struct Store {
    pub root: PathBuf,
    pub index: Index,
    pub objects: Objects,
    /// For a reader of a held store: what the holder's run was doing when it last published.
    pub live: Option<LiveRun>,
    /// Why this process reads the store from its published snapshot though no other process
    /// holds it: the store cannot be written (a read-only mount, another user's folder).
    pub read_only: Option<String>,
}

/// How long a writer retries a lock held by another process before it reports the store busy:
/// readers that found the store free hold it for a moment only.
const WRITER_GRACE: Duration = Duration::from_secs(3);

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
        if let Some(why) = unwritable(root) {
            bail!(
                "the store {} cannot be written ({why}); `{command}` needs to write it\n  = help: commands that only read (status, table, plan, why, graph, report, export, cache du) work on it as it is; to run, give a writable store with --cache DIR",
                root.display()
            );
        }
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create the store folder {}", root.display()))?;
        let start = Instant::now();
        let mut told = false;
        let db = loop {
            match sled::Config::new().path(root.join("db")).open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) => {
                    if start.elapsed() < WRITER_GRACE {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
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
                Err(e) => bail!("{}", open_failure(root, &e)),
            }
        };
        if told {
            eprintln!("store free after {:.1} s", start.elapsed().as_secs_f64());
        }
        Store::held(root, command, db)
    }

    /// Opens the store for a command that only reads. When another process holds it, the index
    /// is the snapshot that process published (with its live run state); only when there is
    /// none yet does this wait (`wait`) or fail like [`Store::open`].
    pub fn open_read(root: &Path, command: &str, wait: bool) -> Result<Store> {
        let start = Instant::now();
        if let Some(why) = unwritable(root) {
            return Store::from_published(root, why);
        }
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create the store folder {}", root.display()))?;
        loop {
            match sled::Config::new().path(root.join("db")).open() {
                Ok(db) => return Store::held(root, command, db),
                Err(e) if is_lock_error(&e) => {
                    let path = root.join(snapshot::FILE);
                    if path.exists() {
                        let snap = snapshot::Snapshot::read(&path)?;
                        return Ok(Store {
                            root: root.to_path_buf(),
                            index: Index::from_snapshot(snap),
                            objects: Objects::new(root.join("objects")),
                            live: LiveRun::read(root),
                            read_only: None,
                        });
                    }
                    // The holder publishes its first snapshot right after opening the index.
                    if start.elapsed() >= WRITER_GRACE {
                        return Store::open(root, command, wait);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(_) => return Store::open(root, command, wait),
            }
        }
    }

    /// A store this process cannot write, read from the snapshot its last holder published.
    /// Nothing is written: no holder note, no scratch folders, no snapshot.
    fn from_published(root: &Path, why: String) -> Result<Store> {
        let path = root.join(snapshot::FILE);
        if !path.exists() {
            bail!(
                "the store {} cannot be written ({why}) and holds no published index ({}), which reading an unwritable store needs\n  = help: the store itself is intact; any msae command run once with write access to it (e.g. `msae status`) publishes the index",
                root.display(),
                snapshot::FILE
            );
        }
        let snap = snapshot::Snapshot::read(&path)?;
        Ok(Store {
            root: root.to_path_buf(),
            index: Index::from_snapshot(snap),
            objects: Objects::new(root.join("objects")),
            live: LiveRun::read(root),
            read_only: Some(why),
        })
    }

    /// True when this process reads the store's published snapshot: another process holds the
    /// store, or it cannot be written.
    pub fn is_reader(&self) -> bool {
        self.index.is_snapshot()
    }

    /// A line for reading commands to print on stderr when the store is read-only.
    pub fn read_only_notice(&self) -> Option<String> {
        self.read_only.as_ref().map(|why| {
            format!(
                "note: the store {} is read-only ({why}); showing the index its last run published",
                self.root.display()
            )
        })
    }

    /// Publishes the index for readers if it changed (see [`snapshot`]).
    pub fn publish(&self) -> Result<()> {
        self.index.publish(&self.root.join(snapshot::FILE))?;
        Ok(())
    }

    fn held(root: &Path, command: &str, db: sled::Db) -> Result<Store> {
        let holder = Holder {
            pid: std::process::id(),
            command: command.to_string(),
            since_unix: now_unix(),
        };
        fs::write(root.join("holder.json"), serde_json::to_vec(&holder)?).ok();
        for sub in ["objects", "partial", "tmp"] {
            fs::create_dir_all(root.join(sub))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            index: Index::new(db)?,
            objects: Objects::new(root.join("objects")),
            live: None,
            read_only: None,
        };
        // A reader must never see records the holder does not have (e.g. after a lost
        // snapshot write): start every hold with a current snapshot — the one on disk when its
        // stamp says nothing changed since, else a fresh one.
        if !store.index.adopt_published(&root.join(snapshot::FILE))? {
            store.publish()?;
        }
        Ok(store)
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

impl Drop for Store {
    fn drop(&mut self) {
        if !self.is_reader() {
            if let Err(e) = self.publish() {
                tracing::warn!("cannot publish the index snapshot: {e:#}");
            }
        }
    }
}

/// Why the store at `root` cannot be written, when it cannot: an existing store folder on a
/// read-only file system or without write permission for this user. `None` for a writable store
/// and for a folder that does not exist yet (creating it reports its own error).
fn unwritable(root: &Path) -> Option<String> {
    let db = root.join("db");
    let target = if db.is_dir() { db } else { root.to_path_buf() };
    if !target.is_dir() {
        return None;
    }
    // Creating a file is the one test that sees mounts, permissions, ACLs and root alike.
    let probe = target.join(format!(".msae-write-test-{}", std::process::id()));
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            fs::remove_file(&probe).ok();
            None
        }
        Err(e) if e.raw_os_error() == Some(libc_erofs()) => Some("read-only file system".into()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Some("no write permission".into())
        }
        Err(_) => None,
    }
}

/// EROFS, the same number on every Linux architecture (and on the BSDs and macOS).
const fn libc_erofs() -> i32 {
    30
}

/// The error for an index that exists but cannot be opened. Only sled's own verdict that its
/// files are corrupt suggests moving the folder aside; any other failure leaves the store alone.
fn open_failure(root: &Path, e: &sled::Error) -> String {
    let db = root.join("db");
    match e {
        sled::Error::Corruption { .. } => format!(
            "the store index {} is corrupt: {e}\n  = help: the objects beside it are intact, but msae cannot read which instance made which; move the folder aside (it is not deleted) and run again to recompute",
            db.display()
        ),
        _ => format!(
            "cannot open the store index {}: {e}\n  = help: check the folder's permissions and free space; the store was not changed",
            db.display()
        ),
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
