//! Small CLIP models with random weights, written in the Hugging Face layout (`config.json` of a
//! `CLIPModel`, `model.safetensors` with its tensor names, optionally `tokenizer.json`), so the
//! code that loads real CLIP models can be tested without them.
//!
//! The weights are deterministic in the seed (one ChaCha8 stream, tensors drawn in a fixed
//! order) and drawn at scales that keep activations near unit size and make every part of the
//! forward pass matter, so a comparison against an independent implementation bites:
//! * linear, convolution and projection weights: N(0, 1/fan_in), so attention logits are of
//!   order one (attention far from uniform) and QuickGELU works in its non-linear range;
//! * biases: N(0, 0.05²);
//! * layer-norm weights 1 + N(0, 0.1²), biases N(0, 0.1²);
//! * token and class embeddings N(0, 0.5²), position embeddings N(0, 0.2²);
//! * `logit_scale` = 2.6592 (= ln(1/0.07), CLIP's initial temperature).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::json;

/// The layer-norm epsilon of CLIP (and the one candle's CLIP uses).
pub const LAYER_NORM_EPS: f64 = 1e-5;
/// CLIP's initial logit scale, ln(1/0.07).
pub const LOGIT_SCALE_INIT: f32 = 2.6592;

/// The text tower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinyTextConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// 49,408 (CLIP's vocabulary) so the real tokenizer's ids are valid.
    pub vocab_size: usize,
    /// 77, CLIP's context length.
    pub max_position: usize,
}

/// The vision tower (3 input channels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinyVisionConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub image_size: usize,
    pub patch_size: usize,
}

/// A CLIP model's shape. The default is small (about 3.8 M parameters, 3.2 M of them the token
/// embedding) with the real vocabulary, context length, image size and patch size of ViT-B/32;
/// the two towers have different widths so a mixed-up dimension cannot go unnoticed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinyClipConfig {
    pub text: TinyTextConfig,
    pub vision: TinyVisionConfig,
    pub projection_dim: usize,
}

impl Default for TinyClipConfig {
    fn default() -> Self {
        TinyClipConfig {
            text: TinyTextConfig {
                hidden: 64,
                layers: 2,
                heads: 4,
                intermediate: 256,
                vocab_size: crate::embed::clip_bpe::VOCAB_SIZE,
                max_position: crate::embed::clip_bpe::CONTEXT_LENGTH,
            },
            vision: TinyVisionConfig {
                hidden: 96,
                layers: 2,
                heads: 4,
                intermediate: 384,
                image_size: 224,
                patch_size: 32,
            },
            projection_dim: 48,
        }
    }
}

impl TinyClipConfig {
    /// Checks that the shape describes a CLIP model.
    pub fn validate(&self) -> Result<()> {
        let t = &self.text;
        let v = &self.vision;
        let sizes = [
            ("text hidden", t.hidden),
            ("text layers", t.layers),
            ("text heads", t.heads),
            ("text intermediate", t.intermediate),
            ("text vocab_size", t.vocab_size),
            ("text max_position", t.max_position),
            ("projection_dim", self.projection_dim),
        ];
        check_shapes(&sizes, (t.hidden, t.heads), v)
    }

    /// Patches per image side.
    pub fn grid(&self) -> usize {
        self.vision.image_size / self.vision.patch_size
    }

    /// The `config.json` of a Hugging Face `CLIPModel` with this shape.
    pub fn hf_config_json(&self) -> serde_json::Value {
        let t = &self.text;
        let v = &self.vision;
        json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": LOGIT_SCALE_INIT,
            "initializer_factor": 1.0,
            "torch_dtype": "float32",
            "text_config": {
                "model_type": "clip_text_model",
                "hidden_size": t.hidden,
                "intermediate_size": t.intermediate,
                "num_hidden_layers": t.layers,
                "num_attention_heads": t.heads,
                "max_position_embeddings": t.max_position,
                "vocab_size": t.vocab_size,
                "projection_dim": self.projection_dim,
                "hidden_act": "quick_gelu",
                "layer_norm_eps": LAYER_NORM_EPS,
                "attention_dropout": 0.0,
                "dropout": 0.0,
                "initializer_range": 0.02,
                "initializer_factor": 1.0,
                "bos_token_id": crate::embed::clip_bpe::START_OF_TEXT_ID,
                "eos_token_id": crate::embed::clip_bpe::END_OF_TEXT_ID,
                "pad_token_id": 1
            },
            "vision_config": {
                "model_type": "clip_vision_model",
                "hidden_size": v.hidden,
                "intermediate_size": v.intermediate,
                "num_hidden_layers": v.layers,
                "num_attention_heads": v.heads,
                "num_channels": 3,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "projection_dim": self.projection_dim,
                "hidden_act": "quick_gelu",
                "layer_norm_eps": LAYER_NORM_EPS,
                "attention_dropout": 0.0,
                "dropout": 0.0,
                "initializer_range": 0.02,
                "initializer_factor": 1.0
            }
        })
    }
}

