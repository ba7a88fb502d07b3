//! What the index remembers about a finished step instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The parts a step key is made of, kept so `msae why` can say which one changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyComponents {
    pub kind: String,
    pub version: u32,
    /// Canonical parameter values (see `Value::canonical`).
    pub params: BTreeMap<String, serde_json::Value>,
    /// Content hash of each input artifact.
    pub inputs: BTreeMap<String, String>,
    /// External files: path as written and content hash.
    pub files: BTreeMap<String, FileComponent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileComponent {
    pub path: String,
    pub hash: String,
}

impl KeyComponents {
    /// The step key: BLAKE3 over the canonical JSON of the components.
    pub fn key(&self) -> String {
        let text = serde_json::to_string(self).expect("components serialise");
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub hash: String,
    pub size: u64,
}

/// A finished instance: its key, where its outputs are, its metrics and how it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub components: KeyComponents,
    pub experiment: String,
    pub instance: String,
    pub coords: BTreeMap<String, serde_json::Value>,
    /// Upstream instance name of each input, for messages.
    pub input_from: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, ArtifactRecord>,
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// Execution-only settings (not part of the key).
    pub exec: BTreeMap<String, serde_json::Value>,
    pub finished_unix: u64,
    pub seconds: f64,
    pub msae_version: String,
}

impl Record {
    /// The device and precision that computed this result, e.g. `cuda:0 f32` (recorded with the
    /// result, not part of its key; records from before precision was kept show the device only).
    pub fn produced_on(&self) -> String {
        let text = |name: &str| self.exec.get(name).and_then(|v| v.as_str());
        match (text("device"), text("precision")) {
            (Some(d), Some(p)) => format!("{d} {p}"),
            (Some(d), None) => d.to_string(),
            _ => "unrecorded".to_string(),
        }
    }
}

/// The last failure of an instance, so `msae status` can show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureRecord {
    pub key: String,
    pub error: String,
    pub finished_unix: u64,
}
