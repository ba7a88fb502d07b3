//! The autoencoder (docs/reference.md §4): parameters, initialisation, forward passes (training
//! and evaluation forms), the hand-written backward pass, decoder-norm handling and activation
//! statistics. Saving and loading as safetensors is the `serialize` module.
//!
//! Shapes: `pre_bias` \[d\], `encoder` \[d, n\], `latent_bias` \[n\], `decoder` \[n, d\].
//! Forward:
//! `P = (X − b_pre)·W_enc + b_lat`, `Z = cap(act(P))`, `X̂ = Z·W_dec + b_pre`.

use candle_core::{DType, Device, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::sae::config::{Arch, BatchTopkInference, InitMethod, MsaeWeighting, TrainConfig};
use crate::sae::model::activation::Coded;
use crate::sae::model::loss::LossGrad;
use crate::sae::{Result, SaeError};

pub mod activation;
pub(crate) mod aux_k;
pub(crate) mod jumprelu;
pub mod loss;
mod serialize;
mod sparse_rows;
pub mod topk_generic;

pub use sparse_rows::{SparseRows, SparseRowsScratch};

pub use serialize::ModelMeta;
pub(crate) use serialize::{
    fmt_err, read_safetensors, serialize_host, write_atomic, HostTensor, MODEL_FORMAT,
};

/// Matryoshka nesting list (docs/reference.md §4.8): `[start]`, doubled while the double is ≤ n,
/// then n appended.
pub fn nesting_list(start: usize, n: usize) -> Vec<usize> {
    let mut v = vec![start.min(n)];
    while let Some(&last) = v.last() {
        if last * 2 <= n {
            v.push(last * 2);
        } else {
            break;
        }
    }
    if *v.last().unwrap_or(&0) != n {
        v.push(n);
    }
    v
}

/// Matryoshka level weights (unnormalised) for `levels` levels.
pub fn level_weights(w: MsaeWeighting, levels: usize) -> Vec<f64> {
    match w {
        MsaeWeighting::Uw => vec![1.0; levels],
        MsaeWeighting::Rw => (1..=levels).rev().map(|x| x as f64).collect(),
        MsaeWeighting::RwFixed => (1..=levels).map(|x| x as f64).collect(),
    }
}

/// Standardisation `x ↦ (x − mean)·scale` applied to every row before the model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Standardization {
    pub mean: Vec<f32>,
    pub scale: f32,
}

impl Standardization {
    /// The identity (μ = 0, s = 1) for width `d`.
    pub fn identity(d: usize) -> Self {
        Standardization {
            mean: vec![0.0; d],
            scale: 1.0,
        }
    }

    /// Apply to a [B, d] batch on its device.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let mu = Tensor::from_slice(&self.mean, self.mean.len(), x.device())?;
        Ok((x.broadcast_sub(&mu)? * self.scale as f64)?)
    }
}

/// Per-latent counts of non-zero activations (docs/reference.md §4.7).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ActivationStats {
    pub counts: Vec<u64>,
    pub num_updates: u64,
}

impl ActivationStats {
    fn new(n: usize) -> Self {
        ActivationStats {
            counts: vec![0; n],
            num_updates: 0,
        }
    }

    /// Add the non-zero pattern of a code [B, n].
    pub fn update(&mut self, z: &Tensor) -> Result<()> {
        let c = z.ne(0f32)?.to_dtype(DType::F32)?.sum(0)?.to_vec1::<f32>()?;
        for (a, b) in self.counts.iter_mut().zip(c) {
            *a += b as u64;
        }
        self.num_updates += z.dim(0)? as u64;
        Ok(())
    }

    /// Frequencies `count/num_updates` since the last reset.
    pub fn frequencies(&self) -> Vec<f64> {
        let nu = self.num_updates.max(1) as f64;
        self.counts.iter().map(|&c| c as f64 / nu).collect()
    }

    /// Frequencies `count/num_updates`, then reset (reference `get_and_reset_stats`).
    pub fn take_frequencies(&mut self) -> Vec<f64> {
        let f = self.frequencies();
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.num_updates = 0;
        f
    }
}

/// Number of latents whose frequency is below `threshold`.
pub fn count_dead(freq: &[f64], threshold: f64) -> usize {
    freq.iter().filter(|f| f.abs() < threshold).count()
}

