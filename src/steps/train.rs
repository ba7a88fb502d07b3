//! `train`: an SAE of any architecture on a matrix, with the reference recipe as the default.
//!
//! The SAE is trained one epoch at a time through the trainer's checkpoint/resume path: after
//! every epoch the model is kept as a snapshot (so `validate` can evaluate any number of
//! validation sets per epoch without retraining), and a run killed at any moment resumes from the
//! last checkpoint in the step's `partial/` folder with bit-identical final weights.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::data::npy::Matrix;
use crate::sae::train::{train, TrainOptions};
use crate::sae::TrainConfig;
use crate::steps::sae_common::{device, standardization_of, stats_options, MatrixRows};
use crate::steps::snapshots;
use crate::steps::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::steps::value::Value;
use crate::steps::{Metrics, Step, StepContext};

pub struct Train;

const ARCHS: &[&str] = &["relu", "topk", "batchtopk", "jumprelu", "msae"];

static PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "data", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the training matrix, e.g. \"data.train\"", ..ParamSpec::BASE },
    ParamSpec { name: "arch", ty: ParamType::Choice(ARCHS), default: Default::Str("topk"), gridable: true, doc: "architecture: relu (L1), topk, batchtopk, jumprelu, msae (Matryoshka)", ..ParamSpec::BASE },
    ParamSpec { name: "expansion", ty: ParamType::Float, default: Default::Float(8.0), gridable: true, min: Some(0.01), doc: "latents n = int(expansion · d)", ..ParamSpec::BASE },
    ParamSpec { name: "n_latents", ty: ParamType::Int, default: Default::Absent, gridable: true, min: Some(1.0), doc: "explicit latent count (overrides expansion)", ..ParamSpec::BASE },
    ParamSpec { name: "k", ty: ParamType::Int, default: Default::Absent, gridable: true, min: Some(1.0), doc: "active latents for topk (default 64) and batchtopk (default 32)", ..ParamSpec::BASE },
    ParamSpec { name: "topk_variant", ty: ParamType::Choice(&["relu", "plain", "abs", "absrelu"]), default: Default::Str("relu"), gridable: true, doc: "secondary function of the top-k family (reference TopKReLU = relu)", ..ParamSpec::BASE },
    ParamSpec { name: "l1", ty: ParamType::Float, default: Default::Absent, gridable: true, min: Some(0.0), doc: "sparsity weight λ: L1 for relu (default 0.003), L0 for jumprelu (default 0.001)", ..ParamSpec::BASE },
    ParamSpec { name: "weighting", ty: ParamType::Choice(&["uw", "rw", "rw_fixed"]), default: Default::Str("uw"), gridable: true, doc: "Matryoshka level weights: uw (all 1), rw (reference: largest weight on the smallest k), rw_fixed (largest weight on the largest k)", ..ParamSpec::BASE },
    ParamSpec { name: "nesting_start", ty: ParamType::Int, default: Default::Int(64), gridable: true, min: Some(1.0), doc: "first Matryoshka level; levels double while ≤ n, then n", ..ParamSpec::BASE },
    ParamSpec { name: "lr", ty: ParamType::Float, default: Default::Absent, gridable: true, min: Some(0.0), doc: "learning rate (default per arch: relu 5e-5, topk/batchtopk 5e-4, msae 1e-4, jumprelu 1e-4)", ..ParamSpec::BASE },
    ParamSpec { name: "beta1", ty: ParamType::Float, default: Default::Float(0.9), min: Some(0.0), max: Some(1.0), doc: "Adam β1", ..ParamSpec::BASE },
    ParamSpec { name: "beta2", ty: ParamType::Float, default: Default::Float(0.999), min: Some(0.0), max: Some(1.0), doc: "Adam β2", ..ParamSpec::BASE },
    ParamSpec { name: "eps", ty: ParamType::Float, default: Default::Float(6.25e-10), min: Some(0.0), doc: "Adam ε", ..ParamSpec::BASE },
    ParamSpec { name: "weight_decay", ty: ParamType::Float, default: Default::Float(0.0), min: Some(0.0), doc: "decoupled weight decay", ..ParamSpec::BASE },
    ParamSpec { name: "batch_size", ty: ParamType::Int, default: Default::Int(4096), gridable: true, min: Some(1.0), doc: "training batch size", ..ParamSpec::BASE },
    ParamSpec { name: "epochs", ty: ParamType::Int, default: Default::Int(30), gridable: true, min: Some(1.0), doc: "training epochs", ..ParamSpec::BASE },
    ParamSpec { name: "schedule", ty: ParamType::Choice(&["linear_decay", "linear_decay_fixed", "cosine_warmup", "constant"]), default: Default::Str("linear_decay"), gridable: true, doc: "lr schedule per epoch; linear_decay is the reference (its factor exceeds 1 for short runs), linear_decay_fixed never exceeds 1", ..ParamSpec::BASE },
    ParamSpec { name: "decay_time", ty: ParamType::Float, default: Default::Float(0.8), min: Some(0.0), max: Some(1.0), doc: "fraction of epochs before the linear decay", ..ParamSpec::BASE },
    ParamSpec { name: "clip_grad", ty: ParamType::Float, default: Default::Float(1.0), doc: "global gradient-norm clip (≤ 0 disables)", ..ParamSpec::BASE },
    ParamSpec { name: "init", ty: ParamType::Choice(&["kaiming", "xavier", "uniform", "normal"]), default: Default::Str("kaiming"), doc: "decoder initialisation", ..ParamSpec::BASE },
    ParamSpec { name: "init_norm", ty: ParamType::Float, default: Default::Float(0.1), min: Some(0.0), doc: "row norm of the initial decoder", ..ParamSpec::BASE },
    ParamSpec { name: "soft_cap", ty: ParamType::Float, default: Default::Float(0.0), min: Some(0.0), doc: "c > 0 applies c·tanh(z/c) to the code", ..ParamSpec::BASE },
    ParamSpec { name: "loss", ty: ParamType::Choice(&["nmse", "mse", "cosine"]), default: Default::Str("nmse"), gridable: true, doc: "reconstruction loss", ..ParamSpec::BASE },
    ParamSpec { name: "seed", ty: ParamType::Int, default: Default::ExperimentSeed, gridable: true, min: Some(0.0), doc: "initialisation and shuffling seed (defaults to the experiment's seed)", ..ParamSpec::BASE },
    ParamSpec { name: "check_dead", ty: ParamType::Int, default: Default::Int(1000), min: Some(1.0), doc: "window in steps of the dead-latent count", ..ParamSpec::BASE },
    ParamSpec { name: "batchtopk_inference", ty: ParamType::Choice(&["threshold", "batch"]), default: Default::Str("threshold"), doc: "BatchTopK outside training: a global threshold estimated in training, or the reference's batch-level top-k", ..ParamSpec::BASE },
    ParamSpec { name: "dead_threshold", ty: ParamType::Float, default: Default::Float(3.1622776601683795e-6), min: Some(0.0), doc: "activation frequency below which a latent counts as dead (reference 10^-5.5)", ..ParamSpec::BASE },
    ParamSpec { name: "batchtopk_threshold_momentum", ty: ParamType::Float, default: Default::Float(0.99), min: Some(0.0), max: Some(1.0), doc: "EMA momentum of the BatchTopK inference threshold", ..ParamSpec::BASE },
    ParamSpec { name: "jumprelu_theta0", ty: ParamType::Float, default: Default::Float(0.001), min: Some(0.0), doc: "JumpReLU initial threshold", ..ParamSpec::BASE },
    ParamSpec { name: "jumprelu_bandwidth", ty: ParamType::Float, default: Default::Float(0.001), min: Some(0.0), doc: "JumpReLU kernel bandwidth ε of the straight-through estimator", ..ParamSpec::BASE },
    ParamSpec { name: "log_every", ty: ParamType::Int, default: Default::Int(100), min: Some(1.0), doc: "training steps per loss record in the log", ..ParamSpec::BASE },
    ParamSpec { name: "mean_center", ty: ParamType::Bool, default: Default::Bool(true), doc: "subtract the training mean", ..ParamSpec::BASE },
    ParamSpec { name: "target_norm", ty: ParamType::Float, default: Default::Absent, min: Some(0.0), doc: "target norm of the scale (default √d; 0 disables scaling)", ..ParamSpec::BASE },
    ParamSpec { name: "scale_rule", ty: ParamType::Choice(&["reference", "corrected"]), default: Default::Str("reference"), gridable: true, doc: "reference: s = target/mean‖x−μ‖²; corrected: s = target/sqrt(mean‖x−μ‖²)", ..ParamSpec::BASE },
    ParamSpec { name: "snapshots", ty: ParamType::Bool, default: Default::Bool(true), doc: "keep the weights after every epoch (for per-epoch validation)", ..ParamSpec::BASE },
    ParamSpec { name: "checkpoint_steps", ty: ParamType::Int, role: Role::Exec, default: Default::Int(500), min: Some(1.0), doc: "write a resumable checkpoint every this many steps", ..ParamSpec::BASE },
    ParamSpec { name: "checkpoint_seconds", ty: ParamType::Int, role: Role::Exec, default: Default::Int(120), min: Some(1.0), doc: "…or when this many seconds passed since the last one", ..ParamSpec::BASE },
];

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "model",
        optional: false,
        doc: "the trained SAE: weights, μ, s, target norm, activation counts, config (safetensors)",
    },
    OutputSpec {
        name: "log",
        optional: false,
        doc: "training log: loss records, dead-latent counts, per-epoch summaries (JSON)",
    },
    OutputSpec {
        name: "snapshots",
        optional: true,
        doc: "the weights after every epoch (safetensors, `epoch<i>/<tensor>`)",
    },
];

