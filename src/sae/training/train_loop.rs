//! Several SAEs trained in one pass over the data.
//!
//! The models of a grid that read the same rows in the same order (same data, standardisation,
//! batch size, epochs and seed) need each batch only once: it is gathered and standardised
//! once, and every model takes its step on it with its own optimiser, loop position, log and
//! checkpoints. A model's step depends only on the batch and its own state, so each model ends
//! with exactly the bytes it would have alone; [`train`] is this loop with one
//! member, so the two paths cannot drift apart.
//!
//! Members resumed from checkpoints may stand at different positions (time-based checkpoints
//! are written at different steps). The loop always serves the earliest position any member
//! waits at, so a member that is behind catches up alone and then shares the batches again.

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::sae::config::{RecLoss, TrainConfig};
use crate::sae::model::Standardization;
use crate::sae::model::{count_dead, Sae};
use crate::sae::optim::Adam;
use crate::sae::training::checkpoint::{self, Checkpoint};
use crate::sae::training::health;
use crate::sae::training::records::{
    DeadRecord, EpochRecord, LoopState, StepRecord, TrainLog, TrainOptions, TrainOutcome,
    TrainProgress, ValidationSet,
};
use crate::sae::training::schedule::lr_multiplier;
use crate::sae::training::source::RowSource;
use crate::sae::training::step::{
    epoch_permutation, load_batch, standardised_mean, train_step, validate,
};
use crate::sae::{Result, SaeError};

/// One model of a fused training: its configuration, checkpointing, validation sets and
/// progress callback.
pub struct Member<'a> {
    pub config: &'a TrainConfig,
    pub options: &'a TrainOptions,
    pub validation: &'a [ValidationSet<'a>],
    pub progress: &'a mut dyn FnMut(&TrainProgress),
}

/// Where a member's loop stands between batches.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// At the start of its current epoch (or just resumed): the stop check comes first.
    EpochTop,
    /// Inside the epoch: waits for its next batch.
    Stepping,
    /// Returned: finished all epochs (true) or stopped early (false).
    Done(bool),
}

/// One model's training in progress.
struct Run<'a> {
    member: Member<'a>,
    model: Sae,
    adam: Adam,
    state: LoopState,
    log: TrainLog,
    nmse_ref: Option<Tensor>,
    last_ckpt: Instant,
    phase: Phase,
}

impl<'a> Run<'a> {
    fn start(
        member: Member<'a>,
        source: &dyn RowSource,
        standardization: &Standardization,
        device: &Device,
    ) -> Result<Self> {
        let (config, options) = (member.config, member.options);
        let (d, n_rows) = (source.dim(), source.n_rows());
        let resumed = match (&options.checkpoint_dir, options.resume) {
            (Some(dir), true) => checkpoint::load(dir, device)?,
            _ => None,
        };
        let (model, adam, state, log) = match resumed {
            Some(Checkpoint {
                model,
                adam,
                state,
                log,
                n_rows: ck_rows,
            }) => {
                if model.config != *config || model.d != d || ck_rows != n_rows {
                    return Err(SaeError::Config(
                        "checkpoint was written for a different configuration or data set".into(),
                    ));
                }
                (model, adam, state, log)
            }
            None => {
                let mut model = Sae::new(config, d, device)?;
                model.standardization = standardization.clone();
                let adam = Adam::new(
                    &model.params(),
                    config.beta1,
                    config.beta2,
                    config.eps,
                    config.weight_decay,
                )?;
                (model, adam, LoopState::default(), TrainLog::default())
            }
        };
        let nmse_ref = if config.loss == RecLoss::Nmse && !config.mean_center {
            let m = standardised_mean(source, standardization)?;
            Some(Tensor::from_slice(&m, d, device)?)
        } else {
            None
        };
        Ok(Run {
            member,
            model,
            adam,
            state,
            log,
            nmse_ref,
            last_ckpt: Instant::now(),
            phase: Phase::EpochTop,
        })
    }

    fn save(&self, n_rows: usize) -> Result<()> {
        if let Some(dir) = &self.member.options.checkpoint_dir {
            checkpoint::save(dir, &self.model, &self.adam, &self.state, &self.log, n_rows)?;
        }
        Ok(())
    }

