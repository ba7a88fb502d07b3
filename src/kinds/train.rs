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
use crate::kinds::sae_common::{
    device as device_of, standardization_of, stats_options, MatrixRows,
};
use crate::kinds::snapshots;
use crate::sae::training::records::TrainOptions;
use crate::sae::training::train_loop::{train_group, Member};
use crate::sae::TrainConfig;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{InputArtifact, Metrics, Step, StepContext};

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
    ParamSpec { name: "latent_bias_init", ty: ParamType::Float, default: Default::Float(0.0), doc: "initial latent (encoder) bias, 0 in the reference; a negative value starts relu and jumprelu codes sparser", ..ParamSpec::BASE },
    ParamSpec { name: "soft_cap", ty: ParamType::Float, default: Default::Float(0.0), min: Some(0.0), doc: "c > 0 applies c·tanh(z/c) to the code", ..ParamSpec::BASE },
    ParamSpec { name: "loss", ty: ParamType::Choice(&["nmse", "mse", "cosine"]), default: Default::Str("nmse"), gridable: true, doc: "reconstruction loss", ..ParamSpec::BASE },
    ParamSpec { name: "seed", ty: ParamType::Int, default: Default::ExperimentSeed, gridable: true, min: Some(0.0), doc: "initialisation and shuffling seed (defaults to the experiment's seed)", ..ParamSpec::BASE },
    ParamSpec { name: "check_dead", ty: ParamType::Int, default: Default::Int(1000), min: Some(1.0), doc: "window in steps of the dead-latent count", ..ParamSpec::BASE },
    ParamSpec { name: "batchtopk_inference", ty: ParamType::Choice(&["threshold", "batch"]), default: Default::Str("threshold"), doc: "BatchTopK outside training: a global threshold estimated in training, or the reference's batch-level top-k", ..ParamSpec::BASE },
    ParamSpec { name: "dead_threshold", ty: ParamType::Float, default: Default::Float(crate::metrics::DEAD_FREQUENCY_THRESHOLD), min: Some(0.0), doc: "activation frequency below which a latent counts as dead (reference 10^-5.5)", ..ParamSpec::BASE },
    ParamSpec { name: "batchtopk_threshold_momentum", ty: ParamType::Float, default: Default::Float(0.99), min: Some(0.0), max: Some(1.0), doc: "EMA momentum of the BatchTopK inference threshold", ..ParamSpec::BASE },
    ParamSpec { name: "jumprelu_theta0", ty: ParamType::Float, default: Default::Float(0.001), gridable: true, min: Some(0.0), doc: "JumpReLU initial threshold θ₀ in the units of the pre-activations with unit decoder rows: every latent holds θ₀ once the first renormalisation has run (fresh models' pre-activations spread about init_norm² = 0.01 for rows of norm √d)", ..ParamSpec::BASE },
    ParamSpec { name: "jumprelu_bandwidth", ty: ParamType::Float, default: Default::Float(0.001), gridable: true, min: Some(0.0), doc: "JumpReLU kernel bandwidth ε of the straight-through estimator (same units as θ)", ..ParamSpec::BASE },
    ParamSpec { name: "jumprelu_param", ty: ParamType::Choice(&["log", "direct"]), default: Default::Str("log"), gridable: true, doc: "what the optimiser trains for the JumpReLU thresholds: log θ (reference, JumpReLU authors' notebook, SAELens; θ moves by a factor ≈ e^lr per step) or θ itself (moves by ≈ lr per step; a θ below 0 acts as 0)", ..ParamSpec::BASE },
    ParamSpec { name: "aux_k_coef", ty: ParamType::Float, default: Default::Absent, gridable: true, min: Some(0.0), doc: "weight α of the TopK paper's auxiliary dead-latent loss (topk, batchtopk, msae; SAELens uses 1, the paper 1/32); absent or 0: off", ..ParamSpec::BASE },
    ParamSpec { name: "aux_k", ty: ParamType::Int, default: Default::Absent, gridable: true, min: Some(1.0), doc: "dead latents per row in the auxiliary loss, k_aux (default d/2, as SAELens)", ..ParamSpec::BASE },
    ParamSpec { name: "aux_dead_steps", ty: ParamType::Int, default: Default::Absent, gridable: true, min: Some(1.0), doc: "a latent is dead for the auxiliary loss after this many training steps without firing (default 1000, as SAELens)", ..ParamSpec::BASE },
    ParamSpec { name: "aux_k_values", ty: ParamType::Choice(&["raw", "activation"]), default: Default::Absent, gridable: true, doc: "values of the auxiliary code: raw pre-activations (default, as SAELens) or the topk_variant's activation (the TopK paper's code: ReLU); not activation for msae", ..ParamSpec::BASE },
    ParamSpec { name: "log_every", ty: ParamType::Int, default: Default::Int(100), min: Some(1.0), doc: "training steps per loss record in the log", ..ParamSpec::BASE },
    ParamSpec { name: "mean_center", ty: ParamType::Bool, default: Default::Bool(true), doc: "subtract the training mean", ..ParamSpec::BASE },
    ParamSpec { name: "target_norm", ty: ParamType::Float, default: Default::Absent, min: Some(0.0), doc: "target norm of the scale (default √d; 0 disables scaling)", ..ParamSpec::BASE },
    ParamSpec { name: "scale_rule", ty: ParamType::Choice(&["reference", "corrected"]), default: Default::Str("reference"), gridable: true, doc: "reference: s = target/mean‖x−μ‖²; corrected: s = target/sqrt(mean‖x−μ‖²)", ..ParamSpec::BASE },
    ParamSpec { name: "snapshots", ty: ParamType::Bool, default: Default::Bool(true), doc: "keep the weights after every epoch (for per-epoch validation)", ..ParamSpec::BASE },
    ParamSpec { name: "checkpoint_steps", ty: ParamType::Int, role: Role::Exec, default: Default::Int(500), min: Some(1.0), doc: "write a resumable checkpoint every this many steps", ..ParamSpec::BASE },
    ParamSpec { name: "checkpoint_seconds", ty: ParamType::Int, role: Role::Exec, default: Default::Int(120), min: Some(1.0), doc: "…or when this many seconds passed since the last one", ..ParamSpec::BASE },
];

