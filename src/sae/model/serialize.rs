//! Saving and loading a model: one safetensors file holds the parameters, the standardisation
//! mean, the activation counts and, in its header, the metadata ([`ModelMeta`]: configuration,
//! shapes, scale, levels) as JSON; the same JSON is written beside it (`model.json`) for
//! people and tools that do not read safetensors. Files are written atomically (temporary
//! sibling, fsync, rename), so a crash leaves the old file or the new one, never a torn one.
//! The host-tensor helpers here also serve checkpoints and the interop formats.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::sae::config::{Arch, TrainConfig};
use crate::sae::model::{ActivationStats, Sae, Standardization};
use crate::sae::{Result, SaeError};

impl Sae {
    /// Save as safetensors at `path` (tensors + metadata) and the configuration as JSON next to
    /// it (`path` with extension `json`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, HostTensor)> = Vec::new();
        for (name, t) in self.param_names().into_iter().zip(self.params()) {
            tensors.push((name.to_string(), HostTensor::from_tensor(t)?));
        }
        tensors.push((
            "mean_center".into(),
            HostTensor::F32(self.standardization.mean.clone(), vec![self.d]),
        ));
        tensors.push((
            "latents_activation_frequency".into(),
            HostTensor::I64(
                self.stats.counts.iter().map(|&c| c as i64).collect(),
                vec![self.n],
            ),
        ));
        let meta = self.metadata();
        let json = serde_json::to_string_pretty(&meta).map_err(|e| SaeError::Format {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let mut info = HashMap::new();
        info.insert("msae".to_string(), json.clone());
        let bytes = serialize_host(&tensors, Some(info), path)?;
        write_atomic(path, &bytes)?;
        write_atomic(&path.with_extension("json"), json.as_bytes())?;
        Ok(())
    }

    fn metadata(&self) -> ModelMeta {
        ModelMeta {
            format: MODEL_FORMAT.into(),
            config: self.config.clone(),
            d: self.d,
            n: self.n,
            scale: self.standardization.scale,
            target_norm: self.target_norm,
            num_updates: self.stats.num_updates,
            batchtopk_threshold: self.batchtopk_threshold,
            levels: self.levels.clone(),
            level_weights: self.level_weights.clone(),
        }
    }

    /// Load a model written by [`Sae::save`] onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| SaeError::Io {
            path: path.into(),
            source: e,
        })?;
        Self::load_bytes(&bytes, path, device)
    }

    /// Load a model from the bytes of a file written by [`Sae::save`]; `path` names it in errors.
    pub fn load_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Self> {
        let (meta, tensors) = read_safetensors(bytes, path)?;
        let meta: ModelMeta = meta
            .get("msae")
            .ok_or_else(|| fmt_err(path, "missing msae metadata"))
            .and_then(|s| serde_json::from_str(s).map_err(|e| fmt_err(path, &e.to_string())))?;
        Self::from_parts(meta, &tensors, path, device)
    }

    pub(crate) fn from_parts(
        meta: ModelMeta,
        tensors: &HashMap<String, HostTensor>,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        if meta.format != MODEL_FORMAT {
            return Err(fmt_err(path, &format!("unknown format {}", meta.format)));
        }
        let (d, n) = (meta.d, meta.n);
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .get(name)
                .ok_or_else(|| fmt_err(path, &format!("missing tensor {name}")))?;
            t.to_tensor(shape, device)
                .map_err(|_| fmt_err(path, &format!("tensor {name} has the wrong shape or type")))
        };
        let mut sae = Sae {
            config: meta.config.clone(),
            d,
            n,
            pre_bias: get("pre_bias", &[d])?,
            encoder: get("encoder", &[d, n])?,
            latent_bias: get("latent_bias", &[n])?,
            decoder: get("decoder", &[n, d])?,
            threshold_param: None,
            levels: meta.levels.clone(),
            level_weights: meta.level_weights.clone(),
            batchtopk_threshold: meta.batchtopk_threshold,
            stats: ActivationStats::new(n),
            standardization: Standardization {
                mean: get("mean_center", &[d])?.to_vec1::<f32>()?,
                scale: meta.scale,
            },
            target_norm: meta.target_norm,
        };
        if meta.config.arch == Arch::Jumprelu {
            let name = super::jumprelu::param_name(meta.config.jumprelu_param);
            sae.threshold_param = Some(get(name, &[n])?);
        }
        if meta.config.arch == Arch::Msae && sae.levels.is_empty() {
            return Err(fmt_err(path, "Matryoshka model without levels"));
        }
        if sae.level_weights.is_empty() {
            return Err(fmt_err(path, "missing level weights"));
        }
        if let Some(HostTensor::I64(c, _)) = tensors.get("latents_activation_frequency") {
            if c.len() == n {
                sae.stats.counts = c.iter().map(|&v| v.max(0) as u64).collect();
            }
        }
        sae.stats.num_updates = meta.num_updates;
        Ok(sae)
    }
}

pub(crate) const MODEL_FORMAT: &str = "msae-sae-v1";

