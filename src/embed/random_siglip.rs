//! Small SigLIP models with random weights, written in the Hugging Face layout (`config.json` of
//! a `SiglipModel`, `model.safetensors` with its tensor names, `tokenizer.json`), so the code that
//! loads SigLIP can be tested without a real checkpoint.
//!
//! The architecture is the one candle-transformers' `siglip` reads: pre-norm encoder layers as
//! CLIP's (GELU with the tanh approximation, layer-norm epsilon 1e-6), a text tower that takes the
//! final layer norm's output at the last position through a square `head`, and a vision tower
//! without a class token (position embeddings for the patches only, a biased patch convolution)
//! pooled by the attention head (`head.probe` attending over the patches with a packed
//! `in_proj_weight`, then layer norm and MLP with a residual). Weights are drawn at the scales
//! of [`crate::embed::random_clip`], deterministic in the seed.
//!
//! The tokenizer is CLIP's pipeline without merges
//! ([`crate::embed::random_clip::write_byte_level_tokenizer`]): the real SigLIP tokenizer (a
//! SentencePiece model) is not needed to test how msae pads and pools, only ids in range. Texts
//! end with its end token, which is also the pad id, as SigLIP's `</s>` is both.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::random_clip::{
    add_encoder, add_layer_norm, add_linear, check_shapes, draw, inv_sqrt,
    write_byte_level_tokenizer, write_safetensors, Init, NamedTensor, Spec, TinyVisionConfig,
    BYTE_LEVEL_VOCAB,
};

/// SigLIP's layer-norm epsilon.
pub const LAYER_NORM_EPS: f64 = 1e-6;

/// The text tower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinySiglipTextConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab_size: usize,
    /// Every text is padded to this length (SigLIP's is 64).
    pub max_position: usize,
    pub pad_token_id: u32,
}

/// A SigLIP model's shape. The default is small (about 0.1 M parameters): SigLIP's context of
/// 64, 64 × 64 images in 16 patches; the towers have different widths so a mixed-up dimension
/// cannot go unnoticed (real SigLIP models share one width).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinySiglipConfig {
    pub text: TinySiglipTextConfig,
    pub vision: TinyVisionConfig,
}

impl Default for TinySiglipConfig {
    fn default() -> Self {
        TinySiglipConfig {
            text: TinySiglipTextConfig {
                hidden: 32,
                layers: 2,
                heads: 4,
                intermediate: 64,
                vocab_size: BYTE_LEVEL_VOCAB,
                max_position: 64,
                pad_token_id: BYTE_LEVEL_VOCAB as u32 - 1,
            },
            vision: TinyVisionConfig {
                hidden: 48,
                layers: 2,
                heads: 4,
                intermediate: 96,
                image_size: 64,
                patch_size: 16,
            },
        }
    }
}

impl TinySiglipConfig {
    /// Checks that the shape describes a SigLIP model that the byte-level tokenizer fits.
    pub fn validate(&self) -> Result<()> {
        let t = &self.text;
        let v = &self.vision;
        check_shapes(
            &[
                ("text hidden", t.hidden),
                ("text layers", t.layers),
                ("text heads", t.heads),
                ("text intermediate", t.intermediate),
                ("text max_position", t.max_position),
            ],
            (t.hidden, t.heads),
            v,
        )?;
        if t.vocab_size < BYTE_LEVEL_VOCAB {
            bail!(
                "a vocabulary of {} cannot hold the test tokenizer's {BYTE_LEVEL_VOCAB} ids",
                t.vocab_size
            );
        }
        if t.pad_token_id as usize >= t.vocab_size {
            bail!(
                "pad id {} is outside the vocabulary of {}",
                t.pad_token_id,
                t.vocab_size
            );
        }
        Ok(())
    }

    /// The `config.json` of a Hugging Face `SiglipModel` with this shape.
    pub fn hf_config_json(&self) -> serde_json::Value {
        let t = &self.text;
        let v = &self.vision;
        json!({
            "architectures": ["SiglipModel"],
            "model_type": "siglip",
            "initializer_factor": 1.0,
            "torch_dtype": "float32",
            "text_config": {
                "model_type": "siglip_text_model",
                "hidden_size": t.hidden,
                "intermediate_size": t.intermediate,
                "num_hidden_layers": t.layers,
                "num_attention_heads": t.heads,
                "max_position_embeddings": t.max_position,
                "vocab_size": t.vocab_size,
                "hidden_act": "gelu_pytorch_tanh",
                "layer_norm_eps": LAYER_NORM_EPS,
                "attention_dropout": 0.0,
                "pad_token_id": t.pad_token_id,
                "bos_token_id": BYTE_LEVEL_VOCAB - 2,
                "eos_token_id": BYTE_LEVEL_VOCAB - 1
            },
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": v.hidden,
                "intermediate_size": v.intermediate,
                "num_hidden_layers": v.layers,
                "num_attention_heads": v.heads,
                "num_channels": 3,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "hidden_act": "gelu_pytorch_tanh",
                "layer_norm_eps": LAYER_NORM_EPS,
                "attention_dropout": 0.0
            }
        })
    }
}

