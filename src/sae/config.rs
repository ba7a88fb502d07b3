//! Training configuration: every knob of the reference trainer, with the reference defaults, plus
//! named switches for the places where the reference behaviour is known to be wrong.
//!
//! All fields are optional in TOML/JSON (`#[serde(default)]`); architecture-dependent defaults
//! (learning rate, k, sparsity weight) are `None` in the struct and resolved by the accessor
//! methods, so a stored configuration records exactly what the user asked for.

use serde::{Deserialize, Serialize};

use crate::sae::SaeError;

/// SAE architecture.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// ReLU code with an L1 penalty (reference `ReLUSAE`).
    Relu,
    /// Per-row top-k (reference `TopKSAE`).
    #[default]
    Topk,
    /// Batch-level top-(k·B) (reference `BatchTopKSAE`).
    Batchtopk,
    /// JumpReLU with learned per-latent thresholds and an L0 penalty (absent from the reference
    /// configs; implemented after the JumpReLU paper).
    Jumprelu,
    /// Matryoshka SAE: nested top-k levels sharing one dictionary (reference `MSAE_UW`/`MSAE_RW`).
    Msae,
}

/// Secondary function of the top-k family (reference `TopK`, `TopKReLU`, `TopKabs`, `TopKabsReLU`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TopkVariant {
    /// Rank by value, ReLU on the kept values (reference default `TopKReLU`).
    #[default]
    Relu,
    /// Rank by value, keep values unchanged.
    Plain,
    /// Rank by |value|. Per-row TopK keeps |value|; BatchTopK keeps the signed value (as the
    /// reference does, docs/reference.md §11 item 14).
    Abs,
    /// Rank by |value|, then ReLU. Per-row: |value|; BatchTopK: ReLU of the signed value.
    Absrelu,
}

/// Level weighting of the Matryoshka loss.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MsaeWeighting {
    /// All levels weight 1.
    #[default]
    Uw,
    /// Reference "RW": weights L, L−1, …, 1, i.e. the largest weight on the smallest k.
    Rw,
    /// Corrected "RW" as described by the reference's own comment: weights 1, 2, …, L, i.e. the
    /// largest weight on the largest k.
    RwFixed,
}

/// Learning-rate schedule (stepped once per epoch).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Reference linear decay (can exceed 1 in the first decay epoch for short runs).
    #[default]
    LinearDecay,
    /// Linear decay that starts at exactly 1 and never exceeds it (see `schedule.rs`).
    LinearDecayFixed,
    /// One warm-up epoch from 0.1·lr, then cosine down to 0.1·lr.
    CosineWarmup,
    /// Constant learning rate.
    Constant,
}

/// Decoder initialisation distribution (rows are rescaled to `init_norm` afterwards).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitMethod {
    #[default]
    Kaiming,
    Xavier,
    Uniform,
    Normal,
}

/// Reconstruction loss (docs/reference.md §5).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecLoss {
    #[default]
    Nmse,
    Mse,
    Cosine,
}

/// How a BatchTopK model produces its sparse code outside training.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BatchTopkInference {
    /// Keep entries above a global threshold estimated during training (BatchTopK paper).
    #[default]
    Threshold,
    /// Reference behaviour: batch-level top-(k·B) over whatever batch is evaluated.
    Batch,
}

/// The values of the auxiliary dead-latent loss's code.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuxValues {
    /// Each row's largest dead pre-activations, unchanged (SAELens).
    #[default]
    Raw,
    /// The per-row top-k activation of `topk_variant` over the dead latents (the TopK paper's
    /// released code, which applies its ReLU): ranks as the variant ranks, keeps what it keeps.
    Activation,
}

/// How the optimiser sees the JumpReLU thresholds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum JumpreluParam {
    /// The trained parameter is log θ (the reference code, the JumpReLU authors' training
    /// notebook, SAELens's training SAE in every version). Adam moves it by about lr per step,
    /// so θ changes by a factor of about e^(lr) per step: from θ₀ = 0.001 at lr 1e-4 it
    /// cannot pass about 0.0012 in 2,000 steps.
    #[default]
    Log,
    /// The trained parameter is θ itself (dictionary_learning's JumpReLU trainer); Adam moves
    /// it by about lr per step in the units of the pre-activations. A θ below 0 acts as 0.
    Direct,
}