/// The losses as `sae::model` computes them, for `msae kinds train` (and docs/step-kinds.md).
const LOSSES: &str = "\
losses on a batch of B standardised rows x_i of width d; P = (x − b_pre)·W_enc + b_lat, code
z = cap(act(P)) (cap(u) = c·tanh(u/c) with soft_cap = c > 0, else u), x̂ = z·W_dec + b_pre:
  loss = mse      rec = (1/(B·d))·Σ_i Σ_j (x̂_ij − x_ij)²  (a mean over all B·d entries)
  loss = nmse     rec = (1/B)·Σ_i ‖x̂_i − x_i‖² / ‖x_i − m‖²  (m = 0 with mean_center, else the
                  mean of the standardised training rows)
  loss = cosine   rec = (1/B)·Σ_i (1 − cos(x_i, x̂_i))²
  relu            total = rec + λ·(1/B)·Σ_i ‖z_i‖₁ / ‖x_i‖₂  (λ = l1, default 0.003)
  jumprelu        total = rec + λ·(1/B)·Σ_i Σ_j H(P_ij − θ⁺_j)  (λ = l1, default 0.001; the L0
                  penalty is λ times the mean number of latents firing per row), with
                  z_ij = P_ij·H(P_ij − θ⁺_j), θ⁺ = max(θ, 0); gradient to θ_j by the rectangle
                  kernel of width ε = jumprelu_bandwidth around θ_j (|P_ij − θ_j| < ε/2):
                  ∂/∂θ_j = −(θ⁺_j/ε)·Σ_i∈window ∂rec/∂z_ij − (λ/(ε·B))·|window|, times θ_j
                  with jumprelu_param = log (the parameter is log θ)
  topk, batchtopk total = rec (l1 is ignored)
  msae            total = Σ_l w_l·rec(x̂_l), x̂_l decoded from each row's top-k_l code (the topk
                  rule, topk_variant); k_1 = nesting_start, doubled while ≤ n, then n;
                  w = (1, …, 1) for uw, (L, L−1, …, 1) for rw, (1, 2, …, L) for rw_fixed,
                  divided by their sum
  aux_k_coef = α  total += α·min(|D|/k_aux, 1)·ℓ(ê, e) (topk, batchtopk, msae): D the latents
                  silent for more than aux_dead_steps steps, ê decoded (no b_pre) from each
                  row's min(k_aux, |D|) largest pre-activations in D (raw; with
                  aux_k_values = activation as topk_variant ranks and keeps them), e = x − x̂ held
                  constant (msae: its last level), ℓ the squared error normalised as rec's
                  (mse: Σ/(B·d); nmse and cosine: (1/B)·Σ_i ‖ê_i − e_i‖² / ‖x_i − m‖²)
