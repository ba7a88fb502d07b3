//! The report page during a run: rewritten before each instance starts, so a browser watching
//! `index.html` sees every finished instance and those in progress. Writing the page costs time
//! in proportion to the experiment's size, so on large sweeps of short instances it is rewritten
//! only once the time since the last write is ten times what that write took: at most a tenth
//! of the run goes to the live page (rewriting it before each of 2,000 instances of a cheap kind
//! made the run quadratic, 0.17 s per instance).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::experiment::{Experiment, Plan};
use crate::runner::{InstanceOutcome, Observer};
use crate::store::Store;

use super::page;
use super::state::PageState;

/// Rewrites `dir/index.html` before each instance that runs (see the module's note on pacing).
pub struct LiveReport {
    dir: PathBuf,
    /// When the last write ended and how long it took.
    last: Mutex<Option<(Instant, Duration)>>,
}

impl LiveReport {
    pub fn new(dir: PathBuf) -> LiveReport {
        LiveReport {
            dir,
            last: Mutex::new(None),
        }
    }
}

impl Observer for LiveReport {
    fn due(&self) -> bool {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.is_none_or(|(ended, took)| ended.elapsed() >= took * 10)
    }

    fn before_instance(
        &self,
        exp: &Experiment,
        plan: &Plan,
        store: &Store,
        outcomes: &[InstanceOutcome],
        running: &[usize],
    ) {
        if !self.due() {
            return;
        }
        let start = Instant::now();
        let written = PageState::from_outcomes(plan, store, outcomes, running, true)
            .and_then(|snap| page::write(&self.dir, exp, plan, &snap, &store.objects));
        if let Err(e) = written {
            tracing::warn!("the report page could not be updated: {e:#}");
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), start.elapsed()));
    }
}
