//! Reading the SAELens layout: a folder with `cfg.json` and `sae_weights.safetensors`, as SAELens
//! 6 writes it (and as [`super::saelens`] exports it), into an msae model.
//!
//! SAELens' inference forward pass on a raw row `x` (SAELens 6, `SAE.load_from_disk`):
//! `x_n = norm_in(x)`, `h = (x_n − b_dec·[apply_b_dec_to_input])·W_enc + b_enc`, then per
//! architecture `standard`: `z = ReLU(h)`; `topk`: the k largest entries of `h` (scaled by the
//! decoder row norms when `rescale_acts_by_decoder_norm`), each through a ReLU;
//! `jumprelu`: `z = ReLU(h)·1[h > threshold]`; and `x̂ = norm_out(z·W_dec + b_dec)`.
//! `batchtopk` and `matryoshka_batchtopk` are SAELens training layouts: their inference model is
//! the JumpReLU SAELens saves for them, with the trained `topk_threshold` for every latent and
//! the decoder norms folded in (`rescale_acts_by_decoder_norm`, true by default for them).
//!
//! msae models compute `P = (x' − b_pre)·W_enc + b_lat` and `x̂' = Z·W_dec + b_pre` on
//! `x' = (x − μ)·s`, and map `x̂'` back as `x̂'/s + μ`. Every setting above maps onto that exactly:
//! `b_pre = b_dec`; without `apply_b_dec_to_input`, `b_lat = b_enc + b_dec·W_enc`; a decoder-norm
//! rescale folds into `W_enc`, `b_enc` and `W_dec` as SAELens folds it; `standard` is msae's ReLU,
//! `topk` its TopK (TopKReLU), `jumprelu` its JumpReLU with log-thresholds, and the BatchTopK
//! layouts its BatchTopK with a global inference threshold. `expected_average_only_in` scales
//! rows by one factor, which becomes the standardisation's s; SAELens' loader applies nothing
//! when no factor is known, and neither does msae. `constant_norm_rescale` and `layer_norm`
//! rescale each row by its own norm or spread, which a fixed standardisation cannot express:
//! such SAEs are refused.
//!
//! A folder msae exported carries an `msae` section in `cfg.json` (μ, s, the training
//! configuration, the Matryoshka levels); when its SAELens fields still say what msae would write
//! for it, the model comes back as it was, the fold undone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::Value as Json;

use super::saelens::target;
use crate::sae::config::{Arch, BatchTopkInference, TrainConfig};
use crate::sae::model::{HostTensor, ModelMeta};
use crate::sae::Sae;

/// The `architecture` values msae reads.
pub const ARCHITECTURES: &[&str] = &[
    "standard",
    "topk",
    "jumprelu",
    "batchtopk",
    "matryoshka_batchtopk",
];

/// The `normalize_activations` values msae reads.
pub const NORMALISATIONS: &[&str] = &["none", "expected_average_only_in"];

/// The files of one SAELens folder.
pub struct Folder {
    pub cfg: PathBuf,
    pub weights: PathBuf,
    /// `activation_scaler.json` of a training checkpoint: the `expected_average_only_in` factor
    /// SAELens folds into the weights when training ends.
    pub scaler: Option<PathBuf>,
}

impl Folder {
    /// The files of a local folder; an error that says what a SAELens folder holds otherwise.
    pub fn local(dir: &Path) -> Result<Folder> {
        if !dir.is_dir() {
            bail!("{} is not a folder; a SAELens SAE is a folder holding cfg.json and sae_weights.safetensors", dir.display());
        }
        let need = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if !p.is_file() {
                bail!(
                    "{} has no {name}; a SAELens SAE is a folder holding cfg.json and sae_weights.safetensors",
                    dir.display()
                );
            }
            Ok(p)
        };
        Ok(Folder {
            cfg: need(CFG)?,
            weights: need(WEIGHTS)?,
            scaler: Some(dir.join(SCALER)).filter(|p| p.is_file()),
        })
    }
}