carrying coefficients from other libraries: docs/differences.md";

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
    step_info!(kind: "train", version: 5, about: "train an SAE (relu, topk, batchtopk, jumprelu, msae) with the reference recipe");

    fn details(&self) -> &'static str {
        LOSSES
    }

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let mut results = run_together(std::slice::from_mut(ctx));
        results.remove(0)
    }

    fn fusion_key(
        &self,
        params: &BTreeMap<String, Value>,
        inputs: &BTreeMap<String, InputArtifact>,
    ) -> Option<String> {
        // What decides the batches and their standardisation; everything else may differ.
        let data = inputs.get("data")?;
        let mut key = serde_json::Map::new();
        key.insert("data".into(), data.hash.clone().into());
        for name in [
            "batch_size",
            "epochs",
            "seed",
            "mean_center",
            "target_norm",
            "scale_rule",
        ] {
            let v = params
                .get(name)
                .map(|v| serde_json::to_value(v).unwrap_or_default())
                .unwrap_or_default();
            key.insert(name.into(), v);
        }
        Some(serde_json::Value::Object(key).to_string())
    }

    fn run_group(&self, ctxs: &mut [StepContext]) -> Vec<Result<Metrics>> {
        run_together(ctxs)
    }
}

/// What a member's progress line does after every training step.
type StepCallback = Box<dyn FnMut(&crate::sae::training::records::TrainProgress)>;

/// One instance's share of a group training.
struct Prepared {
    config: TrainConfig,
    matrix: Matrix,
    standardization: crate::sae::Standardization,
    target_norm: f64,
    keep_snapshots: bool,
    steps_per_epoch: u64,
    bar: indicatif::ProgressBar,
    /// The epoch being trained, for the progress line.
    epoch: usize,
}

fn prepare(ctx: &StepContext) -> Result<Prepared> {
    let config = config_from_params(ctx.params)?;
    let input = ctx.input("data")?;
    let matrix = Matrix::open(&input.path)?;
    config.validate(matrix.cols()).map_err(|e| anyhow!("{e}"))?;
    let (standardization, target_norm) = standardization_of(&matrix, &stats_options(ctx)?)?;
    let steps_per_epoch = matrix.rows().div_ceil(config.batch_size) as u64;
    let total = steps_per_epoch * config.epochs as u64;
    std::fs::create_dir_all(&ctx.partial_dir)?;
    let keep_snapshots = ctx
        .params
        .get("snapshots")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let bar = ctx.progress.bar(total, &format!("train {}", ctx.instance));
    Ok(Prepared {
        config,
        matrix,
        standardization,
        target_norm,
        keep_snapshots,
        steps_per_epoch,
        bar,
        epoch: 0,
    })
}

fn options_for(ctx: &StepContext, p: &Prepared, epoch: usize) -> TrainOptions {
    TrainOptions {
        stop: Some(ctx.stop.flag().clone()),
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
        stop_after_steps: Some(p.steps_per_epoch * (epoch as u64 + 1)),
        ..TrainOptions::default()
    }
}