    fn lr(&self, epoch: usize) -> f64 {
        let c = self.member.config;
        c.lr() * lr_multiplier(c.schedule, epoch, c.epochs, c.decay_time)
    }

    /// Moves the loop on until the member needs a batch or returns, in the order of the
    /// single-model loop: the stop check at an epoch's top, the epoch's steps, its end.
    fn settle(&mut self, steps_per_epoch: usize, n_rows: usize) -> Result<()> {
        loop {
            match self.phase {
                Phase::Done(_) => return Ok(()),
                Phase::EpochTop => {
                    if self.state.epoch >= self.member.config.epochs {
                        self.phase = Phase::Done(true);
                    } else if self
                        .member
                        .options
                        .stop_after_steps
                        .is_some_and(|s| self.state.step >= s)
                    {
                        // Resumed from the checkpoint written at the stop itself (the caller
                        // died before it used the model): hand that model back as it was.
                        self.phase = Phase::Done(false);
                    } else {
                        self.phase = Phase::Stepping;
                    }
                }
                Phase::Stepping => {
                    if self.state.batch < steps_per_epoch {
                        return Ok(());
                    }
                    self.end_epoch(n_rows)?;
                    self.phase = Phase::EpochTop;
                }
            }
        }
    }

    /// The position whose batch the member waits for.
    fn position(&self) -> Option<(usize, usize)> {
        (self.phase == Phase::Stepping).then_some((self.state.epoch, self.state.batch))
    }

    /// One optimisation step on `x` and its bookkeeping: loss records, dead-latent windows,
    /// progress, checkpoints, and the early stops.
    fn step(&mut self, x: &Tensor, total_steps: u64, n_rows: usize) -> Result<()> {
        let epoch = self.state.epoch;
        let lr = self.lr(epoch);
        let cfg = self.member.config;
        // The auxiliary loss's dead latents: no activation for more than `aux_dead_steps`
        // steps (SAELens's rule), and the counts before the step, to see which fire in it.
        let aux_on = cfg.aux_enabled();
        if aux_on && self.state.since_fired.len() != self.model.n {
            self.state.since_fired = vec![0; self.model.n];
        }
        let window = cfg.aux_dead_steps() as u64;
        let dead: Vec<u32> = (0..self.state.since_fired.len() as u32)
            .filter(|&j| self.state.since_fired[j as usize] > window)
            .collect();
        let counts_before = aux_on.then(|| self.model.stats.counts.clone());
        let out = train_step(
            &mut self.model,
            &mut self.adam,
            x,
            self.nmse_ref.as_ref(),
            lr,
            self.member.options.dense_backward,
            &dead,
        )?;
        if let Some(before) = counts_before {
            for ((s, &now), was) in self
                .state
                .since_fired
                .iter_mut()
                .zip(&self.model.stats.counts)
                .zip(before)
            {
                *s = if now > was { 0 } else { *s + 1 };
            }
        }
        if !out.loss.is_finite() {
            return Err(SaeError::Data(format!(
                "loss became {} at step {}",
                out.loss,
                self.state.step + 1
            )));
        }
        let state = &mut self.state;
        state.batch += 1;
        state.step += 1;
        state.acc_loss += out.loss;
        state.acc_rec += out.rec;
        state.acc_sparsity += out.sparsity;
        state.acc_active += out.active;
        state.acc_aux += out.aux;
        state.acc_count += 1;
        state.last_loss = out.loss;
        if state.step.is_multiple_of(cfg.log_every as u64) {
            self.log
                .steps
                .push(interval_record(state, epoch, lr, aux_on));
            state.acc_loss = 0.0;
            state.acc_rec = 0.0;
            state.acc_sparsity = 0.0;
            state.acc_active = 0.0;
            state.acc_aux = 0.0;
            state.acc_count = 0;
        }
        if state.step.is_multiple_of(cfg.check_dead as u64) {
            let f = self.model.stats.take_frequencies();
            self.log.dead.push(DeadRecord {
                step: state.step,
                dead: count_dead(&f, cfg.dead_threshold),
            });
        }
        for w in health::check(cfg, self.model.n, state.step, total_steps, out.active) {
            tracing::warn!(step = w.step, "{}", w.message);
            self.log.warnings.push(w);
        }
        (self.member.progress)(&TrainProgress {
            step: self.state.step,
            total_steps,
            epoch,
            loss: out.loss as f32,
        });
        let options = self.member.options;
        let step = self.state.step;
        let stop = options.stop_after_steps.is_some_and(|s| step >= s);
        let due_steps = options
            .checkpoint_every_steps
            .is_some_and(|k| k > 0 && step.is_multiple_of(k));
        let due_time = options
            .checkpoint_every_secs
            .is_some_and(|s| self.last_ckpt.elapsed().as_secs() >= s);
        if stop || due_steps || due_time {
            self.save(n_rows)?;
            self.last_ckpt = Instant::now();
        }
        if stop {
            self.phase = Phase::Done(false);
        } else if options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        {
            self.save(n_rows)?;
            return Err(SaeError::Stopped(step));
        }
        Ok(())
    }