pub const CFG: &str = "cfg.json";
pub const WEIGHTS: &str = "sae_weights.safetensors";
pub const SCALER: &str = "activation_scaler.json";

/// An imported model and what the folder said, for the step's metrics.
pub struct Imported {
    pub sae: Sae,
    /// SAELens facts worth showing (architecture, k, normalisation, provenance, …).
    pub info: Vec<(String, Json)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Architecture {
    Standard,
    Topk,
    Jumprelu,
    /// `batchtopk` and `matryoshka_batchtopk` (their inference model is the same).
    Batchtopk,
}

/// The `cfg.json` fields that decide the forward pass.
struct Cfg {
    name: String,
    arch: Architecture,
    d_in: usize,
    d_sae: usize,
    k: Option<f64>,
    rescale: bool,
    apply_b_dec: bool,
    normalize: String,
    widths: Vec<usize>,
    raw: Json,
}

fn parse_cfg(text: &str, path: &Path) -> Result<Cfg> {
    let raw: Json = serde_json::from_str(text)
        .with_context(|| format!("{} is not a JSON document", path.display()))?;
    if !raw.is_object() {
        bail!("{} is not a JSON object", path.display());
    }
    let supported = ARCHITECTURES.join(", ");
    let name = match raw.get("architecture") {
        Some(Json::String(s)) => s.clone(),
        Some(other) => bail!("{}: `architecture` is {other}, not a name; supported: {supported}", path.display()),
        None => bail!(
            "{} has no `architecture`; msae reads the SAELens architectures {supported}. A config written before SAELens 6 without the field describes a `standard` SAE (or `topk` when its activation_fn is topk): add the field",
            path.display()
        ),
    };
    let arch = match name.as_str() {
        "standard" => Architecture::Standard,
        "topk" => Architecture::Topk,
        "jumprelu" => Architecture::Jumprelu,
        "batchtopk" | "matryoshka_batchtopk" => Architecture::Batchtopk,
        other => bail!(
            "{}: SAELens architecture `{other}` is not supported; msae reads {supported}",
            path.display()
        ),
    };
    let size = |key: &str| -> Result<usize> {
        raw.get(key)
            .and_then(Json::as_u64)
            .filter(|v| *v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| anyhow!("{}: `{key}` must be a positive integer", path.display()))
    };
    let flag = |key: &str, default: bool| -> Result<bool> {
        match raw.get(key) {
            None | Some(Json::Null) => Ok(default),
            Some(Json::Bool(b)) => Ok(*b),
            Some(other) => bail!("{}: `{key}` is {other}, not true or false", path.display()),
        }
    };
    // Before SAELens 6 the field was a boolean: true meant `expected_average_only_in`.
    let normalize = match raw.get("normalize_activations") {
        None | Some(Json::Null) | Some(Json::Bool(false)) => "none".to_string(),
        Some(Json::Bool(true)) => "expected_average_only_in".to_string(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => bail!("{}: `normalize_activations` is {other}", path.display()),
    };
    match normalize.as_str() {
        "none" | "expected_average_only_in" => {}
        "constant_norm_rescale" | "layer_norm" => bail!(
            "{}: normalize_activations = \"{normalize}\" rescales each row by its own {}, which msae's standardisation (one mean and one scale for every row) cannot express; supported: {}",
            path.display(),
            if normalize == "layer_norm" { "mean and spread" } else { "norm" },
            NORMALISATIONS.join(", ")
        ),
        other => bail!(
            "{}: unknown normalize_activations = \"{other}\"; supported: {}",
            path.display(),
            NORMALISATIONS.join(", ")
        ),
    }
    match raw.get("reshape_activations").and_then(Json::as_str) {
        // `hook_z` flattens attention heads; msae's rows are flat already.
        None | Some("none") | Some("hook_z") => {}
        Some(other) => bail!(
            "{}: unknown reshape_activations = \"{other}\"",
            path.display()
        ),
    }
    let k = match raw.get("k") {
        None | Some(Json::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|k| k.is_finite() && *k > 0.0)
                .ok_or_else(|| anyhow!("{}: `k` is {v}, not a positive number", path.display()))?,
        ),
    };
    let widths = match raw.get("matryoshka_widths") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .map(|w| w.as_u64().map(|w| w as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("{}: `matryoshka_widths` must list integers", path.display()))?,
        Some(other) => bail!("{}: `matryoshka_widths` is {other}", path.display()),
    };
    // SAELens' defaults: the inference TopK config does not rescale, the training configs of
    // the BatchTopK family do.
    let rescale = flag(
        "rescale_acts_by_decoder_norm",
        arch == Architecture::Batchtopk,
    )?;
    Ok(Cfg {
        arch,
        d_in: size("d_in")?,
        d_sae: size("d_sae")?,
        k,
        rescale,
        apply_b_dec: flag("apply_b_dec_to_input", true)?,
        normalize,
        widths,
        name,
        raw,
    })
}

/// The tensors of `sae_weights.safetensors`, as float32 host vectors with their shapes.
struct Weights {
    tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
    /// Single-value tensors at full precision (SAELens keeps `topk_threshold` in float64).
    scalars: HashMap<String, f64>,
    path: PathBuf,
}

impl Weights {
    fn read(path: &Path) -> Result<Weights> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let loaded = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| anyhow!("{} is not a safetensors file: {e}", path.display()))?;
        let (mut tensors, mut scalars) = (HashMap::new(), HashMap::new());
        for (name, t) in loaded {
            let shape = t.dims().to_vec();
            if t.elem_count() == 1 {
                if let Ok(v) = t
                    .to_dtype(DType::F64)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f64>())
                {
                    scalars.insert(name.clone(), v[0]);
                }
            }
            let values = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| anyhow!("{}: tensor `{name}`: {e}", path.display()))?;
            tensors.insert(name, (values, shape));
        }
        Ok(Weights {
            tensors,
            scalars,
            path: path.to_path_buf(),
        })
    }

    /// Tensor `name`, which must have `shape`.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (values, got) = self.tensors.remove(name).ok_or_else(|| {
            anyhow!(
                "{} has no tensor `{name}` (it has: {})",
                self.path.display(),
                self.names()
            )
        })?;
        if got != shape {
            bail!(
                "{}: `{name}` has shape {got:?}, but cfg.json's d_in and d_sae make it {shape:?}",
                self.path.display()
            );
        }
        Ok(values)
    }

    fn names(&self) -> String {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort();
        names.join(", ")
    }
}