/// How one tensor is drawn.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    /// N(0, std²).
    Normal(f32),
    /// 1 + N(0, std²).
    AroundOne(f32),
    /// A constant.
    Constant(f32),
}

/// One named tensor: Hugging Face name, shape, row-major F32 values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A tensor to draw: name, shape and how.
pub(crate) type Spec = (String, Vec<usize>, Init);

/// The checks every test-model shape shares: each named size of the text tower (`text_sizes`,
/// with its hidden size and heads in `text`) and of the vision tower positive, each tower's
/// hidden size a whole number of heads, and the image a whole number of patches.
pub(crate) fn check_shapes(
    text_sizes: &[(&str, usize)],
    text: (usize, usize),
    v: &TinyVisionConfig,
) -> Result<()> {
    let vision_sizes = [
        ("vision hidden", v.hidden),
        ("vision layers", v.layers),
        ("vision heads", v.heads),
        ("vision intermediate", v.intermediate),
        ("vision image_size", v.image_size),
        ("vision patch_size", v.patch_size),
    ];
    for &(name, value) in text_sizes.iter().chain(&vision_sizes) {
        if value == 0 {
            bail!("{name} must be positive");
        }
    }
    for (which, hidden, heads) in [("text", text.0, text.1), ("vision", v.hidden, v.heads)] {
        if !hidden.is_multiple_of(heads) {
            bail!("{which} hidden size {hidden} is not a multiple of its {heads} heads");
        }
    }
    if !v.image_size.is_multiple_of(v.patch_size) {
        bail!(
            "image size {} is not a multiple of the patch size {}",
            v.image_size,
            v.patch_size
        );
    }
    Ok(())
}

/// N(0, 1/fan_in): keeps a linear layer's outputs near the size of its inputs.
pub(crate) fn inv_sqrt(fan_in: usize) -> f32 {
    (fan_in as f32).sqrt().recip()
}

/// `{prefix}.weight` (`outputs × inputs`) and `{prefix}.bias`.
pub(crate) fn add_linear(specs: &mut Vec<Spec>, prefix: &str, inputs: usize, outputs: usize) {
    specs.push((
        format!("{prefix}.weight"),
        vec![outputs, inputs],
        Init::Normal(inv_sqrt(inputs)),
    ));
    specs.push((format!("{prefix}.bias"), vec![outputs], Init::Normal(0.05)));
}

pub(crate) fn add_layer_norm(specs: &mut Vec<Spec>, prefix: &str, n: usize) {
    specs.push((format!("{prefix}.weight"), vec![n], Init::AroundOne(0.1)));
    specs.push((format!("{prefix}.bias"), vec![n], Init::Normal(0.1)));
}

/// The pre-norm transformer layers CLIP and SigLIP share, under `{prefix}.encoder.layers.{i}`.
pub(crate) fn add_encoder(
    specs: &mut Vec<Spec>,
    prefix: &str,
    layers: usize,
    hidden: usize,
    intermediate: usize,
) {
    for i in 0..layers {
        let p = format!("{prefix}.encoder.layers.{i}");
        add_layer_norm(specs, &format!("{p}.layer_norm1"), hidden);
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            add_linear(specs, &format!("{p}.self_attn.{proj}"), hidden, hidden);
        }
        add_layer_norm(specs, &format!("{p}.layer_norm2"), hidden);
        add_linear(specs, &format!("{p}.mlp.fc1"), hidden, intermediate);
        add_linear(specs, &format!("{p}.mlp.fc2"), intermediate, hidden);
    }
}

