//! The training loop's types: its options, the progress it reports, what it logs, what it
//! returns, and its own position (saved in checkpoints).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::sae::model::Sae;
use crate::sae::model::Standardization;
use crate::sae::training::source::RowSource;

/// A validation matrix with its own standardisation.
pub struct ValidationSet<'a> {
    pub name: String,
    pub source: &'a dyn RowSource,
    pub standardization: Standardization,
}

/// Checkpointing and early-stop options.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Directory for `checkpoint.safetensors`; no checkpoints when None.
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint every this many steps.
    pub checkpoint_every_steps: Option<u64>,
    /// Checkpoint when this many seconds have passed since the last one.
    pub checkpoint_every_secs: Option<u64>,
    /// Continue from the checkpoint in `checkpoint_dir` when one exists.
    pub resume: bool,
    /// Checkpoint and return (unfinished) once this many steps are done in total.
    pub stop_after_steps: Option<u64>,
    /// Use the straightforward dense backward pass even where the sparse CPU fast path
    /// applies (for comparisons; results agree up to floating-point summation order).
    pub dense_backward: bool,
    /// Raised from outside (a signal handler: a scheduler's warning before a time limit or
    /// pre-emption) to make the training write a checkpoint after its current step and return
    /// [`crate::sae::SaeError::Stopped`]; resuming from that checkpoint continues the run exactly.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Progress report passed to the caller's callback after every step.
#[derive(Debug, Clone, Serialize)]
pub struct TrainProgress {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: usize,
    pub loss: f32,
}

/// Mean losses over one logging interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: usize,
    pub lr: f64,
    pub loss: f64,
    pub rec: f64,
    pub sparsity: f64,
    /// Mean number of active latents per sample in the (first-level) sparse code.
    pub active: f64,
    /// Mean auxiliary dead-latent loss as added to `loss`; present when that loss is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux: Option<f64>,
}

/// Dead-latent count at the end of a `check_dead` window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadRecord {
    pub step: u64,
    pub dead: usize,
}

/// Validation results (unweighted means over batches, as in the reference).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValidationRecord {
    pub name: String,
    /// Reference validation loss: on the dense outputs.
    pub loss_dense: f64,
    pub rec_sparse: f64,
    pub rec_dense: f64,
    pub active_sparse: f64,
    pub active_dense: f64,
    pub batches: usize,
}

/// End-of-epoch summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub last_loss: f64,
    pub last_dead: Option<usize>,
    pub validation: Vec<ValidationRecord>,
}

/// Everything logged during training.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct TrainLog {
    pub steps: Vec<StepRecord>,
    pub dead: Vec<DeadRecord>,
    pub epochs: Vec<EpochRecord>,
    /// What `health` found wrong (a code dead from the start, dead or dense at the end);
    /// absent from the file when nothing was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::sae::training::health::TrainWarning>,
}

/// Result of [`crate::sae::training::train_loop::train`].
#[derive(Debug)]
pub struct TrainOutcome {
    pub model: Sae,
    pub log: TrainLog,
    /// False when training stopped early (`stop_after_steps`).
    pub finished: bool,
    pub steps: u64,
    /// Means over the steps after the last loss record (a run whose step count is not a
    /// multiple of `log_every`); None when the run ends on a record. Not part of the log.
    pub tail: Option<StepRecord>,
}

/// Position of the loop and the running sums of the current logging interval.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub(crate) struct LoopState {
    pub step: u64,
    pub epoch: usize,
    /// Next batch index within the epoch's permutation.
    pub batch: usize,
    pub acc_loss: f64,
    pub acc_rec: f64,
    pub acc_sparsity: f64,
    pub acc_active: f64,
    pub acc_count: u64,
    pub last_loss: f64,
    /// Sum of the auxiliary loss over the interval (the fields of the auxiliary dead-latent
    /// loss are left out of checkpoints while it is off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub acc_aux: f64,
    /// Per latent, the training steps since it last fired (SAELens's
    /// `n_forward_passes_since_fired`); kept, and checkpointed, only while the auxiliary loss
    /// is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub since_fired: Vec<u64>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}
