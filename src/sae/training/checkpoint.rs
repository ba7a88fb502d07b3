//! Atomic training checkpoints: one safetensors file holding the weights, the Adam moments and
//! the activation counters, with the loop position, the Adam step, the BatchTopK threshold and
//! the log so far in its JSON metadata. Written to a temporary file, fsynced and renamed, so a
//! crash leaves either the previous or the new checkpoint.
//!
//! Every value is stored exactly (f32 tensors as raw bytes, f64 scalars through JSON, which
//! round-trips them exactly), so resuming reproduces an uninterrupted run bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::sae::model::{
    fmt_err, read_safetensors, serialize_host, write_atomic, HostTensor, ModelMeta, Sae,
};
use crate::sae::optim::Adam;
use crate::sae::training::records::{LoopState, TrainLog};
use crate::sae::{Result, SaeError};

const FILE: &str = "checkpoint.safetensors";
const FORMAT: &str = "msae-train-checkpoint-v1";

/// Path of the checkpoint file inside `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

#[derive(Serialize, Deserialize)]
struct State {
    format: String,
    model: ModelMeta,
    adam_step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    loop_state: LoopState,
    log: TrainLog,
    n_rows: usize,
}

/// A restored checkpoint.
pub(crate) struct Checkpoint {
    pub model: Sae,
    pub adam: Adam,
    pub state: LoopState,
    pub log: TrainLog,
    pub n_rows: usize,
}

/// Write a checkpoint into `dir` (created if needed).
pub(crate) fn save(
    dir: &Path,
    model: &Sae,
    adam: &Adam,
    state: &LoopState,
    log: &TrainLog,
    n_rows: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| SaeError::Io {
        path: dir.into(),
        source: e,
    })?;
    let path = checkpoint_path(dir);
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for (i, (name, t)) in model
        .param_names()
        .into_iter()
        .zip(model.params())
        .enumerate()
    {
        tensors.push((name.to_string(), HostTensor::from_tensor(t)?));
        tensors.push((
            format!("adam.m.{name}"),
            HostTensor::from_tensor(&adam.m[i])?,
        ));
        tensors.push((
            format!("adam.v.{name}"),
            HostTensor::from_tensor(&adam.v[i])?,
        ));
    }
    tensors.push((
        "mean_center".into(),
        HostTensor::F32(model.standardization.mean.clone(), vec![model.d]),
    ));
    tensors.push((
        "latents_activation_frequency".into(),
        HostTensor::I64(
            model.stats.counts.iter().map(|&c| c as i64).collect(),
            vec![model.n],
        ),
    ));
    let st = State {
        format: FORMAT.into(),
        model: ModelMeta {
            format: "msae-sae-v1".into(),
            config: model.config.clone(),
            d: model.d,
            n: model.n,
            scale: model.standardization.scale,
            target_norm: model.target_norm,
            num_updates: model.stats.num_updates,
            batchtopk_threshold: model.batchtopk_threshold,
            levels: model.levels.clone(),
            level_weights: model.level_weights.clone(),
        },
        adam_step: adam.step,
        beta1: adam.beta1,
        beta2: adam.beta2,
        eps: adam.eps,
        weight_decay: adam.weight_decay,
        loop_state: state.clone(),
        log: log.clone(),
        n_rows,
    };
    let json = serde_json::to_string(&st).map_err(|e| fmt_err(&path, &e.to_string()))?;
    let mut info = HashMap::new();
    info.insert("msae".to_string(), st.model_json()?);
    info.insert("checkpoint".to_string(), json);
    let bytes = serialize_host(&tensors, Some(info), &path)?;
    write_atomic(&path, &bytes)
}

impl State {
    fn model_json(&self) -> Result<String> {
        serde_json::to_string(&self.model).map_err(|e| SaeError::Data(e.to_string()))
    }
}

/// Read the checkpoint in `dir`, if there is one.
pub(crate) fn load(dir: &Path, device: &Device) -> Result<Option<Checkpoint>> {
    let path = checkpoint_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SaeError::Io { path, source: e }),
    };
    let (meta, tensors) = read_safetensors(&bytes, &path)?;
    let st: State = meta
        .get("checkpoint")
        .ok_or_else(|| fmt_err(&path, "missing checkpoint metadata"))
        .and_then(|s| serde_json::from_str(s).map_err(|e| fmt_err(&path, &e.to_string())))?;
    if st.format != FORMAT {
        return Err(fmt_err(&path, &format!("unknown format {}", st.format)));
    }
    let model = Sae::from_parts(st.model, &tensors, &path, device)?;
    let mut adam = Adam::new(&model.params(), st.beta1, st.beta2, st.eps, st.weight_decay)?;
    adam.step = st.adam_step;
    for (i, (name, p)) in model
        .param_names()
        .into_iter()
        .zip(model.params())
        .enumerate()
    {
        let shape = p.dims().to_vec();
        for (slot, key) in [(&mut adam.m[i], "m"), (&mut adam.v[i], "v")] {
            let k = format!("adam.{key}.{name}");
            *slot = tensors
                .get(&k)
                .ok_or_else(|| fmt_err(&path, &format!("missing tensor {k}")))?
                .to_tensor(&shape, device)
                .map_err(|_| fmt_err(&path, &format!("tensor {k} has the wrong shape")))?;
        }
    }
    Ok(Some(Checkpoint {
        model,
        adam,
        state: st.loop_state,
        log: st.log,
        n_rows: st.n_rows,
    }))
}
