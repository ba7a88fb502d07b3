//! Reading the reference code's SAE checkpoints (docs/reference.md §4.9): a `torch.save` zip
//! archive whose pickle holds `{"model": state dict, "mean_center": tensor [d],
//! "scaling_factor": float, "target_norm": NumPy float64}`. Tensors come through candle's
//! pickle reader; the two scalars are read from the same pickle with candle's pickle machine.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::pickle::{self, Object};
use candle_core::{DType, Device, Tensor};

use super::reference_name::ReferenceName;
use crate::sae::config::{Arch, BatchTopkInference, TrainConfig};
use crate::sae::model::{level_weights, nesting_list, HostTensor, ModelMeta};
use crate::sae::Sae;

/// The contents of a reference checkpoint, on the host.
pub struct ReferenceCheckpoint {
    /// The state dict (`pre_bias`, `encoder`, `latent_bias`, `decoder`, …).
    pub state: HashMap<String, Tensor>,
    pub mean_center: Vec<f32>,
    pub scaling_factor: f64,
    pub target_norm: f64,
}

/// Reads `path` (a PyTorch zip checkpoint written by the reference training script).
pub fn read(path: &Path) -> Result<ReferenceCheckpoint> {
    let top = top_level_object(path)?;
    let Object::Dict(entries) = top else {
        bail!("{}: the checkpoint is not a dictionary, so it was not written by the reference training script", path.display());
    };
    let scalar = |key: &str| -> Result<f64> {
        let value = entries
            .iter()
            .find(|(k, _)| *k == Object::Unicode(key.into()))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow!("{}: the checkpoint has no `{key}` entry", path.display()))?;
        number(value).with_context(|| format!("{}: entry `{key}`", path.display()))
    };
    let scaling_factor = scalar("scaling_factor")?;
    let target_norm = scalar("target_norm")?;
    let state: HashMap<String, Tensor> = pickle::read_all_with_key(path, Some("model"))
        .map_err(|e| {
            anyhow!(
                "{}: cannot read the `model` state dict: {e}",
                path.display()
            )
        })?
        .into_iter()
        .collect();
    let top_tensors = pickle::read_all(path)
        .map_err(|e| anyhow!("{}: cannot read its tensors: {e}", path.display()))?;
    let mean = top_tensors
        .into_iter()
        .find(|(k, _)| k == "mean_center")
        .map(|(_, t)| t)
        .ok_or_else(|| {
            anyhow!(
                "{}: the checkpoint has no `mean_center` tensor",
                path.display()
            )
        })?;
    let mean_center = mean.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(ReferenceCheckpoint {
        state,
        mean_center,
        scaling_factor,
        target_norm,
    })
}

/// The unpickled top-level object of the archive's `data.pkl`.
fn top_level_object(path: &Path) -> Result<Object> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        anyhow!("{} is not a PyTorch zip checkpoint ({e}); checkpoints in the legacy (pre-1.6) format must be re-saved with a recent PyTorch first", path.display())
    })?;
    let names = zip
        .file_names()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: unreadable archive: {e}", path.display()))?;
    let name = names
        .iter()
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.to_string())
        .ok_or_else(|| anyhow!("{}: no data.pkl in the archive", path.display()))?;
    let mut bytes = Vec::new();
    zip.by_name(&name)?.read_to_end(&mut bytes)?;
    let mut stack = pickle::Stack::empty();
    stack
        .read_loop(&mut BufReader::new(bytes.as_slice()))
        .map_err(|e| anyhow!("{}: cannot unpickle {name}: {e}", path.display()))?;
    stack
        .finalize()
        .map_err(|e| anyhow!("{}: cannot unpickle {name}: {e}", path.display()))
}

/// A Python float or int, or a pickled NumPy scalar of a float type.
fn number(value: Object) -> Result<f64> {
    match value {
        Object::Float(f) => Ok(f),
        Object::Int(i) => Ok(i as f64),
        Object::Long(i) => Ok(i as f64),
        Object::Reduce { callable, args } => numpy_scalar(*callable, *args),
        other => bail!("expected a number, found {other:?}"),
    }
}