/// One sparse level of a training forward pass.
#[derive(Debug, Clone)]
pub struct Level {
    /// Capped code.
    pub z: Tensor,
    /// d(activation)/dP elementwise.
    pub dact: Tensor,
    /// d(cap)/d(activation) elementwise, when a soft cap is active.
    pub dcap: Option<Tensor>,
    /// Reconstruction `z·W_dec + b_pre`.
    pub recon: Tensor,
}

/// Everything the backward pass needs from a training forward pass.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Standardised input.
    pub x: Tensor,
    /// `x − b_pre`.
    pub xc: Tensor,
    /// Pre-activation.
    pub p: Tensor,
    /// One level for plain SAEs, L levels for Matryoshka.
    pub levels: Vec<Level>,
}

/// Evaluation outputs (docs/reference.md §4.2): sparse code and reconstruction, dense ("eval
/// form") code and reconstruction. For ReLU and JumpReLU sparse and dense coincide; for
/// Matryoshka the sparse pair is the first (smallest-k) level.
#[derive(Debug, Clone)]
pub struct EvalOut {
    pub sparse_code: Tensor,
    pub sparse_recon: Tensor,
    pub dense_code: Tensor,
    pub dense_recon: Tensor,
}

/// Gradients, in the parameter order pre_bias, encoder, latent_bias, decoder, \[threshold
/// parameter\].
#[derive(Debug, Clone)]
pub struct Grads(pub Vec<Tensor>);

/// Scalar losses of one step (0-d tensors on the model device).
#[derive(Debug, Clone)]
pub struct LossParts {
    /// Optimised loss.
    pub total: Tensor,
    /// Reconstruction part (weighted over levels for Matryoshka).
    pub rec: Tensor,
    /// Sparsity part before weighting by λ (0 when unused).
    pub sparsity: Tensor,
}

/// A sparse autoencoder of any supported architecture.
///
/// Training on the CPU updates the parameter tensors where they lie (see `host`), so a tensor
/// taken from a model shares the model's later values; [`Sae::copy`] gives an independent
/// model, and `Tensor::copy` an independent tensor.
#[derive(Debug)]
pub struct Sae {
    pub config: TrainConfig,
    pub d: usize,
    pub n: usize,
    pub pre_bias: Tensor,
    pub encoder: Tensor,
    pub latent_bias: Tensor,
    pub decoder: Tensor,
    /// JumpReLU threshold parameter \[n\]: log θ or θ, as `config.jumprelu_param` says
    /// ([`Sae::thresholds`] gives θ).
    pub threshold_param: Option<Tensor>,
    /// Matryoshka nesting list (empty for other archs).
    pub levels: Vec<usize>,
    /// Matryoshka weights normalised to sum 1 (`[1.0]` for other archs).
    pub level_weights: Vec<f64>,
    /// BatchTopK global threshold estimate (EMA of the per-batch minimum kept activation).
    pub batchtopk_threshold: Option<f64>,
    pub stats: ActivationStats,
    /// Standardisation of the training data (stored with the model).
    pub standardization: Standardization,
    /// Reference `target_norm` (√d unless set by the caller).
    pub target_norm: f32,
}

