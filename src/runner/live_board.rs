//! The coordinator's side of live inspection: keeps the state of every instance of the run and
//! publishes it (`live.json`) together with the index snapshot, at most about once a second
//! while work goes on — less often when publishing takes long, so that it never costs more than
//! a tenth of the run (the snapshot grows with the store) — and once more at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::experiment::{Experiment, Plan};
use crate::runner::executor::Executor;
use crate::store::live::{LiveInstance, LiveRun, LiveState};
use crate::store::{now_unix, Store};

pub struct LiveBoard {
    run: LiveRun,
    names: Vec<String>,
    /// When the last publication ended, and how long it took.
    last: Option<(Instant, Duration)>,
    dirty: bool,
}

const EVERY: Duration = Duration::from_millis(1000);

impl LiveBoard {
    pub fn new(exp: &Experiment, plan: &Plan, command: &str, executor: &str) -> LiveBoard {
        let names: Vec<String> = plan.instances.iter().map(|i| i.name.clone()).collect();
        let instances = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    LiveInstance {
                        state: LiveState::Waiting,
                        key: None,
                        started_unix: None,
                        progress: None,
                        job: None,
                        device: None,
                        error: None,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>();
        LiveBoard {
            run: LiveRun {
                pid: std::process::id(),
                experiment: exp.name.clone(),
                command: command.to_string(),
                executor: executor.to_string(),
                started_unix: now_unix(),
                updated_unix: now_unix(),
                finished: false,
                instances,
            },
            names,
            last: None,
            dirty: true,
        }
    }

    fn entry(&mut self, index: usize) -> &mut LiveInstance {
        self.run
            .instances
            .get_mut(&self.names[index])
            .expect("instance of the plan")
    }

    pub fn set(&mut self, index: usize, state: LiveState, key: Option<&str>) {
        let e = self.entry(index);
        if state == LiveState::Running {
            e.started_unix = Some(now_unix());
        } else {
            e.progress = None;
            e.job = None;
            e.device = None;
        }
        e.state = state;
        if let Some(k) = key {
            e.key = Some(k.to_string());
        }
        self.dirty = true;
    }

    pub fn fail(&mut self, index: usize, error: &str) {
        self.set(index, LiveState::Failed, None);
        self.entry(index).error = Some(error.to_string());
    }

    /// Writes `live.json` and the index snapshot when something changed and a second (or ten
    /// times the last publication's duration) has passed; always when `last`. A failure to
    /// publish never stops the run: it is logged.
    pub fn publish(&mut self, store: &Store, executor: &dyn Executor, last: bool) {
        let due = self
            .last
            .is_none_or(|(ended, took)| ended.elapsed() >= EVERY.max(took * 10));
        if !last && !due {
            return;
        }
        let running = executor.live();
        if !last && !self.dirty && running.is_empty() {
            return;
        }
        for (i, info) in running {
            let e = self.entry(i);
            if e.state == LiveState::Running {
                e.progress = info.progress;
                e.job = info.job;
                e.device = info.device;
                e.started_unix = Some(info.started_unix);
            }
        }
        let start = Instant::now();
        self.run.updated_unix = now_unix();
        self.run.finished = last;
        if let Err(e) = store.publish() {
            tracing::warn!("cannot publish the index snapshot: {e:#}");
        }
        if let Err(e) = self.run.write(&store.root) {
            tracing::warn!("cannot publish the run state: {e:#}");
        }
        self.last = Some((Instant::now(), start.elapsed()));
        self.dirty = false;
    }
}