/// NumPy pickles a scalar as `numpy.(_)core.multiarray.scalar(dtype, raw bytes)`; under pickle
/// protocol 2 the bytes arrive as `_codecs.encode(latin-1 text, "latin1")`.
fn numpy_scalar(callable: Object, args: Object) -> Result<f64> {
    let (module, class) = callable
        .class()
        .map_err(|o| anyhow!("expected a NumPy scalar, found {o:?}"))?;
    if !module.ends_with("core.multiarray") || class != "scalar" {
        bail!("expected a NumPy scalar, found {module}.{class}");
    }
    let mut args = args
        .tuple()
        .map_err(|o| anyhow!("unexpected NumPy scalar arguments {o:?}"))?;
    if args.len() != 2 {
        bail!("unexpected NumPy scalar arguments {args:?}");
    }
    let raw = latin1_bytes(args.remove(1))?;
    let dtype = numpy_dtype_code(args.remove(0))?;
    match (dtype.as_str(), raw.len()) {
        ("f8", 8) => Ok(f64::from_le_bytes(raw.try_into().expect("8 bytes"))),
        ("f4", 4) => Ok(f32::from_le_bytes(raw.try_into().expect("4 bytes")) as f64),
        _ => bail!(
            "unsupported NumPy scalar of type `{dtype}` ({} bytes)",
            raw.len()
        ),
    }
}

fn latin1_bytes(obj: Object) -> Result<Vec<u8>> {
    let (callable, args) = obj
        .reduce()
        .map_err(|o| anyhow!("expected encoded bytes, found {o:?}"))?;
    let mut args = args
        .tuple()
        .map_err(|o| anyhow!("expected encoded bytes, found {o:?}"))?;
    let is_encode = matches!(&callable, Object::Class { module_name, class_name } if module_name == "_codecs" && class_name == "encode");
    if !is_encode || args.len() != 2 || args[1] != Object::Unicode("latin1".into()) {
        bail!("expected latin-1 encoded bytes, found {callable:?}");
    }
    let text = args
        .remove(0)
        .unicode()
        .map_err(|o| anyhow!("expected text, found {o:?}"))?;
    text.chars()
        .map(|c| u8::try_from(c as u32).map_err(|_| anyhow!("non-latin-1 character in bytes")))
        .collect()
}

/// The type code (`f8`, `f4`, …) of a pickled `numpy.dtype`; only little-endian (or
/// byte-order-free) types are accepted since the bytes are decoded as little-endian.
fn numpy_dtype_code(obj: Object) -> Result<String> {
    let (constructor, state) = match obj {
        Object::Build { callable, args } => (*callable, Some(*args)),
        other => (other, None),
    };
    let (_, args) = constructor
        .reduce()
        .map_err(|o| anyhow!("expected a NumPy dtype, found {o:?}"))?;
    let code = args
        .tuple()
        .ok()
        .and_then(|mut a| (!a.is_empty()).then(|| a.remove(0)))
        .and_then(|c| c.unicode().ok())
        .ok_or_else(|| anyhow!("expected a NumPy dtype code"))?;
    if let Some(Object::Tuple(fields)) = state {
        if fields.get(1) == Some(&Object::Unicode(">".into())) {
            bail!("big-endian NumPy scalars are not supported");
        }
    }
    Ok(code)
}