/// Reads a SAELens folder as an msae model on `device`. `norm_scaling_factor` is the
/// `expected_average_only_in` factor of a published SAE (SAELens keeps it in its list of
/// releases, not in the folder); a training checkpoint's `activation_scaler.json` gives it too.
pub fn read(
    folder: &Folder,
    norm_scaling_factor: Option<f64>,
    device: &Device,
) -> Result<Imported> {
    let text = std::fs::read_to_string(&folder.cfg)
        .with_context(|| format!("cannot read {}", folder.cfg.display()))?;
    let cfg = parse_cfg(&text, &folder.cfg)?;
    let mut weights = Weights::read(&folder.weights)?;
    let mut info: Vec<(String, Json)> = vec![
        ("saelens_architecture".into(), cfg.name.clone().into()),
        ("normalize_activations".into(), cfg.normalize.clone().into()),
        ("apply_b_dec_to_input".into(), cfg.apply_b_dec.into()),
    ];
    for key in ["model_name", "hook_name", "dataset_path"] {
        if let Some(v) = metadata(&cfg.raw, key) {
            info.push((key.into(), v.into()));
        }
    }
    let scale = input_scale(&cfg, folder, norm_scaling_factor, &mut info)?;
    let parts = Parts::read(&cfg, &mut weights)?;
    let leftovers: Vec<String> = weights
        .tensors
        .iter()
        .filter(|(name, (values, _))| {
            !(name.as_str() == "scaling_factor" && values.iter().all(|v| *v == 1.0))
        })
        .map(|(name, _)| name.clone())
        .collect();
    if !leftovers.is_empty() {
        bail!(
            "{}: tensor(s) {} are not part of a SAELens `{}` SAE (a finetuning scaling factor other than 1 is not supported)",
            folder.weights.display(),
            leftovers.join(", "),
            cfg.name
        );
    }
    if let Some(section) = cfg
        .raw
        .get("msae")
        .filter(|_| scale.is_none() && cfg.apply_b_dec)
    {
        match restore(&cfg, &parts, section, device) {
            Ok(Some(sae)) => {
                info.push((
                    "restored".into(),
                    "the msae model it was exported from".into(),
                ));
                return Ok(Imported { sae, info });
            }
            Ok(None) => info.push((
                "note".into(),
                "the msae section of cfg.json does not match its SAELens fields and was ignored"
                    .into(),
            )),
            Err(e) => info.push((
                "note".into(),
                format!("the msae section of cfg.json was ignored: {e:#}").into(),
            )),
        }
    }
    let (sae, inexact) = build(&cfg, parts, scale.unwrap_or(1.0), device, &mut info)?;
    if inexact > 0 {
        info.push(("thresholds_inexact".into(), inexact.into()));
    }
    Ok(Imported { sae, info })
}