    fn end_epoch(&mut self, n_rows: usize) -> Result<()> {
        let epoch = self.state.epoch;
        let mut vals = Vec::new();
        for set in self.member.validation {
            vals.push(validate(&mut self.model, set)?);
        }
        self.log.epochs.push(EpochRecord {
            epoch,
            lr: self.lr(epoch),
            last_loss: self.state.last_loss,
            last_dead: self.log.dead.last().map(|r| r.dead),
            validation: vals,
        });
        self.state.epoch += 1;
        self.state.batch = 0;
        if self.member.options.checkpoint_dir.is_some() {
            self.save(n_rows)?;
            self.last_ckpt = Instant::now();
        }
        Ok(())
    }

    fn outcome(self) -> TrainOutcome {
        let cfg = self.member.config;
        let tail = (self.state.acc_count > 0).then(|| {
            let epoch = self.state.epoch.min(cfg.epochs.saturating_sub(1));
            interval_record(&self.state, epoch, self.lr(epoch), cfg.aux_enabled())
        });
        TrainOutcome {
            model: self.model,
            log: self.log,
            finished: self.phase == Phase::Done(true),
            steps: self.state.step,
            tail,
        }
    }
}

/// The means of the loop's running sums: one loss record, ending at the loop's step.
fn interval_record(state: &LoopState, epoch: usize, lr: f64, aux_on: bool) -> StepRecord {
    let c = state.acc_count.max(1) as f64;
    StepRecord {
        step: state.step,
        epoch,
        lr,
        loss: state.acc_loss / c,
        rec: state.acc_rec / c,
        sparsity: state.acc_sparsity / c,
        active: state.acc_active / c,
        aux: aux_on.then_some(state.acc_aux / c),
    }
}

