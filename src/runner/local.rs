//! The local executor: up to `-j` instances at once, each in a thread of its own with its
//! share of the CPU threads and, for steps that use a device, a GPU of its own. A fused group
//! of instances (trainings that share their batches) takes one slot and one device.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::runner::executor::{Executor, InFlight, Task, TaskFinished};
use crate::runner::task::{run_task_group, with_threads, TaskSpec};
use crate::step::progress::Progress;
use crate::step::Needs;
use crate::step::{Registry, StopRequest};
use crate::store::now_unix;

pub struct Local {
    /// The step kinds the tasks name.
    kinds: Registry,
    jobs: usize,
    /// Threads of a running instance that uses many.
    threads_each: usize,
    /// GPUs with the number of instances on each; empty when the run is on the CPU.
    devices: Vec<(String, usize)>,
    per_device: usize,
    /// The device steps use when there are no GPUs (`cpu`).
    default_device: String,
    progress: Progress,
    running: BTreeMap<usize, Running>,
    /// Slots in use, by the plan index of the task's first instance.
    slots: BTreeMap<usize, Slot>,
    sender: Sender<TaskFinished>,
    receiver: Receiver<TaskFinished>,
}

struct Running {
    line: Progress,
    device: String,
    /// The slot (first instance of its task) it runs in.
    slot: usize,
    started_unix: u64,
}

/// A started task: its instances still running and the GPU it holds.
struct Slot {
    left: usize,
    /// Index into `devices` while it holds a GPU.
    gpu: Option<usize>,
}

impl Local {
    /// `devices`: the GPUs to spread device steps over (empty: every step on `default_device`).
    pub fn new(
        kinds: Registry,
        jobs: usize,
        threads: usize,
        devices: Vec<String>,
        per_device: usize,
        default_device: String,
        progress: Progress,
    ) -> Result<Local> {
        if jobs == 0 {
            bail!("-j must be at least 1");
        }
        if per_device == 0 {
            bail!("--per-device must be at least 1");
        }
        let (sender, receiver) = channel();
        Ok(Local {
            kinds,
            jobs,
            // CPU threads are divided among the instances that may run at once.
            threads_each: (threads / jobs).max(1),
            devices: devices.into_iter().map(|d| (d, 0)).collect(),
            per_device,
            default_device,
            progress,
            running: BTreeMap::new(),
            slots: BTreeMap::new(),
            sender,
            receiver,
        })
    }

    fn free_gpu(&self) -> Option<usize> {
        self.devices
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n < self.per_device)
            .min_by_key(|(i, (_, n))| (*n, *i))
            .map(|(i, _)| i)
    }
}

