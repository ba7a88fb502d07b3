//! The state of each instance as the report page shows it.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::experiment::{Experiment, Plan};
use crate::runner::{InstanceOutcome, Status};
use crate::store::{Record, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Finished: its record is in the store (ran now or cached).
    Done,
    Failed,
    /// Being computed while the page is written.
    Running,
    /// Not reached yet in this run.
    Pending,
    /// Not run: an input failed or the run stopped.
    Skipped,
    /// Outside a run: no result for the current definition.
    NotRun,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Done,
        State::Running,
        State::Pending,
        State::Failed,
        State::Skipped,
        State::NotRun,
    ];

    pub fn label(self) -> &'static str {
        match self {
            State::Done => "done",
            State::Failed => "failed",
            State::Running => "running",
            State::Pending => "pending",
            State::Skipped => "skipped",
            State::NotRun => "not run",
        }
    }

    /// Okabe–Ito colours (and greys), told apart without colour by the labels on the page.
    pub fn colour(self) -> (u8, u8, u8) {
        match self {
            State::Done => (0x00, 0x9E, 0x73),
            State::Failed => (0xD5, 0x5E, 0x00),
            State::Running => (0xE6, 0x9F, 0x00),
            State::Pending => (0xCC, 0xCC, 0xCC),
            State::Skipped => (0x56, 0xB4, 0xE9),
            State::NotRun => (0x99, 0x99, 0x99),
        }
    }

    pub fn css(self) -> String {
        let (r, g, b) = self.colour();
        format!("#{r:02x}{g:02x}{b:02x}")
    }
}

/// What the page knows about every instance.
pub struct PageState {
    pub records: Vec<Option<Record>>,
    pub states: Vec<State>,
    /// Last error of failed (or skipped) instances, by instance index.
    pub errors: BTreeMap<usize, String>,
    /// The page is written while a run is in progress.
    pub in_progress: bool,
}

impl PageState {
    /// Outside a run: instances with a cached record are done; the others failed last time or
    /// have not run.
    pub fn from_store(exp: &Experiment, plan: &Plan, store: &Store) -> Result<PageState> {
        let records = crate::runner::plan::cached_records(plan, store)?;
        let mut states = Vec::with_capacity(records.len());
        let mut errors = BTreeMap::new();
        for (inst, r) in plan.instances.iter().zip(&records) {
            states.push(if r.is_some() {
                State::Done
            } else if let Some(f) = store.index.failure(&exp.name, &inst.name)? {
                errors.insert(inst.index, f.error);
                State::Failed
            } else {
                State::NotRun
            });
        }
        Ok(PageState {
            records,
            states,
            errors,
            in_progress: false,
        })
    }

    /// During a run: the outcomes so far, the instances in `running` in progress, the rest pending.
    pub fn from_outcomes(
        plan: &Plan,
        store: &Store,
        outcomes: &[InstanceOutcome],
        running: &[usize],
        in_progress: bool,
    ) -> Result<PageState> {
        let by_name: BTreeMap<&str, &InstanceOutcome> =
            outcomes.iter().map(|o| (o.name.as_str(), o)).collect();
        let mut records = Vec::with_capacity(plan.instances.len());
        let mut states = Vec::with_capacity(plan.instances.len());
        let mut errors = BTreeMap::new();
        for inst in &plan.instances {
            let (state, record) = match by_name.get(inst.name.as_str()) {
                Some(o) => match o.status {
                    Status::Ran | Status::Cached => {
                        let r = match &o.key {
                            Some(k) => store.index.record(k)?,
                            None => None,
                        };
                        (State::Done, r)
                    }
                    Status::Failed => (State::Failed, None),
                    Status::Skipped => (State::Skipped, None),
                },
                None if running.contains(&inst.index) => (State::Running, None),
                None => (State::Pending, None),
            };
            if let Some(o) = by_name.get(inst.name.as_str()) {
                if let Some(e) = &o.error {
                    errors.insert(inst.index, e.clone());
                }
            }
            states.push(state);
            records.push(record);
        }
        Ok(PageState {
            records,
            states,
            errors,
            in_progress,
        })
    }
}