/// TOML parameters → the trainer's configuration (field names as `TrainConfig`'s serde names).
pub fn config_from_params(params: &BTreeMap<String, Value>) -> Result<TrainConfig> {
    fn rename(k: &str) -> &str {
        match k {
            "expansion" => "expansion_factor",
            "l1" => "sparsity_weight",
            "weighting" => "msae_weighting",
            other => other,
        }
    }
    let skip = [
        "data",
        "mean_center",
        "target_norm",
        "scale_rule",
        "snapshots",
        "checkpoint_steps",
        "checkpoint_seconds",
    ];
    let mut obj = serde_json::Map::new();
    for (k, v) in params {
        if skip.contains(&k.as_str()) {
            continue;
        }
        obj.insert(rename(k).to_string(), serde_json::to_value(v)?);
    }
    obj.insert(
        "mean_center".into(),
        serde_json::Value::Bool(
            params
                .get("mean_center")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        ),
    );
    serde_json::from_value(serde_json::Value::Object(obj)).context("invalid training configuration")
}

impl Step for Train {
    step_info!(kind: "train", version: 2, about: "train an SAE (relu, topk, batchtopk, jumprelu, msae) with the reference recipe");

    fn needs(&self) -> crate::steps::Needs {
        crate::steps::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let config = config_from_params(ctx.params)?;
        let input = ctx.input("data")?;
        let m = Matrix::open(&input.path)?;
        config.validate(m.cols()).map_err(|e| anyhow!("{e}"))?;
        let (standardization, target_norm) = standardization_of(&m, &stats_options(ctx)?)?;
        let dev = device(ctx.device)?;
        let source = MatrixRows(crate::data::reader::RowReader::new(&m)?);
        let steps_per_epoch = m.rows().div_ceil(config.batch_size) as u64;
        let total = steps_per_epoch * config.epochs as u64;
        std::fs::create_dir_all(&ctx.partial_dir)?;
        let keep_snapshots = ctx
            .params
            .get("snapshots")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        // Scratch buffers stay pooled across the epochs and are released when the step ends.
        let _pool = crate::sae::scratch::PoolLease::acquire();
        let bar = ctx.progress.bar(total, &format!("train {}", ctx.instance));
        let started = std::time::Instant::now();
        let mut outcome = None;
        for epoch in 0..config.epochs {
            let snap = snapshots::epoch_file(&ctx.partial_dir, epoch);
            if keep_snapshots && snap.exists() && epoch + 1 < config.epochs {
                continue;
            }
            bar.set_message(format!(
                "train {} epoch {}/{}",
                ctx.instance,
                epoch + 1,
                config.epochs
            ));
            let options = TrainOptions {
                checkpoint_dir: Some(ctx.partial_dir.clone()),
                checkpoint_every_steps: ctx
                    .params
                    .get("checkpoint_steps")
                    .and_then(Value::as_int)
                    .map(|v| v as u64),
                checkpoint_every_secs: ctx
                    .params
                    .get("checkpoint_seconds")
                    .and_then(Value::as_int)
                    .map(|v| v as u64),
                resume: true,
                stop_after_steps: Some(steps_per_epoch * (epoch as u64 + 1)),
                ..TrainOptions::default()
            };
            let mut on_step = |p: &crate::sae::train::Progress| {
                bar.set_position(p.step);
            };
            let mut result = train(
                &config,
                &source,
                &standardization,
                &[],
                &dev,
                &options,
                &mut on_step,
            )
            .map_err(|e| anyhow!("training {}: {e}", ctx.instance))?;
            result.model.target_norm = target_norm as f32;
            if keep_snapshots {
                result.model.save(&snap).map_err(|e| anyhow!("{e}"))?;
            }
            outcome = Some(result);
        }
        bar.finish_and_clear();
        let outcome = outcome.ok_or_else(|| anyhow!("no epoch was trained"))?;
        let seconds = started.elapsed().as_secs_f64();
        outcome
            .model
            .save(&ctx.output_path("model"))
            .map_err(|e| anyhow!("{e}"))?;
        std::fs::write(
            ctx.output_path("log"),
            serde_json::to_vec_pretty(&outcome.log)?,
        )?;
        if keep_snapshots {
            snapshots::combine(
                &ctx.partial_dir,
                config.epochs,
                &ctx.output_path("snapshots"),
            )?;
        }
        let mut metrics = Metrics::new();
        metrics.insert("n_latents".into(), outcome.model.n.into());
        metrics.insert("steps".into(), outcome.steps.into());
        if let Some(last) = outcome.log.steps.last() {
            metrics.insert("final_loss".into(), last.loss.into());
            metrics.insert("final_active".into(), last.active.into());
        }
        if let Some(dead) = outcome.log.dead.last() {
            metrics.insert("dead".into(), dead.dead.into());
        }
        metrics.insert("train_seconds".into(), seconds.into());
        Ok(metrics)
    }
}