/// Every knob of SAE training.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub arch: Arch,
    /// n = int(expansion_factor · d) unless `n_latents` is given.
    pub expansion_factor: f64,
    pub n_latents: Option<usize>,
    /// k for TopK (default 64) and BatchTopK (default 32).
    pub k: Option<usize>,
    pub topk_variant: TopkVariant,
    /// Sparsity weight λ: L1 for ReLU (default 0.003), L0 for JumpReLU (default 0.001); ignored
    /// by the top-k family and Matryoshka.
    pub sparsity_weight: Option<f64>,
    pub msae_weighting: MsaeWeighting,
    /// First Matryoshka level; levels double while ≤ n, then n is appended.
    pub nesting_start: usize,
    /// Learning rate; default per arch: relu 5e-5, topk/batchtopk 5e-4, msae 1e-4,
    /// jumprelu 1e-4 (between ReLU and TopK; the JumpReLU paper used 7e-5 with λ-warm-up).
    pub lr: Option<f64>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub schedule: Schedule,
    pub decay_time: f64,
    /// Global gradient-norm clip (≤ 0 disables).
    pub clip_grad: f64,
    pub init: InitMethod,
    /// Row norm of the initial decoder.
    pub init_norm: f64,
    /// Initial value of every latent (encoder) bias; the reference starts at 0. A negative
    /// value starts the ReLU and JumpReLU codes sparser.
    pub latent_bias_init: f64,
    /// c > 0 enables `c·tanh(z/c)` on the code.
    pub soft_cap: f64,
    pub loss: RecLoss,
    pub seed: u64,
    /// Window (in training steps) of the dead-latent count.
    pub check_dead: usize,
    /// Frequency below which a latent counts as dead (reference 10^−5.5).
    pub dead_threshold: f64,
    /// Whether validation forward passes feed the dead-latent counters (reference: yes).
    pub dead_count_validation: bool,
    /// Recorded for the caller's statistics; with `false` the nmse reference vector is the mean
    /// of the standardised training data instead of 0 (docs/reference.md §5).
    pub mean_center: bool,
    /// JumpReLU initial threshold θ₀, in the units of the pre-activations of the model with
    /// unit-norm decoder rows, i.e. the threshold every latent holds once the first decoder
    /// renormalisation has run (the initial model holds θ₀/r_j so that it lands there).
    pub jumprelu_theta0: f64,
    /// JumpReLU kernel bandwidth ε.
    pub jumprelu_bandwidth: f64,
    /// What the optimiser trains for the JumpReLU thresholds: log θ or θ.
    pub jumprelu_param: JumpreluParam,
    pub batchtopk_inference: BatchTopkInference,
    /// EMA momentum of the BatchTopK threshold estimate (threshold ← m·threshold + (1−m)·min).
    pub batchtopk_threshold_momentum: f64,
    /// Training steps between loss records in the returned log.
    pub log_every: usize,
    /// Weight α of the auxiliary dead-latent loss of the TopK paper ("aux-k"; top-k family and
    /// Matryoshka); None or 0: off. Absent from serialised configurations while unset, so that
    /// a training without it keeps its bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_k_coef: Option<f64>,
    /// Dead latents each row's auxiliary code keeps (k_aux); None: d/2, as SAELens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_k: Option<usize>,
    /// Training steps without firing after which a latent counts as dead for the auxiliary
    /// loss; None: 1000, SAELens's `dead_feature_window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_dead_steps: Option<usize>,
    /// The values of the auxiliary code; None: raw pre-activations, as SAELens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_k_values: Option<AuxValues>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: Arch::Topk,
            expansion_factor: 8.0,
            n_latents: None,
            k: None,
            topk_variant: TopkVariant::Relu,
            sparsity_weight: None,
            msae_weighting: MsaeWeighting::Uw,
            nesting_start: 64,
            lr: None,
            beta1: 0.9,
            beta2: 0.999,
            eps: 6.25e-10,
            weight_decay: 0.0,
            batch_size: 4096,
            epochs: 30,
            schedule: Schedule::LinearDecay,
            decay_time: 0.8,
            clip_grad: 1.0,
            init: InitMethod::Kaiming,
            init_norm: 0.1,
            latent_bias_init: 0.0,
            soft_cap: 0.0,
            loss: RecLoss::Nmse,
            seed: 42,
            check_dead: 1000,
            // 10^-5.5 as the reference computes it (Rust's powf lands one ulp lower); the same
            // value as the `train` step's default, which a test pins.
            dead_threshold: 3.162_277_660_168_379_5e-6,
            dead_count_validation: true,
            mean_center: true,
            jumprelu_theta0: 0.001,
            jumprelu_bandwidth: 0.001,
            jumprelu_param: JumpreluParam::Log,
            batchtopk_inference: BatchTopkInference::Threshold,
            batchtopk_threshold_momentum: 0.99,
            log_every: 100,
            aux_k_coef: None,
            aux_k: None,
            aux_dead_steps: None,
            aux_k_values: None,
        }
    }
}

