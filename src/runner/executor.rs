//! Where instances run. The scheduling loop ([`crate::runner::run`]) decides *what* is ready and
//! records results; an [`Executor`] decides *where and when* a ready instance runs: threads on
//! this machine ([`crate::runner::local::Local`]) or jobs of a cluster scheduler
//! ([`crate::runner::slurm::Slurm`]). Both get the same [`Task`]s and answer with the same
//! [`TaskFinished`]s, so caching, early cut-off, failures and records behave identically.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use crate::runner::task::{TaskResult, TaskSpec};
use crate::step::Needs;
use crate::store::live::{LiveJob, LiveProgress};

/// A ready instance, handed to an executor.
pub struct Task {
    /// The instance's position in the plan.
    pub index: usize,
    pub needs: Needs,
    pub spec: TaskSpec,
    /// Scheduler settings of the instance's step (`[steps.<id>.resources]`; not keyed).
    pub resources: crate::experiment::resources::Resources,
    /// Instances of the same step kind and fusion key that run together with this one, in one
    /// pass over their data (only executors that say [`Executor::fuses`] get any).
    pub also: Vec<(usize, TaskSpec)>,
}

/// An instance that stopped running, successfully or not.
pub struct TaskFinished {
    pub index: usize,
    pub result: std::result::Result<TaskResult, String>,
}

/// What a reader is shown about an instance in flight.
#[derive(Default)]
pub struct InFlight {
    pub progress: Option<LiveProgress>,
    pub job: Option<LiveJob>,
    pub device: Option<String>,
    pub started_unix: u64,
}

pub trait Executor {
    /// `local` or `slurm` (published for readers).
    fn name(&self) -> &'static str;
    /// Instances submitted before this run started that are still running or finished
    /// (a scheduler's jobs of an earlier coordinator), by key: they are re-attached instead of
    /// being submitted again.
    fn adopt(&mut self, _key: &str, _index: usize) -> Result<bool> {
        Ok(false)
    }
    /// The outcome of `key` (its record or its failure) is durably in the index: what the
    /// executor kept so that a crash could not lose the result (a job's result file) may go.
    fn recorded(&mut self, _key: &str) {}
    /// Whether it runs fused groups of instances (tasks with [`Task::also`]) in one place.
    fn fuses(&self) -> bool {
        false
    }
    /// Whether an instance (or a fused group) with these needs can start now.
    fn has_room(&self, needs: Needs) -> bool;
    /// Starts a task (returns at once).
    fn start(&mut self, task: Task) -> Result<()>;
    /// Waits up to `timeout` for instances to stop; returns those that did.
    fn wait(&mut self, timeout: Duration) -> Result<Vec<TaskFinished>>;
    /// Instances started and not yet reported finished.
    fn in_flight(&self) -> usize;
    /// Live details of each instance in flight, by plan index.
    fn live(&self) -> BTreeMap<usize, InFlight>;
}
