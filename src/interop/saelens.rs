//! Export in the SAELens layout: a folder with `cfg.json` and `sae_weights.safetensors`
//! (`W_enc` \[d, n\], `b_enc` \[n\], `W_dec` \[n, d\], `b_dec` \[d\], and `threshold` \[n\]
//! for JumpReLU). [`super::saelens_read`] reads the same layout back.
//!
//! SAELens computes `z = act((x − b_dec)·W_enc + b_enc)` and `x̂ = z·W_dec + b_dec` on raw
//! inputs, while msae models work on standardised inputs `x' = (x − μ)·s`. The standardisation
//! folds into the weights exactly: with `b_dec = μ + b_pre/s`, `W_enc ← s·W_enc` and
//! `W_dec ← W_dec/s` both sides give the same code and the same raw-space reconstruction, so
//! the exported SAE needs no normalisation setting (`normalize_activations = "none"`). In float32
//! the fold rounds: for s not a power of two, `s·W_enc` or `W_dec/s` maps neighbouring values
//! onto one, so the unfolded weights cannot be recovered bit for bit from the folded ones (the
//! reader restores them to within an ulp, with μ and s from the `msae` section of `cfg.json`).
//!
//! A Matryoshka model is scored by msae at its first nesting level (a per-row TopK at that k), so
//! that level is what the export writes by default: a SAELens `topk` SAE at that k; another
//! level may be chosen, and the last one (k = n, every positive pre-activation) is `standard`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::sae::config::{Arch, BatchTopkInference, TopkVariant};
use crate::sae::model::{serialize_host, write_atomic, HostTensor};
use crate::sae::Sae;

/// The `cfg.json` format this writer follows (declared as `metadata.sae_lens_version`, which
/// SAELens reads to tell its current format from the one before 6.0).
pub const CONFIG_FORMAT: &str = "6.0.0";

/// Names that tell SAELens users where the SAE's inputs come from (optional).
#[derive(Default)]
pub struct Provenance {
    pub model_name: Option<String>,
    pub hook_name: Option<String>,
    pub dataset_path: Option<String>,
}

/// The SAELens model an msae model is written as.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `standard`, `topk` or `jumprelu`.
    pub architecture: &'static str,
    /// k of a `topk` SAE.
    pub k: Option<usize>,
    /// Per-latent thresholds of a `jumprelu` SAE.
    pub threshold: Option<Vec<f32>>,
    /// The Matryoshka level written (index into the nesting levels).
    pub level: Option<usize>,
}

impl Target {
    /// One line saying what was written, e.g. for `msae export` to print.
    pub fn describe(&self, sae: &Sae) -> String {
        let what = match self.k {
            Some(k) => format!("a SAELens `{}` SAE with k = {k}", self.architecture),
            None => format!("a SAELens `{}` SAE", self.architecture),
        };
        match self.level {
            Some(l) => format!(
                "Matryoshka level {l} of {} (nesting levels {:?}, k = {}) as {what}; msae scores level 0",
                sae.levels.len(),
                sae.levels,
                sae.levels[l]
            ),
            None => what,
        }
    }
}