/// A metadata field, where SAELens 6 keeps it (`metadata`) or where earlier versions did (the
/// top level).
fn metadata(raw: &Json, key: &str) -> Option<String> {
    raw.get("metadata")
        .and_then(|m| m.get(key))
        .or_else(|| raw.get(key))
        .and_then(Json::as_str)
        .map(str::to_string)
}

/// The factor `expected_average_only_in` scales rows by, when one is known.
fn input_scale(
    cfg: &Cfg,
    folder: &Folder,
    given: Option<f64>,
    info: &mut Vec<(String, Json)>,
) -> Result<Option<f64>> {
    if cfg.normalize != "expected_average_only_in" {
        if given.is_some() {
            bail!("`norm_scaling_factor` applies to SAEs with normalize_activations = \"expected_average_only_in\"; this one has \"{}\"", cfg.normalize);
        }
        return Ok(None);
    }
    let from_file = match &folder.scaler {
        Some(p) => {
            let v: Json = serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            )
            .with_context(|| format!("{} is not JSON", p.display()))?;
            v.get("scaling_factor").and_then(Json::as_f64)
        }
        None => None,
    };
    let factor = given.or(from_file);
    match factor {
        Some(c) if c.is_finite() && c > 0.0 => {
            info.push(("norm_scaling_factor".into(), c.into()));
            Ok(Some(c))
        }
        Some(c) => bail!("the normalisation scaling factor {c} is not a positive number"),
        None => {
            info.push(("note".into(), "expected_average_only_in without a scaling factor: rows are used as they are, as SAELens' loader does; give `norm_scaling_factor` to scale them".into()));
            Ok(None)
        }
    }
}

/// The SAELens parameters of one SAE, with the decoder-norm rescale already folded in.
struct Parts {
    w_enc: Vec<f32>,
    b_enc: Vec<f32>,
    w_dec: Vec<f32>,
    b_dec: Vec<f32>,
    /// Per-latent thresholds (`jumprelu`).
    threshold: Option<Vec<f32>>,
    /// The global threshold of the BatchTopK layouts.
    topk_threshold: Option<f64>,
}

