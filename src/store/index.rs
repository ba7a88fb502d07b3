//! The index: small records keyed by step key, plus lookups by instance name.
//!
//! Trees (sled) or maps (snapshot), the same four either way:
//! * `records`   step key → [`Record`] (JSON)
//! * `latest`    `"<experiment>\0<instance>"` → step key of its most recent successful run
//! * `failures`  `"<experiment>\0<instance>"` → [`FailureRecord`]
//! * `file_memo` absolute path → size, mtime and content hash of an external file
//!
//! Two backends. The process that holds the store opens the sled database and, whenever the
//! index changed, publishes a [`Snapshot`] of all four trees beside it (see
//! [`Index::publish`]). A process that finds the store held reads that snapshot instead: a
//! read-only index that sees every record the holder had published, never blocks the holder and
//! can never damage its database.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};

use crate::store::record::{FailureRecord, Record};
use crate::store::snapshot::{self, Snapshot};

pub struct Index {
    backend: Backend,
    /// Bumped on every change of a sled-backed index; compared with `published`.
    generation: AtomicU64,
    published: AtomicU64,
    /// Whether the database holds a publication stamp (see [`crate::store::snapshot`]); taken
    /// out, durably, before the first change after a publication.
    stamped: Mutex<bool>,
}

/// Key of the publication stamp in the database's default tree.
const STAMP_KEY: &[u8] = b"published_stamp";

enum Backend {
    Sled(SledTrees),
    /// A read-only copy of the holder's published index. File memos learnt while reading are
    /// kept in memory only.
    Snapshot(Mutex<Snapshot>),
}

struct SledTrees {
    db: sled::Db,
    records: sled::Tree,
    latest: sled::Tree,
    failures: sled::Tree,
    file_memo: sled::Tree,
}

fn instance_key(experiment: &str, instance: &str) -> String {
    format!("{experiment}\0{instance}")
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("the store's {what} entry is unreadable"))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

const READ_ONLY: &str =
    "this process reads the store's published index (the store is held by a running msae process or cannot be written); it cannot change it";

impl Index {
    pub fn new(db: sled::Db) -> Result<Index> {
        let stamped = db.contains_key(STAMP_KEY)?;
        Ok(Index {
            backend: Backend::Sled(SledTrees {
                records: db.open_tree("records")?,
                latest: db.open_tree("latest")?,
                failures: db.open_tree("failures")?,
                file_memo: db.open_tree("file_memo")?,
                db,
            }),
            // Unpublished at first, so the first publish writes a snapshot.
            generation: AtomicU64::new(1),
            published: AtomicU64::new(0),
            stamped: Mutex::new(stamped),
        })
    }

    /// A read-only index over a published snapshot.
    pub fn from_snapshot(snapshot: Snapshot) -> Index {
        Index {
            backend: Backend::Snapshot(Mutex::new(snapshot)),
            generation: AtomicU64::new(0),
            published: AtomicU64::new(0),
            stamped: Mutex::new(false),
        }
    }