impl TrainConfig {
    /// Configuration for `arch` with all other knobs at their defaults.
    pub fn for_arch(arch: Arch) -> Self {
        TrainConfig {
            arch,
            ..Default::default()
        }
    }

    /// Effective learning rate.
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(match self.arch {
            Arch::Relu => 5e-5,
            Arch::Topk | Arch::Batchtopk => 5e-4,
            Arch::Msae => 1e-4,
            Arch::Jumprelu => 1e-4,
        })
    }

    /// Effective k of the top-k family (unused for other archs).
    pub fn k(&self) -> usize {
        self.k.unwrap_or(match self.arch {
            Arch::Batchtopk => 32,
            _ => 64,
        })
    }

    /// Effective sparsity weight λ.
    pub fn sparsity_weight(&self) -> f64 {
        self.sparsity_weight.unwrap_or(match self.arch {
            Arch::Relu => 0.003,
            Arch::Jumprelu => 0.001,
            _ => 0.0,
        })
    }

    /// Weight of the auxiliary dead-latent loss (0: off).
    pub fn aux_k_coef(&self) -> f64 {
        self.aux_k_coef.unwrap_or(0.0)
    }

    /// Whether the auxiliary dead-latent loss is on.
    pub fn aux_enabled(&self) -> bool {
        self.aux_k_coef() > 0.0
    }

    /// Effective k_aux for input width `d`: d/2 (at least 1) unless set.
    pub fn aux_k(&self, d: usize) -> usize {
        self.aux_k.unwrap_or((d / 2).max(1))
    }

    /// Effective values of the auxiliary code.
    pub fn aux_k_values(&self) -> AuxValues {
        self.aux_k_values.unwrap_or_default()
    }

    /// Effective dead window of the auxiliary loss, in training steps.
    pub fn aux_dead_steps(&self) -> usize {
        self.aux_dead_steps.unwrap_or(1000)
    }

    /// Number of latents for input width `d`.
    pub fn n_latents(&self, d: usize) -> usize {
        self.n_latents
            .unwrap_or((self.expansion_factor * d as f64) as usize)
    }

    /// Check the configuration against the input width `d`.
    pub fn validate(&self, d: usize) -> Result<(), SaeError> {
        let bad = |m: String| Err(SaeError::Config(m));
        let n = self.n_latents(d);
        if d == 0 || n == 0 {
            return bad(format!(
                "input width {d} and latent count {n} must be positive"
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be positive".into());
        }
        if matches!(self.arch, Arch::Topk | Arch::Batchtopk) && (self.k() == 0 || self.k() > n) {
            return bad(format!("k = {} must be in 1..={n}", self.k()));
        }
        if self.arch == Arch::Msae && (self.nesting_start == 0 || self.nesting_start > n) {
            return bad(format!(
                "nesting_start = {} must be in 1..={n}",
                self.nesting_start
            ));
        }
        if self.lr().is_nan() || self.lr() <= 0.0 || !self.lr().is_finite() {
            return bad(format!("learning rate {} must be positive", self.lr()));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("Adam betas must lie in [0, 1)".into());
        }
        if !(0.0..=1.0).contains(&self.decay_time) {
            return bad("decay_time must lie in [0, 1]".into());
        }
        if self.init_norm.is_nan() || self.init_norm <= 0.0 {
            return bad("init_norm must be positive".into());
        }
        if !self.latent_bias_init.is_finite() {
            return bad("latent_bias_init must be a finite number".into());
        }
        if self.check_dead == 0 || self.log_every == 0 {
            return bad("check_dead and log_every must be positive".into());
        }
        if self.arch == Arch::Jumprelu {
            if !(self.jumprelu_bandwidth.is_finite() && self.jumprelu_bandwidth > 0.0) {
                return bad(format!(
                    "jumprelu_bandwidth = {} must be a positive number",
                    self.jumprelu_bandwidth
                ));
            }
            // log θ₀ must exist; a directly trained threshold may start at 0 (a ReLU).
            let theta0_ok = match self.jumprelu_param {
                JumpreluParam::Log => self.jumprelu_theta0 > 0.0,
                JumpreluParam::Direct => self.jumprelu_theta0 >= 0.0,
            };
            if !(self.jumprelu_theta0.is_finite() && theta0_ok) {
                return bad(format!(
                    "jumprelu_theta0 = {} must be {} with jumprelu_param = \"{}\"",
                    self.jumprelu_theta0,
                    match self.jumprelu_param {
                        JumpreluParam::Log => "positive",
                        JumpreluParam::Direct => "a number ≥ 0",
                    },
                    match self.jumprelu_param {
                        JumpreluParam::Log => "log",
                        JumpreluParam::Direct => "direct",
                    }
                ));
            }
        }
        if !(0.0..1.0).contains(&self.batchtopk_threshold_momentum) {
            return bad("batchtopk_threshold_momentum must lie in [0, 1)".into());
        }
        self.validate_aux(n)
    }

    /// Checks of the auxiliary dead-latent loss's knobs.
    fn validate_aux(&self, n: usize) -> Result<(), SaeError> {
        let bad = |m: String| Err(SaeError::Config(m));
        if let Some(c) = self.aux_k_coef {
            if !(c.is_finite() && c >= 0.0) {
                return bad(format!("aux_k_coef = {c} must be a finite number ≥ 0"));
            }
        }
        let tuned =
            self.aux_k.is_some() || self.aux_dead_steps.is_some() || self.aux_k_values.is_some();
        if (self.aux_enabled() || tuned)
            && !matches!(self.arch, Arch::Topk | Arch::Batchtopk | Arch::Msae)
        {
            return bad(format!(
                "the auxiliary dead-latent loss (aux_k_coef, aux_k, aux_dead_steps, aux_k_values) \
                 exists for arch = \"topk\", \"batchtopk\" and \"msae\", not \"{}\"",
                format!("{:?}", self.arch).to_lowercase()
            ));
        }
        if tuned && self.aux_k_coef.is_none() {
            return bad(
                "aux_k, aux_dead_steps and aux_k_values tune the auxiliary dead-latent loss, which \
                 is off without aux_k_coef: set aux_k_coef too (e.g. 0.03125, the TopK paper's 1/32)"
                    .into(),
            );
        }
        if self.arch == Arch::Msae && self.aux_k_values == Some(AuxValues::Activation) {
            return bad(
                "aux_k_values = \"activation\" would train nothing for arch = \"msae\": its \
                 last level keeps every positive pre-activation, so a dead latent has none, and \
                 the activation zeroes the rest; use \"raw\""
                    .into(),
            );
        }
        if let Some(k) = self.aux_k {
            if k == 0 || k > n {
                return bad(format!("aux_k = {k} must be in 1..={n} (the latent count)"));
            }
        }
        if self.aux_dead_steps == Some(0) {
            return bad("aux_dead_steps must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_per_arch() {
        assert_eq!(TrainConfig::for_arch(Arch::Relu).lr(), 5e-5);
        assert_eq!(TrainConfig::for_arch(Arch::Topk).lr(), 5e-4);
        assert_eq!(TrainConfig::for_arch(Arch::Msae).lr(), 1e-4);
        assert_eq!(TrainConfig::for_arch(Arch::Batchtopk).k(), 32);
        assert_eq!(TrainConfig::for_arch(Arch::Topk).k(), 64);
        assert_eq!(TrainConfig::for_arch(Arch::Relu).sparsity_weight(), 0.003);
        assert_eq!(TrainConfig::default().n_latents(768), 6144);
    }

    #[test]
    fn json_roundtrip_and_partial() {
        let c: TrainConfig =
            serde_json::from_str(r#"{"arch":"msae","msae_weighting":"rw_fixed","lr":0.01}"#)
                .unwrap();
        assert_eq!(c.arch, Arch::Msae);
        assert_eq!(c.msae_weighting, MsaeWeighting::RwFixed);
        assert_eq!(c.batch_size, 4096);
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TrainConfig>(&s).unwrap(), c);
        assert!(serde_json::from_str::<TrainConfig>(r#"{"bogus":1}"#).is_err());
    }

    #[test]
    fn the_auxiliary_loss_is_refused_where_it_does_not_apply() {
        let err = |c: &TrainConfig| c.validate(16).unwrap_err().to_string();
        let mut c = TrainConfig::for_arch(Arch::Relu);
        c.aux_k_coef = Some(0.03125);
        assert!(err(&c).contains("not \"relu\""), "{}", err(&c));
        c.arch = Arch::Jumprelu;
        assert!(err(&c).contains("not \"jumprelu\""), "{}", err(&c));
        // Explicitly off is harmless anywhere.
        c.aux_k_coef = Some(0.0);
        assert!(c.validate(16).is_ok());
        for arch in [Arch::Topk, Arch::Batchtopk, Arch::Msae] {
            let mut c = TrainConfig::for_arch(arch);
            c.k = Some(4);
            c.nesting_start = 4;
            c.aux_k_coef = Some(1.0);
            c.aux_k = Some(8);
            c.aux_dead_steps = Some(10);
            assert!(c.validate(16).is_ok(), "{arch:?}");
            c.aux_k = Some(129);
            assert!(
                err(&c).contains("aux_k = 129 must be in 1..=128"),
                "{}",
                err(&c)
            );
            c.aux_k = Some(8);
            c.aux_dead_steps = Some(0);
            assert!(err(&c).contains("aux_dead_steps must be positive"));
            c.aux_dead_steps = Some(10);
            c.aux_k_coef = Some(f64::NAN);
            assert!(err(&c).contains("aux_k_coef"));
            // Tuning knobs without the weight would be silently ignored.
            c.aux_k_coef = None;
            assert!(err(&c).contains("set aux_k_coef too"), "{}", err(&c));
        }
        // A Matryoshka code's dead latents have no positive pre-activation for a ReLU to keep.
        let mut c = TrainConfig::for_arch(Arch::Msae);
        c.nesting_start = 4;
        c.aux_k_coef = Some(1.0);
        c.aux_k_values = Some(AuxValues::Activation);
        assert!(err(&c).contains("use \"raw\""), "{}", err(&c));
        c.aux_k_values = Some(AuxValues::Raw);
        assert!(c.validate(16).is_ok());
        // None of them is written into a configuration that does not set them.
        let json = serde_json::to_string(&TrainConfig::default()).unwrap();
        assert!(!json.contains("aux"), "{json}");
    }

    #[test]
    fn validation_rejects_bad_values() {
        let mut c = TrainConfig::for_arch(Arch::Topk);
        c.k = Some(1000);
        assert!(c.validate(16).is_err());
        c.k = Some(4);
        assert!(c.validate(16).is_ok());
        c.batch_size = 0;
        assert!(c.validate(16).is_err());
    }

    #[test]
    fn jumprelu_thresholds_are_checked_per_parametrisation() {
        let mut c = TrainConfig::for_arch(Arch::Jumprelu);
        assert_eq!(c.jumprelu_param, JumpreluParam::Log);
        // log θ₀ must exist; a directly trained threshold may start at 0 (a ReLU).
        c.jumprelu_theta0 = 0.0;
        let err = c.validate(16).unwrap_err().to_string();
        assert!(
            err.contains("jumprelu_theta0 = 0 must be positive"),
            "{err}"
        );
        c.jumprelu_param = JumpreluParam::Direct;
        assert!(c.validate(16).is_ok());
        c.jumprelu_theta0 = -0.1;
        assert!(c.validate(16).is_err());
        c.jumprelu_theta0 = 0.01;
        c.jumprelu_bandwidth = 0.0;
        let err = c.validate(16).unwrap_err().to_string();
        assert!(err.contains("jumprelu_bandwidth"), "{err}");
        let parsed: TrainConfig = serde_json::from_str(r#"{"jumprelu_param":"direct"}"#).unwrap();
        assert_eq!(parsed.jumprelu_param, JumpreluParam::Direct);
    }
}