impl Parts {
    fn read(cfg: &Cfg, w: &mut Weights) -> Result<Parts> {
        let (d, n) = (cfg.d_in, cfg.d_sae);
        let mut p = Parts {
            w_enc: w.take("W_enc", &[d, n])?,
            b_enc: w.take("b_enc", &[n])?,
            w_dec: w.take("W_dec", &[n, d])?,
            b_dec: w.take("b_dec", &[d])?,
            threshold: None,
            topk_threshold: None,
        };
        match cfg.arch {
            Architecture::Jumprelu => p.threshold = Some(w.take("threshold", &[n])?),
            Architecture::Batchtopk => {
                w.take("topk_threshold", &[])?;
                let t = w.scalars["topk_threshold"];
                if t.is_nan() {
                    bail!("{}: `topk_threshold` is NaN", w.path.display());
                }
                p.topk_threshold = Some(t);
            }
            _ => {}
        }
        if cfg.rescale {
            if cfg.arch == Architecture::Standard || cfg.arch == Architecture::Jumprelu {
                bail!("rescale_acts_by_decoder_norm belongs to the TopK family; `{}` has no such setting", cfg.name);
            }
            p.fold_decoder_norms(d, n);
        }
        if let Some(bad) = [&p.w_enc, &p.b_enc, &p.w_dec, &p.b_dec]
            .iter()
            .position(|t| t.iter().any(|v| !v.is_finite()))
        {
            bail!(
                "{}: `{}` holds a non-finite value",
                w.path.display(),
                ["W_enc", "b_enc", "W_dec", "b_dec"][bad]
            );
        }
        Ok(p)
    }

    /// SAELens' fold of a TopK-family SAE that scales pre-activations by the decoder row norms:
    /// `W_enc[:, j]·‖W_dec[j]‖`, `b_enc[j]·‖W_dec[j]‖`, `W_dec[j]/‖W_dec[j]‖` give the same code
    /// without the rescale (a zero row stays as it is: its latent contributes nothing either way).
    fn fold_decoder_norms(&mut self, d: usize, n: usize) {
        for j in 0..n {
            let row = &mut self.w_dec[j * d..(j + 1) * d];
            let norm = row
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt();
            if norm == 0.0 {
                continue;
            }
            row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
            self.b_enc[j] = (self.b_enc[j] as f64 * norm) as f32;
            for i in 0..d {
                let w = &mut self.w_enc[i * n + j];
                *w = (*w as f64 * norm) as f32;
            }
        }
    }
}