    /// Takes the snapshot at `path` as already published when its stamp is the database's:
    /// nothing changed the index since that snapshot was written, so opening the store need
    /// not write it again (which costs a pass over every record).
    pub fn adopt_published(&self, path: &Path) -> Result<bool> {
        let Backend::Sled(t) = &self.backend else {
            return Ok(false);
        };
        let stamped = self.stamped.lock().unwrap();
        let Some(mine) = t.db.get(STAMP_KEY)? else {
            return Ok(false);
        };
        let current =
            *stamped && snapshot::read_stamp(path).is_some_and(|s| s.as_bytes() == mine.as_ref());
        if current {
            self.published
                .store(self.generation.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        Ok(current)
    }

    /// Runs one change of the sled index. The publication stamp leaves the database (durably)
    /// before the change, so no crash point leaves a stamp that calls an old snapshot current;
    /// the lock keeps a publication from stamping while a change is under way.
    fn change<T>(&self, t: &SledTrees, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut stamped = self.stamped.lock().unwrap();
        if *stamped {
            t.db.remove(STAMP_KEY)?;
            t.db.flush()?;
            *stamped = false;
        }
        let out = f()?;
        self.changed();
        Ok(out)
    }

    /// True when this index is a snapshot of a store another process holds.
    pub fn is_snapshot(&self) -> bool {
        matches!(self.backend, Backend::Snapshot(_))
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn record(&self, key: &str) -> Result<Option<Record>> {
        match &self.backend {
            Backend::Sled(t) => match t.records.get(key)? {
                Some(bytes) => Ok(decode(&bytes, "record").ok()),
                None => Ok(None),
            },
            Backend::Snapshot(s) => Ok(s.lock().unwrap().records.get(key).cloned()),
        }
    }

    /// The record of the last successful run of an instance, whatever its key then was.
    pub fn latest(&self, experiment: &str, instance: &str) -> Result<Option<Record>> {
        match self.latest_key(experiment, instance)? {
            Some(k) => self.record(&k),
            None => Ok(None),
        }
    }

    /// The key of the last successful run of an instance (without reading its record).
    pub fn latest_key(&self, experiment: &str, instance: &str) -> Result<Option<String>> {
        Ok(match &self.backend {
            Backend::Sled(t) => t
                .latest
                .get(instance_key(experiment, instance))?
                .map(|k| String::from_utf8_lossy(&k).to_string()),
            Backend::Snapshot(s) => s
                .lock()
                .unwrap()
                .latest
                .get(&instance_key(experiment, instance))
                .cloned(),
        })
    }

    /// Stores a finished record and makes it durable before returning.
    pub fn put(&self, record: &Record) -> Result<()> {
        let Backend::Sled(t) = &self.backend else {
            bail!("{READ_ONLY}");
        };
        let ik = instance_key(&record.experiment, &record.instance);
        self.change(t, || {
            t.records.insert(record.key.as_bytes(), encode(record))?;
            t.latest.insert(ik.as_bytes(), record.key.as_bytes())?;
            t.failures.remove(ik.as_bytes())?;
            t.db.flush()?;
            Ok(())
        })
    }

    pub fn put_failure(
        &self,
        experiment: &str,
        instance: &str,
        failure: &FailureRecord,
    ) -> Result<()> {
        let Backend::Sled(t) = &self.backend else {
            bail!("{READ_ONLY}");
        };
        self.change(t, || {
            t.failures.insert(
                instance_key(experiment, instance).as_bytes(),
                encode(failure),
            )?;
            t.db.flush()?;
            Ok(())
        })
    }

    pub fn failure(&self, experiment: &str, instance: &str) -> Result<Option<FailureRecord>> {
        match &self.backend {
            Backend::Sled(t) => match t.failures.get(instance_key(experiment, instance))? {
                Some(bytes) => Ok(decode(&bytes, "failure").ok()),
                None => Ok(None),
            },
            Backend::Snapshot(s) => Ok(s
                .lock()
                .unwrap()
                .failures
                .get(&instance_key(experiment, instance))
                .cloned()),
        }
    }

    pub fn remove_record(&self, key: &str) -> Result<()> {
        let Backend::Sled(t) = &self.backend else {
            bail!("{READ_ONLY}");
        };
        self.change(t, || {
            t.records.remove(key)?;
            Ok(())
        })
    }

    /// Every record in the store.
    pub fn all_records(&self) -> Result<Vec<Record>> {
        match &self.backend {
            Backend::Sled(t) => {
                let mut out = Vec::new();
                for item in t.records.iter() {
                    let (_, v) = item?;
                    if let Ok(r) = decode::<Record>(&v, "record") {
                        out.push(r);
                    }
                }
                Ok(out)
            }
            Backend::Snapshot(s) => Ok(s.lock().unwrap().records.values().cloned().collect()),
        }
    }

    /// Drops `latest` pointers and failures whose record is gone.
    pub fn prune_pointers(&self) -> Result<()> {
        let Backend::Sled(t) = &self.backend else {
            bail!("{READ_ONLY}");
        };
        self.change(t, || {
            for item in t.latest.iter() {
                let (k, v) = item?;
                if !t.records.contains_key(&v)? {
                    t.latest.remove(k)?;
                }
            }
            Ok(())
        })
    }

    pub fn flush(&self) -> Result<()> {
        if let Backend::Sled(t) = &self.backend {
            t.db.flush()?;
        }
        Ok(())
    }

    /// A memoised file hash (`None` when unknown).
    pub(crate) fn memo_get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Sled(t) => Ok(t.file_memo.get(path.as_bytes())?.map(|v| v.to_vec())),
            Backend::Snapshot(s) => Ok(s
                .lock()
                .unwrap()
                .file_memo
                .get(path)
                .map(|m| m.as_bytes().to_vec())),
        }
    }

    pub(crate) fn memo_put(&self, path: &str, memo: Vec<u8>) -> Result<()> {
        match &self.backend {
            Backend::Sled(t) => self.change(t, || {
                t.file_memo.insert(path.as_bytes(), memo)?;
                Ok(())
            })?,
            Backend::Snapshot(s) => {
                s.lock()
                    .unwrap()
                    .file_memo
                    .insert(path.to_string(), String::from_utf8_lossy(&memo).to_string());
            }
        }
        Ok(())
    }

    /// Writes a snapshot of the whole index to `path` (atomically: temporary file, fsync,
    /// rename) if the index changed since the last one. Cheap when nothing changed; called by
    /// the holder after every finished instance (at most about once a second) and when it
    /// closes the store.
    pub fn publish(&self, path: &Path) -> Result<bool> {
        let Backend::Sled(t) = &self.backend else {
            return Ok(false);
        };
        let generation = self.generation.load(Ordering::SeqCst);
        if self.published.load(Ordering::SeqCst) == generation {
            return Ok(false);
        }
        let mut snap = Snapshot::default();
        for item in t.records.iter() {
            let (k, v) = item?;
            if let Ok(r) = decode::<Record>(&v, "record") {
                snap.records
                    .insert(String::from_utf8_lossy(&k).to_string(), r);
            }
        }
        for item in t.latest.iter() {
            let (k, v) = item?;
            snap.latest.insert(
                String::from_utf8_lossy(&k).to_string(),
                String::from_utf8_lossy(&v).to_string(),
            );
        }
        for item in t.failures.iter() {
            let (k, v) = item?;
            if let Ok(f) = decode::<FailureRecord>(&v, "failure") {
                snap.failures
                    .insert(String::from_utf8_lossy(&k).to_string(), f);
            }
        }
        for item in t.file_memo.iter() {
            let (k, v) = item?;
            snap.file_memo.insert(
                String::from_utf8_lossy(&k).to_string(),
                String::from_utf8_lossy(&v).to_string(),
            );
        }
        snap.write(path)?;
        let mut stamped = self.stamped.lock().unwrap();
        if self.generation.load(Ordering::SeqCst) == generation {
            // Unchanged while it was written: stamp the snapshot, then the database.
            let stamp = format!(
                "{}-{}-{generation}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            );
            snapshot::write_stamp(path, &stamp)?;
            t.db.insert(STAMP_KEY, stamp.as_bytes())?;
            t.db.flush()?;
            *stamped = true;
        }
        self.published.store(generation, Ordering::SeqCst);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::KeyComponents;

    fn record(key: &str, instance: &str) -> Record {
        Record {
            key: key.into(),
            components: KeyComponents {
                kind: "synth".into(),
                version: 1,
                params: Default::default(),
                inputs: Default::default(),
                files: Default::default(),
            },
            experiment: "e".into(),
            instance: instance.into(),
            coords: Default::default(),
            input_from: Default::default(),
            outputs: Default::default(),
            metrics: Default::default(),
            exec: Default::default(),
            finished_unix: 0,
            seconds: 0.0,
            msae_version: "0".into(),
        }
    }

    #[test]
    fn a_published_snapshot_reads_like_the_index_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(sled::Config::new().temporary(true).open().unwrap()).unwrap();
        let path = dir.path().join("snapshot.json");
        index.put(&record("k1", "a")).unwrap();
        index
            .put_failure(
                "e",
                "b",
                &FailureRecord {
                    key: "k2".into(),
                    error: "boom".into(),
                    finished_unix: 0,
                },
            )
            .unwrap();
        assert!(index.publish(&path).unwrap());
        // Nothing changed: no rewrite.
        assert!(!index.publish(&path).unwrap());
        let snap = Index::from_snapshot(Snapshot::read(&path).unwrap());
        assert!(snap.is_snapshot());
        assert_eq!(snap.record("k1").unwrap().unwrap().instance, "a");
        assert_eq!(snap.latest("e", "a").unwrap().unwrap().key, "k1");
        assert_eq!(snap.failure("e", "b").unwrap().unwrap().error, "boom");
        assert_eq!(snap.all_records().unwrap().len(), 1);
        let err = snap.put(&record("k3", "c")).unwrap_err().to_string();
        assert!(err.contains("cannot change it"), "{err}");
        // A change is published again.
        index.put(&record("k3", "c")).unwrap();
        assert!(index.publish(&path).unwrap());
        let snap = Index::from_snapshot(Snapshot::read(&path).unwrap());
        assert_eq!(snap.all_records().unwrap().len(), 2);
    }

    /// Opening the same database again, as the next command does.
    fn reopen(db_dir: &Path) -> Index {
        Index::new(sled::Config::new().path(db_dir).open().unwrap()).unwrap()
    }

    #[test]
    fn a_stamped_snapshot_is_adopted_until_the_index_or_the_snapshot_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join("db");
        let path = dir.path().join("snapshot.json");
        {
            let index = reopen(&db_dir);
            assert!(
                !index.adopt_published(&path).unwrap(),
                "nothing published yet"
            );
            index.put(&record("k1", "a")).unwrap();
            assert!(index.publish(&path).unwrap());
        }
        {
            // Unchanged since: adopted, and a publish has nothing to do.
            let index = reopen(&db_dir);
            assert!(index.adopt_published(&path).unwrap());
            assert!(!index.publish(&path).unwrap());
            // A change takes the stamp out at once, before any publication.
            index.put(&record("k2", "b")).unwrap();
        }
        {
            let index = reopen(&db_dir);
            assert!(
                !index.adopt_published(&path).unwrap(),
                "changed after the snapshot"
            );
            assert!(index.publish(&path).unwrap());
            let snap = Index::from_snapshot(Snapshot::read(&path).unwrap());
            assert_eq!(snap.all_records().unwrap().len(), 2);
        }
        // The snapshot replaced behind the index's back (another writer, a restore): not adopted.
        std::fs::write(&path, "{}").unwrap();
        let index = reopen(&db_dir);
        assert!(!index.adopt_published(&path).unwrap());
        // Nor when the stamp file is lost.
        assert!(index.publish(&path).unwrap());
        drop(index);
        std::fs::remove_file(snapshot::stamp_path(&path)).unwrap();
        assert!(!reopen(&db_dir).adopt_published(&path).unwrap());
    }
}