/// Loads a trained SAE from a store object.
pub fn load_model(path: &Path, dev: &candle_core::Device) -> Result<crate::sae::Sae> {
    crate::sae::Sae::load(path, dev)
        .map_err(|e| anyhow!("cannot load the SAE {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::config::{Arch, MsaeWeighting, Schedule};

    #[test]
    fn toml_parameters_map_onto_the_training_configuration() {
        let mut p = BTreeMap::new();
        p.insert("data".to_string(), Value::Str("x".into()));
        p.insert("arch".to_string(), Value::Str("msae".into()));
        p.insert("expansion".to_string(), Value::Float(4.0));
        p.insert("weighting".to_string(), Value::Str("rw".into()));
        p.insert(
            "schedule".to_string(),
            Value::Str("linear_decay_fixed".into()),
        );
        p.insert("l1".to_string(), Value::Float(0.01));
        p.insert("scale_rule".to_string(), Value::Str("corrected".into()));
        p.insert("checkpoint_steps".to_string(), Value::Int(3));
        let c = config_from_params(&p).unwrap();
        assert_eq!(c.arch, Arch::Msae);
        assert_eq!(c.expansion_factor, 4.0);
        assert_eq!(c.msae_weighting, MsaeWeighting::Rw);
        assert_eq!(c.schedule, Schedule::LinearDecayFixed);
        assert_eq!(c.sparsity_weight, Some(0.01));
        // Everything the TOML does not set keeps the reference default.
        assert_eq!(c.batch_size, 4096);
        assert_eq!(c.eps, 6.25e-10);
    }

    #[test]
    fn every_keyed_train_parameter_is_a_training_knob() {
        // A TOML parameter that the trainer does not know would be silently ignored; the
        // configuration rejects unknown fields, so building one with every parameter set proves
        // each name maps onto a field.
        let mut p = BTreeMap::new();
        for spec in PARAMS {
            if let Some(v) = spec.default_value(42) {
                p.insert(spec.name.to_string(), v);
            }
        }
        p.insert("k".to_string(), Value::Int(8));
        p.insert("lr".to_string(), Value::Float(1e-3));
        p.insert("l1".to_string(), Value::Float(1e-3));
        p.insert("n_latents".to_string(), Value::Int(16));
        p.insert("epochs".to_string(), Value::Int(7));
        let c = config_from_params(&p).unwrap();
        // The values arrive in their fields, renamed ones (`l1`) included.
        assert_eq!(
            (c.k, c.lr, c.sparsity_weight, c.n_latents, c.epochs),
            (Some(8), Some(1e-3), Some(1e-3), Some(16), 7)
        );
        // A name the trainer does not know is refused.
        p.insert("bogus".to_string(), Value::Int(1));
        assert!(config_from_params(&p).is_err());
    }
}
