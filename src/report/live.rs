//! The report page during a run: rewritten before each instance starts, so a browser watching
//! `index.html` sees every finished instance and those in progress.

use std::path::PathBuf;

use crate::experiment::{Experiment, Plan};
use crate::runner::{InstanceOutcome, Observer};
use crate::store::Store;

use super::page;
use super::state::PageState;

/// Rewrites `dir/index.html` before each instance that runs.
pub struct LiveReport {
    pub dir: PathBuf,
}

impl Observer for LiveReport {
    fn before_instance(
        &self,
        exp: &Experiment,
        plan: &Plan,
        store: &Store,
        outcomes: &[InstanceOutcome],
        running: &[usize],
    ) {
        let written = PageState::from_outcomes(plan, store, outcomes, running, true)
            .and_then(|snap| page::write(&self.dir, exp, plan, &snap, &store.objects));
        if let Err(e) = written {
            tracing::warn!("the report page could not be updated: {e:#}");
        }
    }
}