/// Builds msae's model from a reference checkpoint and what its file name says.
pub fn to_sae(
    ck: &ReferenceCheckpoint,
    name: &ReferenceName,
    path: &Path,
    device: &Device,
) -> Result<Sae> {
    let (n, d) = (name.n, name.d);
    if name.tied {
        // The reference's tied training crashes (docs/reference.md §4.6), so no such
        // checkpoint exists to test against; refuse rather than guess.
        bail!(
            "{}: tied checkpoints (tied = True) are not supported",
            path.display()
        );
    }
    if name.normalize {
        bail!("{}: the checkpoint was trained with per-sample input normalisation (normalize = True), which msae does not implement", path.display());
    }
    let tensor = |key: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = ck
            .state
            .get(key)
            .ok_or_else(|| anyhow!("{}: the state dict has no `{key}`", path.display()))?;
        if t.dims() != shape {
            bail!(
                "{}: `{key}` has shape {:?} but the file name says n = {n}, d = {d}, so {shape:?} was expected",
                path.display(),
                t.dims()
            );
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let encoder = tensor("encoder", &[d, n])?;
    let decoder = tensor("decoder", &[n, d])?;
    if ck.mean_center.len() != d {
        bail!(
            "{}: `mean_center` has {} entries, expected d = {d}",
            path.display(),
            ck.mean_center.len()
        );
    }
    if !ck.scaling_factor.is_finite() || ck.scaling_factor <= 0.0 {
        bail!(
            "{}: the scaling factor {} is not a positive number",
            path.display(),
            ck.scaling_factor
        );
    }
    let config = config_of(name);
    config
        .validate(d)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut tensors = HashMap::new();
    tensors.insert(
        "pre_bias".into(),
        HostTensor::F32(tensor("pre_bias", &[d])?, vec![d]),
    );
    tensors.insert("encoder".into(), HostTensor::F32(encoder, vec![d, n]));
    tensors.insert(
        "latent_bias".into(),
        HostTensor::F32(tensor("latent_bias", &[n])?, vec![n]),
    );
    tensors.insert("decoder".into(), HostTensor::F32(decoder, vec![n, d]));
    tensors.insert(
        "mean_center".into(),
        HostTensor::F32(ck.mean_center.clone(), vec![d]),
    );
    if name.arch == Arch::Jumprelu {
        tensors.insert(
            "log_threshold".into(),
            HostTensor::F32(tensor("activation.log_threshold", &[n])?, vec![n]),
        );
    }
    if let Some(freq) = ck.state.get("latents_activation_frequency") {
        if freq.dims() == [n] {
            let counts = freq.to_dtype(DType::I64)?.to_vec1::<i64>()?;
            tensors.insert(
                "latents_activation_frequency".into(),
                HostTensor::I64(counts, vec![n]),
            );
        }
    }
    let (levels, weights) = if name.arch == Arch::Msae {
        let levels = nesting_list(config.nesting_start, n);
        let w = crate::sae::model::loss::normalised_weights(&level_weights(
            config.msae_weighting,
            levels.len(),
        ));
        (levels, w)
    } else {
        (vec![], vec![1.0])
    };
    let meta = ModelMeta {
        format: crate::sae::model::MODEL_FORMAT.into(),
        config,
        d,
        n,
        scale: ck.scaling_factor as f32,
        target_norm: ck.target_norm as f32,
        num_updates: 0,
        batchtopk_threshold: None,
        levels,
        level_weights: weights,
    };
    Sae::from_parts(meta, &tensors, path, device).map_err(|e| anyhow!("{e}"))
}

/// The configuration the reference trained this architecture with, as far as the name tells.
fn config_of(name: &ReferenceName) -> TrainConfig {
    let mut c = TrainConfig {
        arch: name.arch,
        n_latents: Some(name.n),
        topk_variant: name.variant,
        sparsity_weight: name.l1,
        soft_cap: name.soft_cap,
        // The reference has no inference threshold: BatchTopK is batch-level at evaluation.
        batchtopk_inference: BatchTopkInference::Batch,
        ..TrainConfig::default()
    };
    match name.arch {
        Arch::Msae => {
            c.nesting_start = name.k.unwrap_or(c.nesting_start);
            c.msae_weighting = name.weighting.unwrap_or_default();
        }
        _ => c.k = name.k,
    }
    c
}