/// Trains the instances of `ctxs` in one pass over their shared data when they read the same
/// batches (else one after another), one epoch at a time through the trainer's
/// checkpoint/resume path, and writes each one's outputs. If the group fails, each member runs
/// again alone from its checkpoints, so that one model's failure (a diverging loss, say) stays
/// its own.
fn run_together(ctxs: &mut [StepContext]) -> Vec<Result<Metrics>> {
    let prepared: Vec<Result<Prepared>> = ctxs.iter().map(|c| prepare(c)).collect();
    let first_ok = prepared.iter().flatten().next();
    let shareable = ctxs.len() > 1
        && prepared.iter().all(|p| p.is_ok())
        && ctxs.windows(2).all(|w| {
            w[0].inputs.get("data").map(|a| &a.hash) == w[1].inputs.get("data").map(|a| &a.hash)
                && w[0].device == w[1].device
        })
        && first_ok.is_some_and(|f| {
            prepared.iter().flatten().all(|p| {
                p.standardization.mean == f.standardization.mean
                    && p.standardization.scale.to_bits() == f.standardization.scale.to_bits()
                    && (p.config.seed, p.config.batch_size, p.config.epochs)
                        == (f.config.seed, f.config.batch_size, f.config.epochs)
            })
        });
    if !shareable {
        // Alone, one after another.
        return ctxs
            .iter_mut()
            .zip(prepared)
            .map(|(ctx, p)| {
                p.and_then(|p| train_members(std::slice::from_mut(ctx), vec![p]).remove(0))
            })
            .collect();
    }
    let prepared: Vec<Prepared> = prepared.into_iter().map(|p| p.expect("checked")).collect();
    let results = train_members(ctxs, prepared);
    // A stop asked for by a signal is no failure to retry: the checkpoints hold the work.
    if results.iter().all(|r| r.is_ok()) || ctxs.iter().any(|c| c.stop.is_raised()) {
        return results;
    }
    // A failure in the group: every member again alone, from its checkpoints.
    ctxs.iter_mut()
        .map(|ctx| {
            let p = prepare(ctx)?;
            train_members(std::slice::from_mut(ctx), vec![p]).remove(0)
        })
        .collect()
}