impl Executor for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn fuses(&self) -> bool {
        true
    }

    fn has_room(&self, needs: Needs) -> bool {
        self.slots.len() < self.jobs
            && (!needs.device || self.devices.is_empty() || self.free_gpu().is_some())
    }

    fn start(&mut self, task: Task) -> Result<()> {
        let Task {
            index,
            needs,
            spec,
            also,
            ..
        } = task;
        let gpu = if needs.device && !self.devices.is_empty() {
            let g = self
                .free_gpu()
                .ok_or_else(|| anyhow::anyhow!("no free device"))?;
            self.devices[g].1 += 1;
            Some(g)
        } else {
            None
        };
        let device = match gpu {
            Some(g) => self.devices[g].0.clone(),
            None if needs.device => self.default_device.clone(),
            None => "cpu".to_string(),
        };
        let threads = if needs.threads { self.threads_each } else { 1 };
        let mut members: Vec<(usize, TaskSpec)> = vec![(index, spec)];
        members.extend(also);
        let mut lines = Vec::new();
        for (i, spec) in members.iter_mut() {
            spec.device = device.clone();
            spec.threads = threads;
            let line = self.progress.for_instance(&spec.instance);
            self.running.insert(
                *i,
                Running {
                    line: line.clone(),
                    device: device.clone(),
                    slot: index,
                    started_unix: now_unix(),
                },
            );
            lines.push(line);
        }
        self.slots.insert(
            index,
            Slot {
                left: members.len(),
                gpu,
            },
        );
        let sender = self.sender.clone();
        let kinds = self.kinds;
        std::thread::Builder::new()
            .name(format!("msae-{index}"))
            .spawn(move || {
                let specs: Vec<TaskSpec> = members.iter().map(|(_, s)| s.clone()).collect();
                let results = with_threads(threads, || {
                    // Local runs have no scheduler to warn them: the request is never raised.
                    run_task_group(kinds, &specs, &lines, &StopRequest::default())
                });
                let results: Vec<std::result::Result<_, String>> = match results {
                    Ok(rs) => rs
                        .into_iter()
                        .map(|r| r.map_err(|e| format!("{e:#}")))
                        .collect(),
                    Err(e) => specs.iter().map(|_| Err(format!("{e:#}"))).collect(),
                };
                for line in &lines {
                    line.finish();
                }
                for ((i, _), result) in members.iter().zip(results) {
                    sender.send(TaskFinished { index: *i, result }).ok();
                }
            })?;
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<Vec<TaskFinished>> {
        let mut out = Vec::new();
        match self.receiver.recv_timeout(timeout) {
            Ok(f) => out.push(f),
            Err(RecvTimeoutError::Timeout) => return Ok(out),
            Err(RecvTimeoutError::Disconnected) => bail!("the worker threads stopped"),
        }
        out.extend(self.receiver.try_iter());
        for f in &out {
            if let Some(r) = self.running.remove(&f.index) {
                let done = self.slots.get_mut(&r.slot).map(|s| {
                    s.left -= 1;
                    s.left == 0
                });
                if done == Some(true) {
                    if let Some(g) = self.slots.remove(&r.slot).and_then(|s| s.gpu) {
                        self.devices[g].1 -= 1;
                    }
                }
            }
        }
        Ok(out)
    }

    fn in_flight(&self) -> usize {
        self.running.len()
    }

    fn live(&self) -> BTreeMap<usize, InFlight> {
        self.running
            .iter()
            .map(|(i, r)| {
                (
                    *i,
                    InFlight {
                        progress: crate::runner::progress::snapshot(&r.line),
                        job: None,
                        device: Some(r.device.clone()),
                        started_unix: r.started_unix,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(jobs: usize, devices: &[&str], per_device: usize) -> Local {
        Local::new(
            crate::step::fake::registry(),
            jobs,
            8,
            devices.iter().map(|d| d.to_string()).collect(),
            per_device,
            "cpu".into(),
            Progress::hidden(true),
        )
        .unwrap()
    }

    #[test]
    fn threads_are_divided_among_the_slots() {
        assert_eq!(local(1, &[], 1).threads_each, 8);
        assert_eq!(local(3, &[], 1).threads_each, 2);
        assert_eq!(local(16, &[], 1).threads_each, 1);
        assert!(Local::new(
            crate::step::fake::registry(),
            0,
            8,
            vec![],
            1,
            "cpu".into(),
            Progress::hidden(true)
        )
        .is_err());
    }

    #[test]
    fn each_gpu_takes_one_instance_and_cpu_steps_never_wait_for_one() {
        let mut l = local(4, &["cuda:0", "cuda:1"], 1);
        assert_eq!(l.free_gpu(), Some(0));
        l.devices[0].1 += 1;
        assert_eq!(l.free_gpu(), Some(1));
        l.devices[1].1 += 1;
        assert_eq!(l.free_gpu(), None);
        assert!(!l.has_room(Needs::DEVICE));
        assert!(l.has_room(Needs::CPU));
        // Two per GPU when asked; the least busy GPU first.
        let mut l = local(4, &["cuda:0", "cuda:1"], 2);
        l.devices[0].1 += 1;
        assert_eq!(l.free_gpu(), Some(1));
        l.devices[1].1 += 1;
        assert_eq!(l.free_gpu(), Some(0));
    }
}