/// Draws the tensors of `specs` in order from one ChaCha8 stream seeded with `seed`.
pub(crate) fn draw(specs: Vec<Spec>, seed: u64) -> Vec<NamedTensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let standard = Normal::new(0f32, 1f32).expect("unit normal");
    specs
        .into_iter()
        .map(|(name, shape, init)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = match init {
                Init::Normal(std) => (0..n).map(|_| std * standard.sample(&mut rng)).collect(),
                Init::AroundOne(std) => (0..n)
                    .map(|_| 1.0 + std * standard.sample(&mut rng))
                    .collect(),
                Init::Constant(c) => vec![c; n],
            };
            (name, shape, values)
        })
        .collect()
}

/// The tensors of a random CLIP model with Hugging Face names, in the order they are drawn.
pub fn random_clip_tensors(cfg: &TinyClipConfig, seed: u64) -> Result<Vec<NamedTensor>> {
    cfg.validate()?;
    let mut specs: Vec<Spec> = Vec::new();
    let t = &cfg.text;
    let v = &cfg.vision;

    specs.push((
        "text_model.embeddings.token_embedding.weight".into(),
        vec![t.vocab_size, t.hidden],
        Init::Normal(0.5),
    ));
    specs.push((
        "text_model.embeddings.position_embedding.weight".into(),
        vec![t.max_position, t.hidden],
        Init::Normal(0.2),
    ));
    add_encoder(&mut specs, "text_model", t.layers, t.hidden, t.intermediate);
    add_layer_norm(&mut specs, "text_model.final_layer_norm", t.hidden);

    let patches = cfg.grid() * cfg.grid();
    specs.push((
        "vision_model.embeddings.class_embedding".into(),
        vec![v.hidden],
        Init::Normal(0.5),
    ));
    specs.push((
        "vision_model.embeddings.patch_embedding.weight".into(),
        vec![v.hidden, 3, v.patch_size, v.patch_size],
        Init::Normal(inv_sqrt(3 * v.patch_size * v.patch_size)),
    ));
    specs.push((
        "vision_model.embeddings.position_embedding.weight".into(),
        vec![patches + 1, v.hidden],
        Init::Normal(0.2),
    ));
    add_layer_norm(&mut specs, "vision_model.pre_layrnorm", v.hidden);
    add_encoder(
        &mut specs,
        "vision_model",
        v.layers,
        v.hidden,
        v.intermediate,
    );
    add_layer_norm(&mut specs, "vision_model.post_layernorm", v.hidden);

    specs.push((
        "visual_projection.weight".into(),
        vec![cfg.projection_dim, v.hidden],
        Init::Normal(inv_sqrt(v.hidden)),
    ));
    specs.push((
        "text_projection.weight".into(),
        vec![cfg.projection_dim, t.hidden],
        Init::Normal(inv_sqrt(t.hidden)),
    ));
    specs.push((
        "logit_scale".into(),
        vec![],
        Init::Constant(LOGIT_SCALE_INIT),
    ));
    Ok(draw(specs, seed))
}

/// Writes `tensors` as an F32 safetensors file (metadata `format = pt`, as the hub's files).
pub(crate) fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("building the safetensors views")?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let file = safetensors::serialize(views, Some(metadata)).context("serialising the weights")?;
    std::fs::write(path, file).with_context(|| format!("writing {}", path.display()))
}