/// The epoch loop of a group whose members read the same batches; one result per member.
fn train_members(ctxs: &mut [StepContext], mut prepared: Vec<Prepared>) -> Vec<Result<Metrics>> {
    let started = std::time::Instant::now();
    // Scratch buffers stay pooled across the epochs and are released when the step ends.
    let _pool = crate::sae::kernels::scratch::PoolLease::acquire();
    let epochs = prepared[0].config.epochs;
    let shared = &prepared[0];
    let (standardization, device) = (shared.standardization.clone(), ctxs[0].device);
    let dev = match device_of(device) {
        Ok(d) => d,
        Err(e) => return ctxs.iter().map(|_| Err(anyhow!("{e:#}"))).collect(),
    };
    let source = match crate::data::reader::RowReader::new(&prepared[0].matrix) {
        Ok(r) => MatrixRows(r),
        Err(e) => return ctxs.iter().map(|_| Err(anyhow!("{e:#}"))).collect(),
    };
    let mut outcomes: Vec<Option<crate::sae::TrainOutcome>> = ctxs.iter().map(|_| None).collect();
    for epoch in 0..epochs {
        // Members whose snapshot of this epoch survived an interruption skip it.
        let todo: Vec<usize> = (0..ctxs.len())
            .filter(|&i| {
                let snap = snapshots::epoch_file(&ctxs[i].partial_dir, epoch);
                !(prepared[i].keep_snapshots && snap.exists() && epoch + 1 < epochs)
            })
            .collect();
        if todo.is_empty() {
            continue;
        }
        for &i in &todo {
            let p = &mut prepared[i];
            p.epoch = epoch;
            p.bar.set_message(format!(
                "train {} epoch {}/{}",
                ctxs[i].instance,
                epoch + 1,
                epochs
            ));
        }
        let options: Vec<TrainOptions> = todo
            .iter()
            .map(|&i| options_for(&ctxs[i], &prepared[i], epoch))
            .collect();
        let bars: Vec<indicatif::ProgressBar> =
            todo.iter().map(|&i| prepared[i].bar.clone()).collect();
        let mut callbacks: Vec<StepCallback> = bars
            .into_iter()
            .map(|bar| {
                Box::new(move |p: &crate::sae::training::records::TrainProgress| {
                    bar.set_position(p.step)
                }) as _
            })
            .collect();
        let members = todo
            .iter()
            .zip(&options)
            .zip(callbacks.iter_mut())
            .map(|((&i, options), progress)| Member {
                config: &prepared[i].config,
                options,
                validation: &[],
                progress: progress.as_mut(),
            })
            .collect();
        let trained = match train_group(&source, &standardization, &dev, members) {
            Ok(t) => t,
            Err(e) => {
                return ctxs
                    .iter()
                    .map(|c| Err(anyhow!("training {}: {e}", c.instance)))
                    .collect()
            }
        };
        for (&i, mut result) in todo.iter().zip(trained) {
            result.model.target_norm = prepared[i].target_norm as f32;
            if prepared[i].keep_snapshots {
                let snap = snapshots::epoch_file(&ctxs[i].partial_dir, epoch);
                if let Err(e) = result.model.save(&snap) {
                    return ctxs.iter().map(|_| Err(anyhow!("{e}"))).collect();
                }
            }
            outcomes[i] = Some(result);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    ctxs.iter()
        .zip(prepared)
        .zip(outcomes)
        .map(|((ctx, p), outcome)| {
            p.bar.finish_and_clear();
            let outcome = outcome.ok_or_else(|| anyhow!("no epoch was trained"))?;
            finish(ctx, &p, outcome, seconds)
        })
        .collect()
}

/// Writes one trained instance's outputs and returns its metrics.
fn finish(
    ctx: &StepContext,
    p: &Prepared,
    outcome: crate::sae::TrainOutcome,
    seconds: f64,
) -> Result<Metrics> {
    outcome
        .model
        .save(&ctx.output_path("model"))
        .map_err(|e| anyhow!("{e}"))?;
    std::fs::write(
        ctx.output_path("log"),
        serde_json::to_vec_pretty(&outcome.log)?,
    )?;
    if p.keep_snapshots {
        snapshots::combine(
            &ctx.partial_dir,
            p.config.epochs,
            &ctx.output_path("snapshots"),
        )?;
    }
    let mut metrics = Metrics::new();
    metrics.insert("n_latents".into(), outcome.model.n.into());
    metrics.insert("steps".into(), outcome.steps.into());
    // The last loss record; a run shorter than `log_every` has none, and its means over all
    // its steps stand in.
    if let Some(last) = outcome.log.steps.last().or(outcome.tail.as_ref()) {
        metrics.insert("final_loss".into(), last.loss.into());
        metrics.insert("final_active".into(), last.active.into());
    }
    // Likewise the last dead-latent window, or a run shorter than `check_dead` as one window.
    let dead = match outcome.log.dead.last() {
        Some(d) => d.dead,
        None => crate::sae::model::count_dead(
            &outcome.model.stats.frequencies(),
            p.config.dead_threshold,
        ),
    };
    metrics.insert("dead".into(), dead.into());
    // The messages are in the log (and were printed when they were found).
    if !outcome.log.warnings.is_empty() {
        metrics.insert("warnings".into(), outcome.log.warnings.len().into());
    }
    metrics.insert("train_seconds".into(), seconds.into());
    Ok(metrics)
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
    fn the_step_defaults_are_the_trainer_defaults() {
        // The defaults are written twice, as TOML parameters and as `TrainConfig::default()`
        // (the library's own users need the second): every one must agree, renamed knobs too.
        let p: BTreeMap<String, Value> = PARAMS
            .iter()
            .filter_map(|spec| spec.default_value(42).map(|v| (spec.name.to_string(), v)))
            .collect();
        let from_step = serde_json::to_value(config_from_params(&p).unwrap()).unwrap();
        let library = serde_json::to_value(crate::sae::TrainConfig::default()).unwrap();
        assert_eq!(from_step, library);
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