/// Model metadata stored in the safetensors header and the JSON side file.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ModelMeta {
    pub format: String,
    pub config: TrainConfig,
    pub d: usize,
    pub n: usize,
    pub scale: f32,
    pub target_norm: f32,
    pub num_updates: u64,
    pub batchtopk_threshold: Option<f64>,
    pub levels: Vec<usize>,
    pub level_weights: Vec<f64>,
}

pub(crate) fn fmt_err(path: &Path, msg: &str) -> SaeError {
    SaeError::Format {
        path: path.into(),
        msg: msg.into(),
    }
}

/// A tensor copied to the host, as stored in safetensors files.
#[derive(Debug, Clone)]
pub(crate) enum HostTensor {
    F32(Vec<f32>, Vec<usize>),
    F64(Vec<f64>, Vec<usize>),
    I64(Vec<i64>, Vec<usize>),
}

impl HostTensor {
    pub(crate) fn from_tensor(t: &Tensor) -> Result<Self> {
        Ok(HostTensor::F32(
            t.flatten_all()?.to_vec1::<f32>()?,
            t.dims().to_vec(),
        ))
    }

    pub(crate) fn to_tensor(&self, shape: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            HostTensor::F32(v, s) if s == shape => Ok(Tensor::from_slice(v, shape, device)?),
            _ => Err(SaeError::Data("tensor shape or type mismatch".into())),
        }
    }

    fn bytes(&self) -> (safetensors::Dtype, &[usize], Vec<u8>) {
        match self {
            HostTensor::F32(v, s) => (
                safetensors::Dtype::F32,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            HostTensor::F64(v, s) => (
                safetensors::Dtype::F64,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            HostTensor::I64(v, s) => (
                safetensors::Dtype::I64,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        }
    }
}

/// Serialise host tensors (and string metadata) to safetensors bytes.
pub(crate) fn serialize_host(
    tensors: &[(String, HostTensor)],
    info: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<Vec<u8>> {
    let raw: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let (dt, s, b) = t.bytes();
            (n.clone(), dt, s.to_vec(), b)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(n, dt, s, b)| {
            safetensors::tensor::TensorView::new(*dt, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| fmt_err(path, &e.to_string()))?;
    safetensors::tensor::serialize(views, info).map_err(|e| fmt_err(path, &e.to_string()))
}

/// Parse safetensors bytes into metadata and host tensors (f32, f64 and i64 only).
pub(crate) fn read_safetensors(
    bytes: &[u8],
    path: &Path,
) -> Result<(HashMap<String, String>, HashMap<String, HostTensor>)> {
    let st =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| fmt_err(path, &e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| fmt_err(path, &e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            safetensors::Dtype::F32 => HostTensor::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                shape,
            ),
            safetensors::Dtype::F64 => HostTensor::F64(
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
                shape,
            ),
            safetensors::Dtype::I64 => HostTensor::I64(
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
                shape,
            ),
            other => return Err(fmt_err(path, &format!("unsupported dtype {other:?}"))),
        };
        out.insert(name, t);
    }
    Ok((meta, out))
}

/// Write `bytes` to `path` atomically: temporary sibling, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |e: std::io::Error| SaeError::Io {
        path: path.into(),
        source: e,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(arch: Arch, n: usize) -> TrainConfig {
        TrainConfig {
            arch,
            n_latents: Some(n),
            k: Some(3),
            nesting_start: 2,
            ..Default::default()
        }
    }

    #[test]
    fn save_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        for arch in [Arch::Jumprelu, Arch::Msae, Arch::Batchtopk] {
            let mut m = Sae::new(&cfg(arch, 8), 4, &Device::Cpu).unwrap();
            m.standardization = Standardization {
                mean: vec![1.0, 2.0, 3.0, 4.0],
                scale: 0.5,
            };
            m.batchtopk_threshold = Some(0.25);
            m.stats.counts[3] = 7;
            m.stats.num_updates = 9;
            let path = dir.path().join("m.safetensors");
            m.save(&path).unwrap();
            assert!(dir.path().join("m.json").exists());
            let l = Sae::load(&path, &Device::Cpu).unwrap();
            assert_eq!(
                l.decoder.to_vec2::<f32>().unwrap(),
                m.decoder.to_vec2::<f32>().unwrap()
            );
            assert_eq!(
                l.encoder.to_vec2::<f32>().unwrap(),
                m.encoder.to_vec2::<f32>().unwrap()
            );
            assert_eq!(l.standardization, m.standardization);
            assert_eq!(l.stats, m.stats);
            assert_eq!(l.levels, m.levels);
            assert_eq!(l.batchtopk_threshold, Some(0.25));
            assert_eq!(l.threshold_param.is_some(), arch == Arch::Jumprelu);
        }
        assert!(Sae::load(&dir.path().join("missing"), &Device::Cpu).is_err());
        std::fs::write(dir.path().join("bad"), b"garbage").unwrap();
        assert!(Sae::load(&dir.path().join("bad"), &Device::Cpu).is_err());
    }
}