/// Trains every member on `source` (standardised with `standardization`) in one pass over the
/// data; the outcomes are in the members' order, each equal to training that member alone.
/// The members must agree on what decides the batches: seed, batch size and epochs.
pub fn train_group(
    source: &dyn RowSource,
    standardization: &Standardization,
    device: &Device,
    members: Vec<Member<'_>>,
) -> Result<Vec<TrainOutcome>> {
    let _pool = crate::sae::kernels::scratch::PoolLease::acquire();
    let Some(first) = members.first() else {
        return Ok(Vec::new());
    };
    let (seed, bs, epochs) = (
        first.config.seed,
        first.config.batch_size,
        first.config.epochs,
    );
    if let Some(m) = members
        .iter()
        .find(|m| (m.config.seed, m.config.batch_size, m.config.epochs) != (seed, bs, epochs))
    {
        return Err(SaeError::Config(format!(
            "models trained together must read the same batches: seed {seed}, batch size {bs}, \
             {epochs} epochs against seed {}, batch size {}, {} epochs",
            m.config.seed, m.config.batch_size, m.config.epochs
        )));
    }
    let (d, n_rows) = (source.dim(), source.n_rows());
    if n_rows == 0 {
        return Err(SaeError::Data("training set is empty".into()));
    }
    if standardization.mean.len() != d {
        return Err(SaeError::Data(format!(
            "standardisation mean has length {}, data width is {d}",
            standardization.mean.len()
        )));
    }
    for m in &members {
        m.config.validate(d)?;
    }
    let steps_per_epoch = n_rows.div_ceil(bs);
    let total_steps = (epochs * steps_per_epoch) as u64;
    let mut runs = members
        .into_iter()
        .map(|m| Run::start(m, source, standardization, device))
        .collect::<Result<Vec<_>>>()?;
    let mut perm: Option<(usize, Vec<usize>)> = None;
    let mut buf = Vec::new();
    loop {
        for run in runs.iter_mut() {
            run.settle(steps_per_epoch, n_rows)?;
        }
        // The earliest batch any member waits for; every member waiting there takes it.
        let Some((epoch, batch)) = runs.iter().filter_map(Run::position).min() else {
            break;
        };
        if perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
            perm = Some((epoch, epoch_permutation(seed, epoch, n_rows)));
        }
        let order = &perm.as_ref().expect("set above").1;
        let rows = &order[batch * bs..((batch + 1) * bs).min(n_rows)];
        let x = load_batch(source, rows, &mut buf, standardization, device)?;
        for run in runs.iter_mut() {
            if run.position() == Some((epoch, batch)) {
                run.step(&x, total_steps, n_rows)?;
            }
        }
    }
    Ok(runs.into_iter().map(Run::outcome).collect())
}