impl Sae {
    /// A freshly initialised model for input width `d` (docs/reference.md §4.5).
    pub fn new(config: &TrainConfig, d: usize, device: &Device) -> Result<Self> {
        config.validate(d)?;
        let n = config.n_latents(d);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut w = vec![0f32; n * d];
        match config.init {
            InitMethod::Kaiming | InitMethod::Xavier | InitMethod::Uniform => {
                let b = match config.init {
                    InitMethod::Kaiming => 2f64.sqrt() * (3.0 / d as f64).sqrt(),
                    InitMethod::Xavier => 2f64.sqrt() * (6.0 / (n + d) as f64).sqrt(),
                    _ => 1.0,
                } as f32;
                w.iter_mut().for_each(|v| *v = rng.random_range(-b..b));
            }
            InitMethod::Normal => w
                .iter_mut()
                .for_each(|v| *v = StandardNormal.sample(&mut rng)),
        }
        for row in w.chunks_mut(d) {
            let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let f = if norm > 0.0 {
                config.init_norm / norm
            } else {
                0.0
            };
            row.iter_mut().for_each(|v| *v = (*v as f64 * f) as f32);
        }
        let decoder = Tensor::from_vec(w, (n, d), device)?;
        let encoder = decoder.t()?.contiguous()?;
        let threshold_param = if config.arch == Arch::Jumprelu {
            Some(jumprelu::initial_param(config, &decoder)?)
        } else {
            None
        };
        let (levels, level_weights) = if config.arch == Arch::Msae {
            let l = nesting_list(config.nesting_start, n);
            let w = loss::normalised_weights(&level_weights(config.msae_weighting, l.len()));
            (l, w)
        } else {
            (vec![], vec![1.0])
        };
        Ok(Sae {
            config: config.clone(),
            d,
            n,
            pre_bias: Tensor::zeros(d, DType::F32, device)?,
            encoder,
            latent_bias: Tensor::full(config.latent_bias_init as f32, n, device)?,
            decoder,
            threshold_param,
            levels,
            level_weights,
            batchtopk_threshold: None,
            stats: ActivationStats::new(n),
            standardization: Standardization::identity(d),
            target_norm: (d as f32).sqrt(),
        })
    }

    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// An independent copy: the parameters in new storage.
    pub fn copy(&self) -> Result<Self> {
        Ok(Sae {
            config: self.config.clone(),
            d: self.d,
            n: self.n,
            pre_bias: self.pre_bias.copy()?,
            encoder: self.encoder.copy()?,
            latent_bias: self.latent_bias.copy()?,
            decoder: self.decoder.copy()?,
            threshold_param: self
                .threshold_param
                .as_ref()
                .map(Tensor::copy)
                .transpose()?,
            levels: self.levels.clone(),
            level_weights: self.level_weights.clone(),
            batchtopk_threshold: self.batchtopk_threshold,
            stats: self.stats.clone(),
            standardization: self.standardization.clone(),
            target_norm: self.target_norm,
        })
    }

    /// Parameters in optimiser order.
    pub fn params(&self) -> Vec<&Tensor> {
        let mut v = vec![
            &self.pre_bias,
            &self.encoder,
            &self.latent_bias,
            &self.decoder,
        ];
        if let Some(t) = &self.threshold_param {
            v.push(t);
        }
        v
    }