/// The tensors of a random SigLIP model with Hugging Face names, in the order they are drawn.
pub fn random_siglip_tensors(cfg: &TinySiglipConfig, seed: u64) -> Result<Vec<NamedTensor>> {
    cfg.validate()?;
    let t = &cfg.text;
    let v = &cfg.vision;
    let mut specs: Vec<Spec> = Vec::new();

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
    add_linear(&mut specs, "text_model.head", t.hidden, t.hidden);

    let patches = (v.image_size / v.patch_size).pow(2);
    specs.push((
        "vision_model.embeddings.patch_embedding.weight".into(),
        vec![v.hidden, 3, v.patch_size, v.patch_size],
        Init::Normal(inv_sqrt(3 * v.patch_size * v.patch_size)),
    ));
    specs.push((
        "vision_model.embeddings.patch_embedding.bias".into(),
        vec![v.hidden],
        Init::Normal(0.05),
    ));
    specs.push((
        "vision_model.embeddings.position_embedding.weight".into(),
        vec![patches, v.hidden],
        Init::Normal(0.2),
    ));
    add_encoder(
        &mut specs,
        "vision_model",
        v.layers,
        v.hidden,
        v.intermediate,
    );
    add_layer_norm(&mut specs, "vision_model.post_layernorm", v.hidden);
    // The attention-pooling head: one learnt query over the patches.
    specs.push((
        "vision_model.head.probe".into(),
        vec![1, 1, v.hidden],
        Init::Normal(0.5),
    ));
    specs.push((
        "vision_model.head.attention.in_proj_weight".into(),
        vec![3 * v.hidden, v.hidden],
        Init::Normal(inv_sqrt(v.hidden)),
    ));
    specs.push((
        "vision_model.head.attention.in_proj_bias".into(),
        vec![3 * v.hidden],
        Init::Normal(0.05),
    ));
    add_linear(
        &mut specs,
        "vision_model.head.attention.out_proj",
        v.hidden,
        v.hidden,
    );
    add_layer_norm(&mut specs, "vision_model.head.layernorm", v.hidden);
    add_linear(
        &mut specs,
        "vision_model.head.mlp.fc1",
        v.hidden,
        v.intermediate,
    );
    add_linear(
        &mut specs,
        "vision_model.head.mlp.fc2",
        v.intermediate,
        v.hidden,
    );

    // SigLIP's initial temperature and bias: log 10 and −10.
    specs.push(("logit_scale".into(), vec![1], Init::Constant(10f32.ln())));
    specs.push(("logit_bias".into(), vec![1], Init::Constant(-10.0)));
    Ok(draw(specs, seed))
}

/// Writes a random SigLIP model into `dir` (created if needed): `config.json`,
/// `model.safetensors` (F32) and the byte-level `tokenizer.json`.
pub fn write_random_siglip(dir: &Path, cfg: &TinySiglipConfig, seed: u64) -> Result<()> {
    cfg.validate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_safetensors(
        &dir.join("model.safetensors"),
        &random_siglip_tensors(cfg, seed)?,
    )?;
    let config = dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg.hf_config_json())? + "\n";
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    write_byte_level_tokenizer(&dir.join("tokenizer.json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::siglip;

    #[test]
    fn the_tensors_load_into_candles_siglip_and_give_finite_features() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TinySiglipConfig::default();
        write_random_siglip(dir.path(), &cfg, 5).unwrap();
        let config: siglip::Config =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config.vision_config.patch_size, 16);
        assert_eq!(
            config.text_config.hidden_act,
            candle_nn::Activation::GeluPytorchTanh
        );
        let weights = dir.path().join("model.safetensors");
        let device = Device::Cpu;
        // SAFETY: the file was written above and is not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
            .unwrap();
        // The full model reads every tensor, the logit scale and bias included.
        let model = siglip::Model::new(&config, vb).unwrap();
        let pixels = Tensor::zeros((2, 3, 64, 64), DType::F32, &device).unwrap();
        let image = model.get_image_features(&pixels).unwrap();
        assert_eq!(image.dims(), [2, 48]);
        let ids = Tensor::from_vec(vec![7u32; 64], (1, 64), &device).unwrap();
        let text = model.get_text_features(&ids).unwrap();
        assert_eq!(text.dims(), [1, 32]);
        let values: Vec<f32> = text.flatten_all().unwrap().to_vec1().unwrap();
        assert!(values.iter().all(|x| x.is_finite()));
        // Text features are not constant: the random weights do something.
        let other = Tensor::from_vec(vec![9u32; 64], (1, 64), &device).unwrap();
        let other: Vec<f32> = model
            .get_text_features(&other)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(values.iter().zip(&other).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn drawing_is_deterministic_and_shapes_are_checked() {
        let cfg = TinySiglipConfig::default();
        let a = random_siglip_tensors(&cfg, 1).unwrap();
        assert_eq!(a, random_siglip_tensors(&cfg, 1).unwrap());
        assert_ne!(a, random_siglip_tensors(&cfg, 2).unwrap());
        let mut bad = cfg.clone();
        bad.vision.patch_size = 12;
        assert!(bad.validate().is_err());
        let mut bad = cfg.clone();
        bad.text.vocab_size = 100;
        assert!(bad.validate().is_err());
    }
}