/// Train an SAE on `source` (standardised with `standardization`), validating after every
/// epoch on each of `validation`. See [`TrainOptions`] for checkpointing and resumption.
pub fn train(
    config: &TrainConfig,
    source: &dyn RowSource,
    standardization: &Standardization,
    validation: &[ValidationSet<'_>],
    device: &Device,
    options: &TrainOptions,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<TrainOutcome> {
    // One model is a fused training of one: the same loop serves both, so training a model
    // alone and within a group cannot drift apart.
    let member = Member {
        config,
        options,
        validation,
        progress,
    };
    let mut out = train_group(source, standardization, device, vec![member])?;
    Ok(out.remove(0))
}

#[cfg(test)]
mod tests {
    use super::train;
    use super::*;
    use crate::sae::config::{Arch, Schedule};
    use crate::sae::training::source::MatrixSource;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn data(rows: usize, d: usize) -> MatrixSource {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let v: Vec<f32> = (0..rows * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        MatrixSource::new(v, d).unwrap()
    }

    /// A grid of every architecture with different sizes and learning rates: what may differ
    /// between models trained together; the last two with the auxiliary dead-latent loss on a
    /// short dead window and enough latents for some to miss three batches in a row, so that
    /// its per-latent counters are at work (and checkpointed).
    fn grid() -> Vec<TrainConfig> {
        [
            (Arch::Topk, 24, 5e-3, false),
            (Arch::Msae, 32, 2e-3, false),
            (Arch::Relu, 16, 1e-3, false),
            (Arch::Batchtopk, 24, 4e-3, false),
            (Arch::Jumprelu, 16, 1e-3, false),
            (Arch::Topk, 256, 5e-3, true),
            (Arch::Batchtopk, 256, 4e-3, true),
        ]
        .into_iter()
        .map(|(arch, n, lr, aux)| TrainConfig {
            arch,
            n_latents: Some(n),
            k: Some(4),
            nesting_start: 4,
            lr: Some(lr),
            batch_size: 48,
            epochs: 3,
            schedule: Schedule::LinearDecay,
            log_every: 2,
            check_dead: 5,
            aux_k_coef: aux.then_some(1.0),
            aux_dead_steps: aux.then_some(2),
            ..Default::default()
        })
        .collect()
    }

    /// Weights, optimiser-visible statistics and log of an outcome, as bytes.
    fn bytes(o: &TrainOutcome) -> (Vec<Vec<u32>>, String, u64, bool) {
        let w = o
            .model
            .params()
            .iter()
            .map(|t| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect();
        (
            w,
            serde_json::to_string(&o.log).unwrap(),
            o.steps,
            o.finished,
        )
    }

    fn alone(cfg: &TrainConfig, src: &MatrixSource, opts: &TrainOptions) -> TrainOutcome {
        let std = Standardization::identity(src.dim());
        train(cfg, src, &std, &[], &Device::Cpu, opts, &mut |_| {}).unwrap()
    }

    fn together(
        cfgs: &[TrainConfig],
        opts: &[TrainOptions],
        src: &MatrixSource,
    ) -> Result<Vec<TrainOutcome>> {
        let std = Standardization::identity(src.dim());
        type Callback = Box<dyn FnMut(&TrainProgress)>;
        let mut noop: Vec<Callback> = cfgs
            .iter()
            .map(|_| Box::new(|_: &TrainProgress| {}) as _)
            .collect();
        let members = cfgs
            .iter()
            .zip(opts)
            .zip(noop.iter_mut())
            .map(|((config, options), progress)| Member {
                config,
                options,
                validation: &[],
                progress: progress.as_mut(),
            })
            .collect();
        train_group(src, &std, &Device::Cpu, members)
    }

    #[test]
    fn every_model_trained_together_has_the_bytes_of_training_it_alone() {
        let src = data(200, 12);
        let cfgs = grid();
        let opts = vec![TrainOptions::default(); cfgs.len()];
        let fused = together(&cfgs, &opts, &src).unwrap();
        assert_eq!(fused.len(), cfgs.len());
        for (cfg, f) in cfgs.iter().zip(&fused) {
            let a = alone(cfg, &src, &TrainOptions::default());
            assert_eq!(a.steps, 15, "{:?}", cfg.arch);
            assert!(bytes(&a) == bytes(f), "{:?} differs when fused", cfg.arch);
            // The auxiliary loss did work in the runs that have it.
            let aux_seen = a.log.steps.iter().any(|r| r.aux.is_some_and(|v| v > 0.0));
            assert_eq!(aux_seen, cfg.aux_enabled(), "{:?}", cfg.arch);
        }
        // The comparison can fail: another learning rate gives other bytes.
        let mut other = cfgs[0].clone();
        other.lr = Some(1e-2);
        assert!(bytes(&alone(&other, &src, &TrainOptions::default())) != bytes(&fused[0]));
    }

    #[test]
    fn members_resumed_at_different_positions_catch_up_and_end_as_alone() {
        let src = data(200, 12);
        let cfgs = grid();
        let dirs: Vec<_> = cfgs.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        let opts = |stop: Option<u64>, i: usize| TrainOptions {
            checkpoint_dir: Some(dirs[i].path().to_path_buf()),
            checkpoint_every_steps: Some(2),
            resume: true,
            stop_after_steps: stop,
            ..Default::default()
        };
        // Each model interrupted at its own step (mid-epoch, at an epoch end, not at all).
        for (i, cfg) in cfgs.iter().enumerate() {
            let stop = [
                Some(3u64),
                Some(5),
                None,
                Some(9),
                Some(12),
                Some(4),
                Some(7),
            ][i];
            if stop.is_some() {
                let part = alone(cfg, &src, &opts(stop, i));
                assert!(!part.finished);
            }
        }
        let resume: Vec<_> = (0..cfgs.len()).map(|i| opts(None, i)).collect();
        let fused = together(&cfgs, &resume, &src).unwrap();
        for (cfg, f) in cfgs.iter().zip(&fused) {
            let a = alone(cfg, &src, &TrainOptions::default());
            assert!(f.finished);
            assert!(
                bytes(&a).0 == bytes(f).0,
                "{:?} weights differ after a staggered resume",
                cfg.arch
            );
        }
    }

    #[test]
    fn models_that_read_other_batches_are_refused() {
        let src = data(100, 12);
        let mut cfgs = grid();
        cfgs.truncate(2);
        cfgs[1].seed = cfgs[0].seed + 1;
        let opts = vec![TrainOptions::default(); 2];
        let err = together(&cfgs, &opts, &src).expect_err("refused");
        assert!(err.to_string().contains("same batches"), "{err}");
        cfgs[1].seed = cfgs[0].seed;
        cfgs[1].batch_size = 32;
        assert!(together(&cfgs, &opts, &src).is_err());
    }
}