    /// Mutable parameters in optimiser order.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = vec![
            &mut self.pre_bias,
            &mut self.encoder,
            &mut self.latent_bias,
            &mut self.decoder,
        ];
        if let Some(t) = &mut self.threshold_param {
            v.push(t);
        }
        v
    }

    /// Names of the parameters, in optimiser order.
    pub fn param_names(&self) -> Vec<&'static str> {
        let mut v = vec!["pre_bias", "encoder", "latent_bias", "decoder"];
        if self.threshold_param.is_some() {
            v.push(jumprelu::param_name(self.config.jumprelu_param));
        }
        v
    }

    /// The JumpReLU thresholds θ \[n\] (None for other architectures); a latent whose θ is
    /// below 0 (possible when θ is trained directly) acts as θ = 0.
    pub fn thresholds(&self) -> Result<Option<Tensor>> {
        self.threshold_param
            .as_ref()
            .map(|t| jumprelu::theta(self.config.jumprelu_param, t))
            .transpose()
    }

    /// Pre-activation `(x − b_pre)·W_enc + b_lat` and the centred input.
    fn pre_activation(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let xc = x.broadcast_sub(&self.pre_bias)?;
        let p = xc.matmul(&self.encoder)?.broadcast_add(&self.latent_bias)?;
        Ok((xc, p))
    }

    /// `z·W_dec + b_pre`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.matmul(&self.decoder)?.broadcast_add(&self.pre_bias)?)
    }

    fn cap(&self, c: Coded) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (z, dcap) = activation::soft_cap(&c.z, self.config.soft_cap)?;
        Ok((z, c.dz, dcap))
    }

    /// Training code(s) of a pre-activation.
    fn train_codes(&self, p: &Tensor) -> Result<Vec<Coded>> {
        let v = self.config.topk_variant;
        Ok(match self.config.arch {
            Arch::Relu => vec![activation::relu(p)?],
            Arch::Topk => vec![activation::topk(p, self.config.k(), v)?],
            Arch::Batchtopk => vec![activation::batch_topk(p, self.config.k(), v)?],
            Arch::Jumprelu => {
                let theta = self
                    .thresholds()?
                    .ok_or_else(|| SaeError::Config("JumpReLU model without thresholds".into()))?;
                vec![activation::jumprelu(p, &theta.relu()?)?]
            }
            Arch::Msae => self
                .levels
                .iter()
                .map(|&k| activation::topk(p, k, v))
                .collect::<Result<Vec<_>>>()?,
        })
    }

    /// Training forward pass on a standardised batch (no statistics update).
    pub fn forward_train(&self, x: &Tensor) -> Result<Forward> {
        let (xc, p) = self.pre_activation(x)?;
        let mut levels = Vec::new();
        for c in self.train_codes(&p)? {
            let (z, dact, dcap) = self.cap(c)?;
            let recon = self.decode(&z)?;
            levels.push(Level {
                z,
                dact,
                dcap,
                recon,
            });
        }
        Ok(Forward {
            x: x.clone(),
            xc,
            p,
            levels,
        })
    }

    /// Evaluation forward pass (sparse and dense outputs) on a standardised batch.
    pub fn forward_eval(&self, x: &Tensor) -> Result<EvalOut> {
        let (_, p) = self.pre_activation(x)?;
        let sparse_code = self.sparse_eval_code(&p)?;
        let sparse_recon = self.decode(&sparse_code)?;
        let (dense_code, dense_recon) = match self.config.arch {
            Arch::Relu | Arch::Jumprelu => (sparse_code.clone(), sparse_recon.clone()),
            _ => {
                let dz = self.dense_eval_code(&p)?;
                let r = self.decode(&dz)?;
                (dz, r)
            }
        };
        Ok(EvalOut {
            sparse_code,
            sparse_recon,
            dense_code,
            dense_recon,
        })
    }

    /// The sparse evaluation code of a pre-activation (what the model reconstructs from).
    fn sparse_eval_code(&self, p: &Tensor) -> Result<Tensor> {
        let v = self.config.topk_variant;
        let sparse = match self.config.arch {
            Arch::Relu => activation::relu(p)?,
            Arch::Topk => activation::topk(p, self.config.k(), v)?,
            Arch::Msae => activation::topk(p, self.levels[0], v)?,
            Arch::Batchtopk => match (self.config.batchtopk_inference, self.batchtopk_threshold) {
                (BatchTopkInference::Threshold, Some(t)) => {
                    activation::batch_threshold(p, t as f32, v)?
                }
                _ => activation::batch_topk(p, self.config.k(), v)?,
            },
            Arch::Jumprelu => self.train_codes(p)?.remove(0),
        };
        Ok(self.cap(sparse)?.0)
    }

    /// The dense evaluation code of the top-k family: the activation without its selection.
    fn dense_eval_code(&self, p: &Tensor) -> Result<Tensor> {
        let v = self.config.topk_variant;
        Ok(activation::soft_cap(&activation::eval_form(p, v)?, self.config.soft_cap)?.0)
    }

    /// The evaluation code of a standardised batch without decoding it: exactly the
    /// `sparse_code` (or, with `dense`, the `dense_code`) of [`Sae::forward_eval`].
    pub fn eval_code(&self, x: &Tensor, dense: bool) -> Result<Tensor> {
        let (_, p) = self.pre_activation(x)?;
        if dense && !matches!(self.config.arch, Arch::Relu | Arch::Jumprelu) {
            self.dense_eval_code(&p)
        } else {
            self.sparse_eval_code(&p)
        }
    }

    /// The sparse evaluation code as host rows (row-major), for readers that only need its
    /// values. Where [`Sae::sparse_rows_host`] applies it is built from those entries instead
    /// of candle's chain of elementwise operations; the values equal [`Sae::eval_code`]'s,
    /// except that entries not kept are always +0.0 where that path can hold −0.0.
    pub fn sparse_code_host(&self, x: &Tensor) -> Result<Vec<f32>> {
        match self.sparse_rows_host(x)? {
            Some(rows) => Ok(rows.to_dense(self.n)),
            None => Ok(self.eval_code(x, false)?.flatten_all()?.to_vec1()?),
        }
    }

    /// Matryoshka levels in evaluation (docs/reference.md §4.8): for every nesting level k_i, in
    /// ascending order, `(k_i, Z_i, X̂_i)` with `Z_i = cap(TopK_{k_i}(P))` and
    /// `X̂_i = Z_i·W_dec + b_pre`. Lazy, so that only one level's [B, n] code is alive at a time;
    /// empty for other architectures.
    pub fn level_outputs(
        &self,
        x: &Tensor,
    ) -> Result<impl Iterator<Item = Result<(usize, Tensor, Tensor)>> + '_> {
        let (_, p) = self.pre_activation(x)?;
        let v = self.config.topk_variant;
        Ok(self.levels.iter().map(move |&k| {
            let (z, _, _) = self.cap(activation::topk(&p, k, v)?)?;
            let recon = self.decode(&z)?;
            Ok((k, z, recon))
        }))
    }

    /// Dense code restricted to its k largest entries per row (reference `encode(x, k)`), then
    /// capped.
    pub fn dense_code_topk(&self, x: &Tensor, k: Option<usize>) -> Result<Tensor> {
        let (_, p) = self.pre_activation(x)?;
        let v = self.config.topk_variant;
        let dense = match self.config.arch {
            Arch::Relu => p.relu()?,
            Arch::Jumprelu => self.train_codes(&p)?.remove(0).z,
            _ => activation::eval_form(&p, v)?,
        };
        let dense = match k {
            Some(k) if k > 0 && k < self.n => {
                (activation::row_topk_mask(&dense, k, false)? * &dense)?
            }
            _ => dense,
        };
        Ok(activation::soft_cap(&dense, self.config.soft_cap)?.0)
    }

    /// Loss of a training forward pass and the gradients of all parameters.
    ///
    /// `nmse_reference`: the nmse reference vector (None = zero, mean-centred data).
    pub fn loss_and_grads(
        &self,
        fwd: &Forward,
        nmse_reference: Option<&Tensor>,
    ) -> Result<(LossParts, Grads)> {
        let (parts, grads, _) = self.loss_and_grads_aux(fwd, nmse_reference, &[])?;
        Ok((parts, grads))
    }

    /// [`Sae::loss_and_grads`] with the auxiliary dead-latent loss ([`aux_k`]) over the dead
    /// latents `dead` (ascending) when the configuration turns it on; its weighted value is
    /// returned beside the parts (whose total includes it).
    pub(crate) fn loss_and_grads_aux(
        &self,
        fwd: &Forward,
        nmse_reference: Option<&Tensor>,
        dead: &[u32],
    ) -> Result<(LossParts, Grads, Option<Tensor>)> {
        let cfg = &self.config;
        let dev = self.device();
        let lambda = cfg.sparsity_weight();
        let mut rec_total: Option<Tensor> = None;
        let mut sparsity = Tensor::zeros((), DType::F32, dev)?;
        let mut g_dec: Option<Tensor> = None;
        let mut g_pre = Tensor::zeros(self.d, DType::F32, dev)?;
        let mut d_p: Option<Tensor> = None;
        let mut g_logt: Option<Tensor> = None;
        for (li, level) in fwd.levels.iter().enumerate() {
            let w = self.level_weights[li];
            let LossGrad { value, grad } =
                loss::reconstruction(cfg.loss, &level.recon, &fwd.x, nmse_reference, true)?;
            let grad = grad.ok_or_else(|| SaeError::Config("missing gradient".into()))?;
            let value = (value * w)?;
            rec_total = Some(match rec_total {
                Some(r) => (r + value)?,
                None => value,
            });
            let g = if w == 1.0 { grad } else { (grad * w)? };
            let gd = level.z.t()?.matmul(&g)?;
            g_dec = Some(match g_dec {
                Some(a) => (a + gd)?,
                None => gd,
            });
            g_pre = (g_pre + g.sum(0)?)?;
            // Gradient with respect to the capped code.
            let mut dz = g.matmul(&self.decoder.t()?)?;
            if li == 0 && cfg.arch == Arch::Relu && lambda != 0.0 {
                let sp = loss::l1(&level.z, &fwd.x, true)?;
                sparsity = sp.value;
                if let Some(sg) = sp.grad {
                    dz = (dz + (sg * lambda)?)?;
                }
            }
            // Through the soft cap to the activation output.
            let dj = match &level.dcap {
                Some(c) => (dz * c)?,
                None => dz,
            };
            if cfg.arch == Arch::Jumprelu {
                let theta = self
                    .thresholds()?
                    .ok_or_else(|| SaeError::Config("JumpReLU model without thresholds".into()))?;
                g_logt = Some(jumprelu::grad(cfg, &theta, &fwd.p, &dj, lambda)?);
                sparsity = loss::l0(&level.dact)?;
            }
            let dp = (dj * &level.dact)?;
            d_p = Some(match d_p {
                Some(a) => (a + dp)?,
                None => dp,
            });
        }
        let mut d_p = d_p.ok_or_else(|| SaeError::Config("model produced no level".into()))?;
        let mut g_dec = g_dec.ok_or_else(|| SaeError::Config("model produced no level".into()))?;
        // The auxiliary loss reconstructs the residual of the last (fullest) level.
        let aux = match fwd.levels.last() {
            Some(last) if !dead.is_empty() => {
                aux_k::tensor_terms(self, &fwd.p, &fwd.x, &last.recon, dead, nmse_reference)?
            }
            _ => None,
        };
        if let Some(t) = &aux {
            d_p = (d_p + &t.d_p)?;
            g_dec = (g_dec + &t.g_dec)?;
        }
        let g_lat = d_p.sum(0)?;
        let g_enc = fwd.xc.t()?.matmul(&d_p)?;
        // P depends on b_pre through −b_pre·W_enc.
        let g_pre = (g_pre - self.encoder.matmul(&g_lat.unsqueeze(1)?)?.squeeze(1)?)?;
        let rec = rec_total.ok_or_else(|| SaeError::Config("model produced no level".into()))?;
        let mut total = if lambda != 0.0 && matches!(cfg.arch, Arch::Relu | Arch::Jumprelu) {
            (&rec + (&sparsity * lambda)?)?
        } else {
            rec.clone()
        };
        if let Some(t) = &aux {
            total = (total + &t.value)?;
        }
        let mut grads = vec![g_pre, g_enc, g_lat, g_dec];
        if let Some(g) = g_logt {
            grads.push(g);
        }
        Ok((
            LossParts {
                total,
                rec,
                sparsity,
            },
            Grads(grads),
            aux.map(|t| t.value),
        ))
    }

    /// Record the non-zero pattern of a code (the last level for Matryoshka).
    pub fn update_stats(&mut self, z: &Tensor) -> Result<()> {
        self.stats.update(z)
    }

    /// Update the BatchTopK threshold estimate with a training code.
    pub fn update_batchtopk_threshold(&mut self, z: &Tensor) -> Result<()> {
        self.record_batchtopk_min(activation::min_positive(z)?);
        Ok(())
    }

    /// Update the BatchTopK threshold estimate with the smallest positive value of a training
    /// code (none: no positive value, no update).
    pub(crate) fn record_batchtopk_min(&mut self, min_positive: Option<f32>) {
        if let Some(m) = min_positive {
            let mom = self.config.batchtopk_threshold_momentum;
            self.batchtopk_threshold = Some(match self.batchtopk_threshold {
                Some(t) => mom * t + (1.0 - mom) * m as f64,
                None => m as f64,
            });
        }
    }

    /// Rescale decoder rows to unit norm, compensating in the encoder columns, the latent bias
    /// and the JumpReLU thresholds (docs/reference.md §4.6): `r_j = ‖W_dec[j]‖ + ε_f32`.
    pub fn scale_to_unit_norm(&mut self) -> Result<()> {
        let r = jumprelu::row_factors(&self.decoder)?;
        self.decoder = self.decoder.broadcast_div(&r.unsqueeze(1)?)?;
        self.encoder = self.encoder.broadcast_mul(&r.unsqueeze(0)?)?;
        self.latent_bias = (&self.latent_bias * &r)?;
        if let Some(t) = &self.threshold_param {
            self.threshold_param = Some(jumprelu::rescaled(self.config.jumprelu_param, t, &r)?);
        }
        Ok(())
    }

    /// Remove from the decoder gradient its component along each (unit) decoder row:
    /// `g_j ← g_j − (g_j·w_j) w_j`.
    pub fn project_decoder_grad(&self, g_dec: &Tensor) -> Result<Tensor> {
        let dot = (g_dec * &self.decoder)?.sum_keepdim(D::Minus1)?;
        Ok((g_dec - self.decoder.broadcast_mul(&dot)?)?)
    }
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
    fn the_undecoded_code_is_the_evaluation_code() {
        let x = Tensor::randn(0f32, 1.0, (9, 10), &Device::Cpu).unwrap();
        for arch in [
            Arch::Relu,
            Arch::Topk,
            Arch::Batchtopk,
            Arch::Jumprelu,
            Arch::Msae,
        ] {
            let m = Sae::new(&cfg(arch, 24), 10, &Device::Cpu).unwrap();
            let out = m.forward_eval(&x).unwrap();
            for (dense, expected) in [(false, &out.sparse_code), (true, &out.dense_code)] {
                let got: Vec<f32> = m
                    .eval_code(&x, dense)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let want: Vec<f32> = expected.flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(got, want, "{arch:?} dense={dense}");
            }
            // The host form: the same values, an unkept entry +0.0 rather than −0.0.
            let host = m.sparse_code_host(&x).unwrap();
            let want: Vec<f32> = out.sparse_code.flatten_all().unwrap().to_vec1().unwrap();
            let plus_zero = |v: &Vec<f32>| -> Vec<f32> { v.iter().map(|&u| u + 0.0).collect() };
            assert_eq!(plus_zero(&host), plus_zero(&want), "{arch:?} host");
        }
    }

    #[test]
    fn nesting_lists_of_the_reference_table() {
        assert_eq!(
            nesting_list(64, 6144),
            vec![64, 128, 256, 512, 1024, 2048, 4096, 6144]
        );
        assert_eq!(
            nesting_list(64, 4096),
            vec![64, 128, 256, 512, 1024, 2048, 4096]
        );
        assert_eq!(
            nesting_list(64, 3072),
            vec![64, 128, 256, 512, 1024, 2048, 3072]
        );
        assert_eq!(nesting_list(64, 12288).len(), 9);
        assert_eq!(nesting_list(64, 24576).last(), Some(&24576));
        assert_eq!(nesting_list(64, 24576).len(), 10);
        assert_eq!(nesting_list(64, 16384).len(), 9);
    }

    #[test]
    fn weights() {
        assert_eq!(
            level_weights(MsaeWeighting::Rw, 8),
            vec![8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
        );
        assert_eq!(
            level_weights(MsaeWeighting::RwFixed, 3),
            vec![1.0, 2.0, 3.0]
        );
        assert_eq!(level_weights(MsaeWeighting::Uw, 2), vec![1.0, 1.0]);
    }

    #[test]
    fn init_rows_have_norm_point_one_and_encoder_is_transpose() {
        for init in [
            InitMethod::Kaiming,
            InitMethod::Xavier,
            InitMethod::Uniform,
            InitMethod::Normal,
        ] {
            let mut c = cfg(Arch::Topk, 24);
            c.init = init;
            let m = Sae::new(&c, 10, &Device::Cpu).unwrap();
            let w = m.decoder.to_vec2::<f32>().unwrap();
            for row in &w {
                let nrm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((nrm - 0.1).abs() < 1e-6);
            }
            let e = m.encoder.to_vec2::<f32>().unwrap();
            assert_eq!(e[3][5], w[5][3]);
        }
        // Kaiming entries are bounded by √2·√(3/d) before rescaling: check determinism instead.
        let a = Sae::new(&cfg(Arch::Topk, 24), 10, &Device::Cpu).unwrap();
        let b = Sae::new(&cfg(Arch::Topk, 24), 10, &Device::Cpu).unwrap();
        assert_eq!(
            a.decoder.to_vec2::<f32>().unwrap(),
            b.decoder.to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn unit_norm_and_projection() {
        let mut m = Sae::new(&cfg(Arch::Jumprelu, 6), 4, &Device::Cpu).unwrap();
        m.latent_bias = Tensor::new(&[1f32, 2., 3., 4., 5., 6.], &Device::Cpu).unwrap();
        let x = Tensor::new(&[[0.3f32, -0.2, 0.5, 0.1]], &Device::Cpu).unwrap();
        let p_before = m.pre_activation(&x).unwrap().1.to_vec2::<f32>().unwrap();
        // The initial model holds θ₀/r, so that the renormalisation lands θ on θ₀ = 0.001.
        let r = 0.1 + f32::EPSILON;
        let th = m.thresholds().unwrap().unwrap().to_vec1::<f32>().unwrap();
        assert!((th[0] - 0.001 / r).abs() < 1e-7, "{th:?}");
        m.scale_to_unit_norm().unwrap();
        for row in m.decoder.to_vec2::<f32>().unwrap() {
            let nrm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((nrm - 1.0).abs() < 1e-5);
        }
        // Pre-activations scale by r = 0.1 + ε (the old row norm), bias likewise; θ follows.
        let p_after = m.pre_activation(&x).unwrap().1.to_vec2::<f32>().unwrap();
        for j in 0..6 {
            assert!((p_after[0][j] - p_before[0][j] * r).abs() < 1e-5);
        }
        let th = m.thresholds().unwrap().unwrap().to_vec1::<f32>().unwrap();
        assert!(th.iter().all(|t| (t - 0.001).abs() < 1e-9), "{th:?}");
        // Projection removes the radial component: (g − (g·w)w)·w = 0.
        let g = Tensor::ones((6, 4), DType::F32, &Device::Cpu).unwrap();
        let pg = m.project_decoder_grad(&g).unwrap();
        let dots = (pg * &m.decoder)
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(dots.iter().all(|d| d.abs() < 1e-5));
    }

    /// Gradients of the hand-written backward pass against central finite differences of the
    /// loss in f32 (loose tolerance) for every architecture without selection changes.
    #[test]
    fn gradients_match_finite_differences() {
        for arch in [Arch::Relu, Arch::Topk, Arch::Msae, Arch::Batchtopk] {
            for lossk in [
                crate::sae::config::RecLoss::Nmse,
                crate::sae::config::RecLoss::Mse,
                crate::sae::config::RecLoss::Cosine,
            ] {
                let mut c = cfg(arch, 8);
                c.loss = lossk;
                c.soft_cap = if arch == Arch::Topk { 2.0 } else { 0.0 };
                c.sparsity_weight = Some(0.05);
                let mut m = Sae::new(&c, 5, &Device::Cpu).unwrap();
                m.scale_to_unit_norm().unwrap();
                m.pre_bias = Tensor::new(&[0.1f32, -0.2, 0.05, 0.0, 0.3], &Device::Cpu).unwrap();
                m.latent_bias = Tensor::new(
                    &[0.1f32, 0.2, -0.1, 0.3, 0.0, 0.05, 0.15, -0.05],
                    &Device::Cpu,
                )
                .unwrap();
                let xs: Vec<f32> = (0..15).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
                let x = Tensor::from_vec(xs, (3, 5), &Device::Cpu).unwrap();
                let fwd = m.forward_train(&x).unwrap();
                let (_, grads) = m.loss_and_grads(&fwd, None).unwrap();
                let loss_at = |m: &Sae| -> f64 {
                    let f = m.forward_train(&x).unwrap();
                    m.loss_and_grads(&f, None)
                        .unwrap()
                        .0
                        .total
                        .to_scalar::<f32>()
                        .unwrap() as f64
                };
                let h = 2e-3f32;
                for (pi, g) in grads.0.iter().enumerate() {
                    let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let base = m.params()[pi].clone();
                    let shape = base.dims().to_vec();
                    let vals = base.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    for idx in (0..vals.len()).step_by(3) {
                        let mut plus = vals.clone();
                        plus[idx] += h;
                        let mut minus = vals.clone();
                        minus[idx] -= h;
                        let mut mp = m.copy().unwrap();
                        *mp.params_mut()[pi] =
                            Tensor::from_vec(plus, shape.as_slice(), &Device::Cpu).unwrap();
                        let lp = loss_at(&mp);
                        *mp.params_mut()[pi] =
                            Tensor::from_vec(minus, shape.as_slice(), &Device::Cpu).unwrap();
                        let lm = loss_at(&mp);
                        let fd = (lp - lm) / (2.0 * h as f64);
                        let tol = 1e-3 + 1e-2 * fd.abs();
                        assert!(
                            (g[idx] as f64 - fd).abs() < tol,
                            "{arch:?} {lossk:?} param {pi} idx {idx}: {} vs {fd}",
                            g[idx]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn eval_forms() {
        let m = Sae::new(&cfg(Arch::Msae, 8), 4, &Device::Cpu).unwrap();
        let x = Tensor::new(&[[0.3f32, -0.2, 0.5, 0.1]], &Device::Cpu).unwrap();
        let e = m.forward_eval(&x).unwrap();
        let sparse = e.sparse_code.to_vec2::<f32>().unwrap();
        assert!(sparse[0].iter().filter(|v| **v != 0.0).count() <= 2);
        let dense = e.dense_code.to_vec2::<f32>().unwrap();
        assert!(dense[0].iter().all(|v| *v >= 0.0));
        let k1 = m
            .dense_code_topk(&x, Some(1))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!(k1[0].iter().filter(|v| **v != 0.0).count() <= 1);
    }
}
