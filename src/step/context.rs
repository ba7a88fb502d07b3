//! Everything a step needs to run one instance, and nothing about how results are stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::step::progress::Progress;
use crate::step::value::Value;

/// Metrics a step reports; they become the columns of `msae table`.
pub type Metrics = BTreeMap<String, serde_json::Value>;

/// A group of external files read by a step (a model folder, a dataset's shards), resolved before
/// keying. The key holds `described` and one hash over every file's name and content.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resource {
    /// The group's name in the key and in `why` (e.g. `model`, `source`).
    pub name: String,
    /// What the experiment wrote, or what it resolved to (`org/model@commit`), for messages.
    pub described: String,
    /// Each file under a name that does not depend on where the group lies (e.g. its path
    /// relative to the model folder), so that moving a folder does not change the key.
    pub files: Vec<(String, PathBuf)>,
    /// Files known by an identity that fixes their content without reading them (a file of a
    /// pinned Hugging Face commit, fetched only when the step runs): name → identity.
    pub identities: Vec<(String, String)>,
}

/// An immutable input file produced by an upstream instance.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InputArtifact {
    pub path: PathBuf,
    pub hash: String,
    /// The upstream instance's name, for messages.
    pub from: String,
}

/// A request to stop early, raised from outside the step (by a signal handler when a scheduler
/// warns of a time limit or pre-emption). A step that checkpoints reacts by writing its state and
/// returning an error; a rerun of the same key resumes from that state.
#[derive(Debug, Clone, Default)]
pub struct StopRequest(Arc<AtomicBool>);

impl StopRequest {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for a signal handler to set and for code that polls it.
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.0
    }
}

pub struct StepContext<'a> {
    pub instance: &'a str,
    pub params: &'a BTreeMap<String, Value>,
    pub inputs: BTreeMap<String, InputArtifact>,
    /// External files (resolved absolute paths) by parameter name.
    pub files: BTreeMap<String, PathBuf>,
    /// Resolved resource groups by name (see [`crate::step::Step::resources`]).
    pub resources: BTreeMap<String, Resource>,
    /// Execution-only settings (not keyed): the chosen device and thread count.
    pub device: &'a str,
    pub threads: usize,
    /// A folder that survives an interrupted run of this very key (for checkpoints).
    pub partial_dir: PathBuf,
    pub progress: &'a Progress,
    /// Raised when the step should checkpoint and stop (see [`StopRequest`]).
    pub stop: StopRequest,
    out_dir: PathBuf,
}

impl<'a> StepContext<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        instance: &'a str,
        params: &'a BTreeMap<String, Value>,
        inputs: BTreeMap<String, InputArtifact>,
        files: BTreeMap<String, PathBuf>,
        device: &'a str,
        threads: usize,
        partial_dir: PathBuf,
        out_dir: PathBuf,
        progress: &'a Progress,
    ) -> Self {
        StepContext {
            instance,
            params,
            inputs,
            files,
            resources: BTreeMap::new(),
            device,
            threads,
            partial_dir,
            progress,
            stop: StopRequest::default(),
            out_dir,
        }
    }

    /// Where the step writes its output `name`.
    pub fn output_path(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }

    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    pub fn int(&self, name: &str) -> Result<i64> {
        self.params
            .get(name)
            .and_then(Value::as_int)
            .ok_or_else(|| anyhow!("parameter `{name}` is missing or not an integer"))
    }

    pub fn usize(&self, name: &str) -> Result<usize> {
        let v = self.int(name)?;
        usize::try_from(v).map_err(|_| anyhow!("parameter `{name}` must not be negative"))
    }

    pub fn float(&self, name: &str) -> Result<f64> {
        self.params
            .get(name)
            .and_then(Value::as_float)
            .ok_or_else(|| anyhow!("parameter `{name}` is missing or not a number"))
    }

    pub fn str(&self, name: &str) -> Result<&str> {
        self.params
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("parameter `{name}` is missing or not a string"))
    }

    pub fn input(&self, name: &str) -> Result<&InputArtifact> {
        self.inputs
            .get(name)
            .ok_or_else(|| anyhow!("input `{name}` is missing"))
    }

    pub fn file(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }
}
