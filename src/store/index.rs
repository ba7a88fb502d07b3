//! The sled index: small records keyed by step key, plus lookups by instance name.
//!
//! Trees:
//! * `records`   step key → [`Record`] (JSON)
//! * `latest`    "<experiment>\0<instance>" → step key of its most recent successful run
//! * `failures`  "<experiment>\0<instance>" → [`FailureRecord`]
//! * `file_memo` absolute path → size, mtime and content hash of an external file

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};

use crate::store::record::{FailureRecord, Record};

pub struct Index {
    db: sled::Db,
    records: sled::Tree,
    latest: sled::Tree,
    failures: sled::Tree,
    pub(crate) file_memo: sled::Tree,
}

fn instance_key(experiment: &str, instance: &str) -> Vec<u8> {
    format!("{experiment}\0{instance}").into_bytes()
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("the store's {what} entry is unreadable"))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

impl Index {
    pub fn new(db: sled::Db) -> Result<Index> {
        Ok(Index {
            records: db.open_tree("records")?,
            latest: db.open_tree("latest")?,
            failures: db.open_tree("failures")?,
            file_memo: db.open_tree("file_memo")?,
            db,
        })
    }

    pub fn record(&self, key: &str) -> Result<Option<Record>> {
        match self.records.get(key)? {
            Some(bytes) => Ok(decode(&bytes, "record").ok()),
            None => Ok(None),
        }
    }

    /// The record of the last successful run of an instance, whatever its key then was.
    pub fn latest(&self, experiment: &str, instance: &str) -> Result<Option<Record>> {
        match self.latest.get(instance_key(experiment, instance))? {
            Some(key) => self.record(&String::from_utf8_lossy(&key)),
            None => Ok(None),
        }
    }

    /// Stores a finished record and makes it durable before returning.
    pub fn put(&self, record: &Record) -> Result<()> {
        self.records.insert(record.key.as_bytes(), encode(record))?;
        self.latest.insert(
            instance_key(&record.experiment, &record.instance),
            record.key.as_bytes(),
        )?;
        self.failures
            .remove(instance_key(&record.experiment, &record.instance))?;
        self.db.flush()?;
        Ok(())
    }

    pub fn put_failure(
        &self,
        experiment: &str,
        instance: &str,
        failure: &FailureRecord,
    ) -> Result<()> {
        self.failures
            .insert(instance_key(experiment, instance), encode(failure))?;
        self.db.flush()?;
        Ok(())
    }

    pub fn failure(&self, experiment: &str, instance: &str) -> Result<Option<FailureRecord>> {
        match self.failures.get(instance_key(experiment, instance))? {
            Some(bytes) => Ok(decode(&bytes, "failure").ok()),
            None => Ok(None),
        }
    }

    pub fn remove_record(&self, key: &str) -> Result<()> {
        self.records.remove(key)?;
        Ok(())
    }

    /// Every record in the store.
    pub fn all_records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for item in self.records.iter() {
            let (_, v) = item?;
            if let Ok(r) = decode::<Record>(&v, "record") {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Drops `latest` pointers and failures whose record is gone.
    pub fn prune_pointers(&self) -> Result<()> {
        for item in self.latest.iter() {
            let (k, v) = item?;
            if !self.records.contains_key(&v)? {
                self.latest.remove(k)?;
            }
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