/// The msae model computing the SAELens forward pass of `cfg` on rows scaled by `scale`.
/// Returns it with the number of thresholds that no float32 log-threshold reproduces exactly.
fn build(
    cfg: &Cfg,
    p: Parts,
    scale: f64,
    device: &Device,
    info: &mut Vec<(String, Json)>,
) -> Result<(Sae, usize)> {
    let (d, n) = (cfg.d_in, cfg.d_sae);
    let mut config = TrainConfig {
        n_latents: Some(n),
        // The SAE was not trained by msae on mean-centred rows.
        mean_center: false,
        ..TrainConfig::default()
    };
    let mut batchtopk_threshold = None;
    let mut log_threshold = None;
    let mut inexact = 0;
    match cfg.arch {
        Architecture::Standard => config.arch = Arch::Relu,
        Architecture::Topk => {
            // SAELens' inference TopK default.
            let k = cfg.k.unwrap_or(100.0);
            if k.fract() != 0.0 || k as usize > n {
                bail!("a `topk` SAE needs an integer k in 1..={n}, not {k}");
            }
            config.arch = Arch::Topk;
            config.k = Some(k as usize);
            info.push(("k".into(), (k as usize).into()));
        }
        Architecture::Jumprelu => {
            config.arch = Arch::Jumprelu;
            let (logs, misses) = log_thresholds(p.threshold.as_deref().unwrap_or_default())?;
            log_threshold = Some(logs);
            inexact = misses;
        }
        Architecture::Batchtopk => {
            // The BatchTopK training config's default k; msae keeps it only as a record (the
            // code comes from the threshold), rounded into 1..=n.
            let k = cfg.k.unwrap_or(100.0);
            config.arch = Arch::Batchtopk;
            config.k = Some((k.round() as usize).clamp(1, n));
            config.batchtopk_inference = BatchTopkInference::Threshold;
            batchtopk_threshold = p.topk_threshold;
            info.push(("k".into(), k.into()));
            if let Some(t) = p.topk_threshold {
                info.push(("topk_threshold".into(), t.into()));
            }
            if !cfg.widths.is_empty() {
                info.push(("matryoshka_widths".into(), cfg.widths.clone().into()));
            }
        }
    }
    let b_lat = if cfg.apply_b_dec {
        p.b_enc.clone()
    } else {
        // h = x·W_enc + b_enc = (x − b_dec)·W_enc + (b_enc + b_dec·W_enc).
        (0..n)
            .map(|j| {
                let shift: f64 = (0..d)
                    .map(|i| p.b_dec[i] as f64 * p.w_enc[i * n + j] as f64)
                    .sum();
                (p.b_enc[j] as f64 + shift) as f32
            })
            .collect()
    };
    let mut tensors = HashMap::new();
    tensors.insert("pre_bias".to_string(), HostTensor::F32(p.b_dec, vec![d]));
    tensors.insert("encoder".to_string(), HostTensor::F32(p.w_enc, vec![d, n]));
    tensors.insert("latent_bias".to_string(), HostTensor::F32(b_lat, vec![n]));
    tensors.insert("decoder".to_string(), HostTensor::F32(p.w_dec, vec![n, d]));
    tensors.insert(
        "mean_center".to_string(),
        HostTensor::F32(vec![0.0; d], vec![d]),
    );
    if let Some(l) = log_threshold {
        tensors.insert("log_threshold".to_string(), HostTensor::F32(l, vec![n]));
    }
    let meta = ModelMeta {
        format: crate::sae::model::MODEL_FORMAT.into(),
        config,
        d,
        n,
        scale: scale as f32,
        target_norm: (d as f32).sqrt(),
        num_updates: 0,
        batchtopk_threshold,
        levels: vec![],
        level_weights: vec![1.0],
    };
    meta.config
        .validate(d)
        .map_err(|e| anyhow!("{}: {e}", cfg.name))?;
    let sae = Sae::from_parts(meta, &tensors, Path::new(&cfg.name), device)
        .map_err(|e| anyhow!("{e}"))?;
    Ok((sae, inexact))
}

/// msae keeps JumpReLU thresholds as logarithms and fires where `ReLU(P) > exp(log θ)` in
/// float32. For each SAELens threshold θ this picks the float32 `log θ` whose float32
/// exponential is θ itself (searching the neighbours of the rounded logarithm), else the
/// closest one; θ ≤ 0 fires wherever the pre-activation is positive, as `exp(−∞) = 0` does.
/// Returns the logarithms and how many are not exact.
fn log_thresholds(theta: &[f32]) -> Result<(Vec<f32>, usize)> {
    let mut misses = 0;
    let logs = theta
        .iter()
        .map(|&t| {
            if t.is_nan() {
                bail!("a JumpReLU threshold is NaN");
            }
            if t <= 0.0 {
                return Ok(f32::NEG_INFINITY);
            }
            if t == f32::INFINITY {
                return Ok(f32::INFINITY);
            }
            let start = (t as f64).ln() as f32;
            let (mut best, mut best_err) = (start, f32::INFINITY);
            let (mut up, mut down) = (start, start);
            for _ in 0..=64 {
                for c in [up, down] {
                    let err = (c.exp() - t).abs();
                    if err < best_err {
                        (best, best_err) = (c, err);
                    }
                }
                if best_err == 0.0 {
                    break;
                }
                up = up.next_up();
                down = down.next_down();
            }
            if best_err != 0.0 {
                misses += 1;
            }
            Ok(best)
        })
        .collect::<Result<Vec<f32>>>()?;
    Ok((logs, misses))
}