/// Writes `dir/cfg.json` and `dir/sae_weights.safetensors` for `sae`; for a Matryoshka model,
/// `level` picks the nesting level (default 0, the one msae scores). Returns what was written.
pub fn export(
    sae: &Sae,
    dir: &Path,
    provenance: &Provenance,
    level: Option<usize>,
) -> Result<Target> {
    let target = target(sae, level)?;
    let (d, n) = (sae.d, sae.n);
    let s = sae.standardization.scale;
    if !(s.is_finite() && s > 0.0) {
        bail!("the SAE's scale s = {s} cannot be folded into its weights");
    }
    let host =
        |t: &candle_core::Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let w_enc: Vec<f32> = host(&sae.encoder)?.iter().map(|w| w * s).collect();
    let w_dec: Vec<f32> = host(&sae.decoder)?.iter().map(|w| w / s).collect();
    let b_dec: Vec<f32> = host(&sae.pre_bias)?
        .iter()
        .zip(&sae.standardization.mean)
        .map(|(b, mu)| mu + b / s)
        .collect();
    let mut tensors = vec![
        ("W_enc".to_string(), HostTensor::F32(w_enc, vec![d, n])),
        (
            "b_enc".to_string(),
            HostTensor::F32(host(&sae.latent_bias)?, vec![n]),
        ),
        ("W_dec".to_string(), HostTensor::F32(w_dec, vec![n, d])),
        ("b_dec".to_string(), HostTensor::F32(b_dec, vec![d])),
    ];
    if let Some(t) = &target.threshold {
        tensors.push(("threshold".to_string(), HostTensor::F32(t.clone(), vec![n])));
    }
    let mut cfg = json!({
        "architecture": target.architecture,
        "d_in": d,
        "d_sae": n,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": CONFIG_FORMAT,
            "model_name": provenance.model_name,
            "hook_name": provenance.hook_name,
            "dataset_path": provenance.dataset_path,
        },
        "msae": msae_section(sae, &target)?,
    });
    if let Some(k) = target.k {
        cfg["k"] = json!(k);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let weights = dir.join("sae_weights.safetensors");
    let bytes = serialize_host(&tensors, None, &weights).map_err(|e| anyhow!("{e}"))?;
    write_atomic(&weights, &bytes).map_err(|e| anyhow!("{e}"))?;
    let text = serde_json::to_string_pretty(&cfg)? + "\n";
    write_atomic(&dir.join("cfg.json"), text.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    Ok(target)
}

/// What msae needs beyond the SAELens fields to read the folder back as the model it came from:
/// the standardisation, the training configuration and the Matryoshka levels. SAELens ignores
/// keys it does not know.
fn msae_section(sae: &Sae, target: &Target) -> Result<serde_json::Value> {
    let mut section = json!({
        "arch": format!("{:?}", sae.config.arch).to_lowercase(),
        "standardisation": "folded into W_enc, W_dec and b_dec",
        "mean": sae.standardization.mean,
        "scale": sae.standardization.scale,
        "target_norm": sae.target_norm,
        "config": serde_json::to_value(&sae.config)?,
    });
    if let Some(t) = sae.batchtopk_threshold {
        section["batchtopk_threshold"] = json!(t);
    }
    if sae.config.arch == Arch::Msae {
        section["nesting_levels"] = json!(sae.levels);
        section["level_weights"] = json!(sae.level_weights);
        section["exported_level"] = json!(target.level);
        section["note"] = json!("the exported code is one nesting level: level l keeps each row's top nesting_levels[l] latents; msae scores level 0");
    }
    Ok(section)
}

/// The SAELens model that computes the same code as `sae` at inference (for a Matryoshka model,
/// as its nesting level `level`, default 0).
pub fn target(sae: &Sae, level: Option<usize>) -> Result<Target> {
    let c = &sae.config;
    if c.soft_cap > 0.0 {
        bail!(
            "SAELens has no soft cap; an SAE trained with soft_cap = {} cannot be exported",
            c.soft_cap
        );
    }
    if level.is_some() && c.arch != Arch::Msae {
        bail!(
            "only a Matryoshka model has levels to choose from; this SAE is `{:?}`",
            c.arch
        );
    }
    let relu_family = c.topk_variant == TopkVariant::Relu;
    let plain = |architecture, k| Target {
        architecture,
        k,
        threshold: None,
        level: None,
    };
    Ok(match c.arch {
        Arch::Relu => plain("standard", None),
        Arch::Topk if relu_family => plain("topk", Some(c.k())),
        Arch::Msae if relu_family => {
            let l = level.unwrap_or(0);
            let Some(&k) = sae.levels.get(l) else {
                bail!(
                    "level {l} does not exist: this Matryoshka model has {} levels (0 to {}), nesting levels {:?}",
                    sae.levels.len(),
                    sae.levels.len().saturating_sub(1),
                    sae.levels
                );
            };
            // k = n keeps every positive pre-activation: a ReLU code.
            let (architecture, k) = if k >= sae.n { ("standard", None) } else { ("topk", Some(k)) };
            Target {
                level: Some(l),
                ..plain(architecture, k)
            }
        }
        // SAELens keeps ReLU(P) where P > θ, so a θ below 0 (trained directly) acts as 0 there
        // as it does here.
        Arch::Jumprelu => {
            let theta = sae
                .thresholds()?
                .ok_or_else(|| anyhow!("JumpReLU model without thresholds"))?;
            Target {
                threshold: Some(theta.to_vec1::<f32>()?),
                ..plain("jumprelu", None)
            }
        }
        // With a global threshold θ ≥ 0, BatchTopK inference keeps P where P > θ: a JumpReLU
        // with the same threshold for every latent.
        Arch::Batchtopk if relu_family => match (c.batchtopk_inference, sae.batchtopk_threshold) {
            (BatchTopkInference::Threshold, Some(t)) if t >= 0.0 => Target {
                threshold: Some(vec![t as f32; sae.n]),
                ..plain("jumprelu", None)
            },
            _ => bail!("this BatchTopK SAE selects per batch (no inference threshold), which no SAELens architecture reproduces"),
        },
        _ => bail!(
            "SAELens has no equivalent of the `{:?}` top-k variant (its TopK applies a ReLU to the kept values)",
            c.topk_variant
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::{Standardization, TrainConfig};
    use candle_core::{Device, Tensor};

    /// A small model with non-trivial biases and standardisation.
    fn model(config: TrainConfig) -> Sae {
        let (d, n) = (6, 12);
        let dev = Device::Cpu;
        let mut sae = Sae::new(&config, d, &dev).unwrap();
        let bias: Vec<f32> = (0..n).map(|j| 0.02 * (j as f32) - 0.1).collect();
        sae.latent_bias = Tensor::from_vec(bias, n, &dev).unwrap();
        sae.pre_bias = Tensor::from_vec(vec![0.1f32, -0.2, 0.05, 0.0, 0.3, -0.1], d, &dev).unwrap();
        sae.encoder = (&sae.encoder * 8.0).unwrap();
        sae.standardization = Standardization {
            mean: vec![0.5, -1.0, 0.25, 2.0, 0.0, -0.5],
            scale: 0.7,
        };
        sae
    }

    fn host(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// SAELens' JumpReLU forward pass, from the exported files, on raw rows.
    fn saelens_jumprelu(dir: &Path, x: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
        let bytes = std::fs::read(dir.join("sae_weights.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let get = |name: &str| -> Vec<f32> {
            st.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let (w_enc, b_enc, w_dec, b_dec, th) = (
            get("W_enc"),
            get("b_enc"),
            get("W_dec"),
            get("b_dec"),
            get("threshold"),
        );
        let n = b_enc.len();
        let (mut codes, mut recons) = (vec![], vec![]);
        for row in x.chunks(d) {
            let mut z = vec![0f32; n];
            for (j, zj) in z.iter_mut().enumerate() {
                let p: f32 = b_enc[j]
                    + (0..d)
                        .map(|i| (row[i] - b_dec[i]) * w_enc[i * n + j])
                        .sum::<f32>();
                *zj = if p > th[j] { p.max(0.0) } else { 0.0 };
            }
            let r: Vec<f32> = (0..d)
                .map(|i| b_dec[i] + (0..n).map(|j| z[j] * w_dec[j * d + i]).sum::<f32>())
                .collect();
            codes.extend(z);
            recons.extend(r);
        }
        (codes, recons)
    }

    fn check_against_msae(sae: &Sae) {
        let dir = tempfile::tempdir().unwrap();
        export(sae, dir.path(), &Provenance::default(), None).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("cfg.json")).unwrap()).unwrap();
        assert_eq!(cfg["architecture"], "jumprelu");
        let d = sae.d;
        let x: Vec<f32> = (0..5 * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.4)
            .collect();
        let raw = Tensor::from_vec(x.clone(), (5, d), &Device::Cpu).unwrap();
        let out = sae
            .forward_eval(&sae.standardization.apply(&raw).unwrap())
            .unwrap();
        let s = sae.standardization.scale;
        let want_code = host(&out.sparse_code);
        let want_recon: Vec<f32> = host(&out.sparse_recon)
            .iter()
            .enumerate()
            .map(|(i, r)| r / s + sae.standardization.mean[i % d])
            .collect();
        assert!(want_code.iter().any(|&z| z > 0.0) && want_code.contains(&0.0));
        let (code, recon) = saelens_jumprelu(dir.path(), &x, d);
        for (a, b) in code
            .iter()
            .zip(&want_code)
            .chain(recon.iter().zip(&want_recon))
        {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn jumprelu_exports_with_its_thresholds() {
        let mut sae = model(TrainConfig {
            arch: Arch::Jumprelu,
            n_latents: Some(12),
            ..TrainConfig::default()
        });
        let th: Vec<f32> = (0..12).map(|j| (0.05 + 0.03 * j as f32).ln()).collect();
        sae.threshold_param = Some(Tensor::from_vec(th, 12, &Device::Cpu).unwrap());
        check_against_msae(&sae);
    }

    #[test]
    fn batchtopk_with_a_global_threshold_exports_as_jumprelu() {
        let mut sae = model(TrainConfig {
            arch: Arch::Batchtopk,
            n_latents: Some(12),
            k: Some(3),
            ..TrainConfig::default()
        });
        sae.batchtopk_threshold = Some(0.15);
        check_against_msae(&sae);
        // Without a threshold (reference behaviour) there is no SAELens equivalent.
        sae.batchtopk_threshold = None;
        let dir = tempfile::tempdir().unwrap();
        let e = export(&sae, dir.path(), &Provenance::default(), None).unwrap_err();
        assert!(e.to_string().contains("selects per batch"), "{e}");
    }

    #[test]
    fn variants_saelens_cannot_express_are_refused() {
        let sae = model(TrainConfig {
            arch: Arch::Topk,
            n_latents: Some(12),
            k: Some(3),
            topk_variant: TopkVariant::Abs,
            ..TrainConfig::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let e = export(&sae, dir.path(), &Provenance::default(), None).unwrap_err();
        assert!(e.to_string().contains("top-k variant"), "{e}");
    }
}
