//! What a running `msae run` is doing now, published for readers as `live.json` in the store.
//!
//! The process that holds the store rewrites this file (atomically, about once a second while
//! something changes) with the state of every instance of its run: done, cached, running (with
//! its progress: position, length, message, estimated seconds left; and its scheduler job where
//! one runs it), waiting, failed or skipped. Readers show it next to the records of the index
//! snapshot; it is trusted only while the store is held (a leftover file of a killed run is
//! recognised because the reader can then open the store itself).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const FILE: &str = "live.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveRun {
    pub pid: u32,
    pub experiment: String,
    pub command: String,
    /// `local` or `slurm`.
    pub executor: String,
    pub started_unix: u64,
    pub updated_unix: u64,
    /// The run has ended (the file stays for the last word).
    pub finished: bool,
    pub instances: BTreeMap<String, LiveInstance>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum LiveState {
    Waiting,
    Running,
    Ran,
    Cached,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveInstance {
    pub state: LiveState,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_unix: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub progress: Option<LiveProgress>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub job: Option<LiveJob>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// The progress a running step reports (its bar), e.g. training steps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveProgress {
    pub message: String,
    pub position: u64,
    pub length: Option<u64>,
    pub elapsed_seconds: f64,
    pub eta_seconds: Option<f64>,
}

/// A scheduler job that runs an instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveJob {
    pub id: String,
    pub state: String,
}

impl LiveRun {
    pub fn write(&self, store_root: &Path) -> anyhow::Result<()> {
        crate::store::snapshot::write_atomic(
            &store_root.join(FILE),
            &serde_json::to_vec_pretty(self)?,
        )
    }

    pub fn read(store_root: &Path) -> Option<LiveRun> {
        let bytes = std::fs::read(store_root.join(FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