/// The model an msae export came from, when `section` (the `msae` key of `cfg.json`) still
/// describes these SAELens fields; `None` when it does not.
fn restore(cfg: &Cfg, p: &Parts, section: &Json, device: &Device) -> Result<Option<Sae>> {
    let (d, n) = (cfg.d_in, cfg.d_sae);
    let config: TrainConfig = serde_json::from_value(
        section
            .get("config")
            .cloned()
            .ok_or_else(|| anyhow!("no training configuration"))?,
    )?;
    let floats = |key: &str| -> Option<Vec<f64>> {
        section
            .get(key)?
            .as_array()?
            .iter()
            .map(Json::as_f64)
            .collect()
    };
    let number = |key: &str| section.get(key).and_then(Json::as_f64);
    let (Some(mean), Some(s), Some(target_norm)) =
        (floats("mean"), number("scale"), number("target_norm"))
    else {
        bail!("no standardisation (mean, scale, target_norm)");
    };
    if mean.len() != d || !(s.is_finite() && s > 0.0) {
        bail!(
            "a standardisation of {} values with scale {s} for d_in = {d}",
            mean.len()
        );
    }
    let (levels, level_weights) = if config.arch == Arch::Msae {
        let levels: Vec<usize> = section
            .get("nesting_levels")
            .and_then(Json::as_array)
            .and_then(|a| a.iter().map(|v| v.as_u64().map(|v| v as usize)).collect())
            .ok_or_else(|| anyhow!("a Matryoshka model without nesting_levels"))?;
        let w = floats("level_weights").ok_or_else(|| anyhow!("no level_weights"))?;
        (levels, w)
    } else {
        (vec![], vec![1.0])
    };
    // Undo the fold in float64: W_enc/s, W_dec·s, (b_dec − μ)·s.
    let s32 = s as f32;
    let s = s32 as f64;
    let encoder: Vec<f32> = p.w_enc.iter().map(|&w| (w as f64 / s) as f32).collect();
    let decoder: Vec<f32> = p.w_dec.iter().map(|&w| (w as f64 * s) as f32).collect();
    let pre_bias: Vec<f32> = p
        .b_dec
        .iter()
        .zip(&mean)
        .map(|(&b, &mu)| ((b as f64 - mu) * s) as f32)
        .collect();
    let mut tensors = HashMap::new();
    tensors.insert("pre_bias".to_string(), HostTensor::F32(pre_bias, vec![d]));
    tensors.insert("encoder".to_string(), HostTensor::F32(encoder, vec![d, n]));
    tensors.insert(
        "latent_bias".to_string(),
        HostTensor::F32(p.b_enc.clone(), vec![n]),
    );
    tensors.insert("decoder".to_string(), HostTensor::F32(decoder, vec![n, d]));
    tensors.insert(
        "mean_center".to_string(),
        HostTensor::F32(mean.iter().map(|&m| m as f32).collect(), vec![d]),
    );
    if config.arch == Arch::Jumprelu {
        let (logs, _) = log_thresholds(p.threshold.as_deref().unwrap_or_default())?;
        tensors.insert("log_threshold".to_string(), HostTensor::F32(logs, vec![n]));
    }
    let meta = ModelMeta {
        format: crate::sae::model::MODEL_FORMAT.into(),
        config,
        d,
        n,
        scale: s32,
        target_norm: target_norm as f32,
        num_updates: 0,
        batchtopk_threshold: number("batchtopk_threshold"),
        levels,
        level_weights,
    };
    meta.config.validate(d).map_err(|e| anyhow!("{e}"))?;
    let sae = Sae::from_parts(meta, &tensors, Path::new("cfg.json"), device)
        .map_err(|e| anyhow!("{e}"))?;
    // The section counts only if exporting the restored model writes these SAELens fields.
    let level = section
        .get("exported_level")
        .and_then(Json::as_u64)
        .map(|l| l as usize);
    let Ok(want) = target(&sae, level) else {
        return Ok(None);
    };
    let same = want.architecture == cfg.name
        && want.k.map(|k| k as f64) == cfg.k
        && !cfg.rescale
        && cfg.normalize == "none"
        && want.threshold.as_deref() == p.threshold.as_deref();
    Ok(same.then_some(sae))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_thresholds_reproduce_every_threshold_they_can() {
        let special = [0.0f32, -0.5, f32::INFINITY];
        let (logs, misses) = log_thresholds(&special).unwrap();
        let back: Vec<f32> = logs.iter().map(|l| l.exp()).collect();
        assert_eq!(back, [0.0, 0.0, f32::INFINITY]);
        assert_eq!(misses, 0);
        // Thresholds spread over seven decades: each comes back exactly or within |ln θ| + 1
        // ulps (where |ln θ| > 1 neighbouring logarithms step over several float32 values of θ).
        let theta: Vec<f32> = (0..3000)
            .map(|i| 10f64.powf(-4.0 + 7.0 * i as f64 / 3000.0) as f32)
            .collect();
        let (logs, misses) = log_thresholds(&theta).unwrap();
        let mut counted = 0;
        for (t, l) in theta.iter().zip(&logs) {
            let b = l.exp();
            if b != *t {
                counted += 1;
                // Adjacent logarithms L differ by at most |L|·2⁻²³, their exponentials by
                // |L| ulps of θ: the nearest lies within half that, plus the rounding of exp.
                let ulp = (t.next_up() - t) as f64;
                let bound = (t.ln().abs() as f64 + 1.0) * ulp;
                assert!(((b - t) as f64).abs() <= bound, "{t} vs {b}");
            }
        }
        assert_eq!(counted, misses);
        // Above |ln θ| ≈ 1 a logarithm's ulp moves θ by more than θ's own ulp, so most of
        // this range (|ln θ| up to 9) cannot be hit exactly; below it nearly all can.
        assert!(misses < theta.len() * 3 / 4, "{misses}");
        assert!(log_thresholds(&[f32::NAN]).is_err());
    }

    fn cfg(text: &str) -> Result<Cfg> {
        parse_cfg(text, Path::new("cfg.json"))
    }

    #[test]
    fn configs_msae_cannot_read_are_refused_by_name() {
        let e = cfg(r#"{"d_in": 4, "d_sae": 8}"#).err().unwrap().to_string();
        assert!(
            e.contains("no `architecture`")
                && e.contains("standard, topk, jumprelu, batchtopk, matryoshka_batchtopk"),
            "{e}"
        );
        let e = cfg(r#"{"architecture": "gated", "d_in": 4, "d_sae": 8}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("`gated` is not supported") && e.contains("matryoshka_batchtopk"),
            "{e}"
        );
        let e = cfg(r#"{"architecture": "standard", "d_in": 4, "d_sae": 8, "normalize_activations": "layer_norm"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("layer_norm") && e.contains("cannot express"),
            "{e}"
        );
        let e = cfg(r#"{"architecture": "standard", "d_in": 4, "d_sae": 0}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`d_sae` must be a positive integer"), "{e}");
    }

    #[test]
    fn defaults_follow_saelens() {
        let c = cfg(r#"{"architecture": "topk", "d_in": 4, "d_sae": 8, "k": 3}"#).unwrap();
        assert!(!c.rescale && c.apply_b_dec && c.normalize == "none");
        let c = cfg(r#"{"architecture": "batchtopk", "d_in": 4, "d_sae": 8, "normalize_activations": true}"#).unwrap();
        assert!(c.rescale);
        assert_eq!(c.normalize, "expected_average_only_in");
    }
}