/// Writes a random CLIP model into `dir` (created if needed): `config.json`,
/// `model.safetensors` (F32) and, when given, a copy of `tokenizer_json` as `tokenizer.json`.
pub fn write_random_clip(
    dir: &Path,
    cfg: &TinyClipConfig,
    seed: u64,
    tokenizer_json: Option<&Path>,
) -> Result<()> {
    cfg.validate()?;
    if tokenizer_json.is_some() && cfg.text.vocab_size < crate::embed::clip_bpe::VOCAB_SIZE {
        bail!(
            "a vocabulary of {} cannot hold the CLIP tokenizer's {} ids",
            cfg.text.vocab_size,
            crate::embed::clip_bpe::VOCAB_SIZE
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_safetensors(
        &dir.join("model.safetensors"),
        &random_clip_tensors(cfg, seed)?,
    )?;

    let config = dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg.hf_config_json())? + "\n";
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;

    if let Some(src) = tokenizer_json {
        let dst = dir.join("tokenizer.json");
        std::fs::copy(src, &dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// Number of ids of [`write_byte_level_tokenizer`]'s tokenizer: 256 byte symbols, the same with
/// the end-of-word suffix, the start and the end token (the last, 513).
pub const BYTE_LEVEL_VOCAB: usize = 514;

/// Writes CLIP's tokenizer pipeline without merges as `path` (every byte of a word one token; see
/// [`crate::embed::clip_bpe::clip_tokenizer_from_merges`]), so tests can embed texts with a small
/// model without the CLIP merges file. Its ids fit any vocabulary of [`BYTE_LEVEL_VOCAB`] or more.
pub fn write_byte_level_tokenizer(path: &Path) -> Result<()> {
    let tokenizer = crate::embed::clip_bpe::clip_tokenizer_from_merges(Vec::new())?;
    crate::embed::clip_bpe::write_tokenizer_json(&tokenizer, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TinyClipConfig {
        TinyClipConfig {
            text: TinyTextConfig {
                hidden: 8,
                layers: 1,
                heads: 2,
                intermediate: 16,
                vocab_size: 20,
                max_position: 5,
            },
            vision: TinyVisionConfig {
                hidden: 12,
                layers: 2,
                heads: 3,
                intermediate: 24,
                image_size: 8,
                patch_size: 4,
            },
            projection_dim: 6,
        }
    }

    #[test]
    fn shapes_and_determinism() {
        let cfg = small();
        let a = random_clip_tensors(&cfg, 3).unwrap();
        let b = random_clip_tensors(&cfg, 3).unwrap();
        let c = random_clip_tensors(&cfg, 4).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let find = |name: &str| a.iter().find(|t| t.0 == name).unwrap();
        assert_eq!(
            find("vision_model.embeddings.position_embedding.weight").1,
            vec![5, 12]
        );
        assert_eq!(
            find("vision_model.embeddings.patch_embedding.weight").1,
            vec![12, 3, 4, 4]
        );
        assert_eq!(
            find("vision_model.encoder.layers.1.mlp.fc1.weight").1,
            vec![24, 12]
        );
        assert_eq!(find("text_projection.weight").1, vec![6, 8]);
        assert_eq!(find("logit_scale").2, vec![LOGIT_SCALE_INIT]);
        // Per layer: 2 layer norms × 2, 4 attention linears × 2, 2 MLP linears × 2 = 16 tensors.
        let text_layer = a
            .iter()
            .filter(|t| t.0.starts_with("text_model.encoder.layers.0."))
            .count();
        assert_eq!(text_layer, 16);
        assert_eq!(a.len(), 2 + 16 + 2 + 3 + 2 + 2 * 16 + 2 + 2 + 1);
        let ln = &find("text_model.final_layer_norm.weight").2;
        assert!(ln.iter().all(|&x| (x - 1.0).abs() < 0.6) && ln.iter().any(|&x| x != 1.0));
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut cfg = small();
        cfg.vision.heads = 5;
        assert!(cfg.validate().is_err());
        let mut cfg = small();
        cfg.vision.patch_size = 3;
        assert!(cfg.validate().is_err());
        let mut cfg = small();
        cfg.text.layers = 0;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn writes_a_loadable_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small();
        let tok = dir.path().join("tok.json");
        std::fs::write(&tok, "{}").unwrap();
        // The CLIP tokenizer's ids do not fit a vocabulary of 20.
        assert!(write_random_clip(&dir.path().join("m"), &cfg, 1, Some(&tok)).is_err());
        write_random_clip(&dir.path().join("m"), &cfg, 1, None).unwrap();
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("m/config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["vision_config"]["patch_size"], 4);
        assert_eq!(config["text_config"]["hidden_act"], "quick_gelu");
        let bytes = std::fs::read(dir.path().join("m/model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let expected = random_clip_tensors(&cfg, 1).unwrap();
        assert_eq!(st.len(), expected.len());
        for (name, shape, values) in &expected {
            let view = st.tensor(name).unwrap();
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            assert_eq!(view.shape(), shape.as_slice());
            let read: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(&read, values);
        }
    }
}
