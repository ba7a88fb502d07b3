//! CLIP (OpenAI `openai/clip-vit-*` checkpoints in the Hugging Face layout) through
//! candle-transformers: configuration from the model's `config.json`, and only the towers a step
//! needs.
//!
//! Text features are the final layer norm's output at the end-of-text token (the largest id in
//! CLIP's vocabulary; candle pools at the first position of the row's largest id, so padding
//! with the end token after it changes nothing) times the text projection. Image features are the
//! post-layer-norm class token times the visual projection. Neither is normalised: the reference
//! stores raw projected features.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use serde_json::Value;

use super::clip_vision_host::HostClipVision;

/// candle's CLIP layers use this epsilon; a model trained with another would be computed wrongly.
const LAYER_NORM_EPS: f64 = 1e-5;

fn field(section: &Value, name: &str, default: usize) -> Result<usize> {
    match section.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
            anyhow::anyhow!("config.json: `{name}` must be a positive integer, found {v}")
        }),
    }
}

fn check_section(section: &Value, which: &str) -> Result<()> {
    if let Some(act) = section.get("hidden_act").and_then(Value::as_str) {
        if act != "quick_gelu" {
            bail!("config.json: the {which} tower uses `hidden_act = {act}`; msae's CLIP (candle-transformers) supports only quick_gelu, the activation of the OpenAI CLIP models");
        }
    }
    if let Some(eps) = section.get("layer_norm_eps").and_then(Value::as_f64) {
        if (eps - LAYER_NORM_EPS).abs() > 1e-12 {
            bail!("config.json: the {which} tower has layer_norm_eps = {eps}; msae's CLIP computes with 1e-5");
        }
    }
    Ok(())
}

/// Both tower configurations, with the Hugging Face `CLIPConfig` defaults for absent fields.
pub fn configs(config: &Value) -> Result<(ClipTextConfig, ClipVisionConfig)> {
    let empty = Value::Object(Default::default());
    let text = config.get("text_config").unwrap_or(&empty);
    let vision = config.get("vision_config").unwrap_or(&empty);
    check_section(text, "text")?;
    check_section(vision, "image")?;
    let projection = field(config, "projection_dim", 512)?;
    let text_cfg = ClipTextConfig {
        vocab_size: field(text, "vocab_size", 49408)?,
        embed_dim: field(text, "hidden_size", 512)?,
        activation: Activation::QuickGelu,
        intermediate_size: field(text, "intermediate_size", 2048)?,
        max_position_embeddings: field(text, "max_position_embeddings", 77)?,
        pad_with: None,
        num_hidden_layers: field(text, "num_hidden_layers", 12)?,
        num_attention_heads: field(text, "num_attention_heads", 8)?,
        projection_dim: projection,
    };
    let vision_cfg = ClipVisionConfig {
        embed_dim: field(vision, "hidden_size", 768)?,
        activation: Activation::QuickGelu,
        intermediate_size: field(vision, "intermediate_size", 3072)?,
        num_hidden_layers: field(vision, "num_hidden_layers", 12)?,
        num_attention_heads: field(vision, "num_attention_heads", 12)?,
        projection_dim: projection,
        num_channels: field(vision, "num_channels", 3)?,
        image_size: field(vision, "image_size", 224)?,
        patch_size: field(vision, "patch_size", 32)?,
    };
    for (what, hidden, heads) in [
        ("text", text_cfg.embed_dim, text_cfg.num_attention_heads),
        (
            "image",
            vision_cfg.embed_dim,
            vision_cfg.num_attention_heads,
        ),
    ] {
        if heads == 0 || hidden % heads != 0 {
            bail!("config.json: the {what} tower's hidden size {hidden} is not a multiple of its {heads} attention heads");
        }
    }
    if vision_cfg.patch_size == 0 || !vision_cfg.image_size.is_multiple_of(vision_cfg.patch_size) {
        bail!(
            "config.json: image size {} is not a multiple of the patch size {}",
            vision_cfg.image_size,
            vision_cfg.patch_size
        );
    }
    Ok((text_cfg, vision_cfg))
}

pub struct ClipText {
    model: ClipTextTransformer,
    projection: Linear,
}

impl ClipText {
    pub fn load(vb: &VarBuilder, cfg: &ClipTextConfig) -> Result<ClipText> {
        Ok(ClipText {
            model: ClipTextTransformer::new(vb.pp("text_model"), cfg)?,
            projection: candle_nn::linear_no_bias(
                cfg.embed_dim,
                cfg.projection_dim,
                vb.pp("text_projection"),
            )?,
        })
    }

    /// `ids`: `[rows, len]` u32 token ids, each row ending in (or padded with) the end token.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.projection.forward(&self.model.forward(ids)?)?)
    }
}

/// The image tower: candle-transformers' on any device, or the host kernels on the CPU (the same
/// arithmetic, faster there).
pub enum ClipImage {
    Candle {
        model: ClipVisionTransformer,
        projection: Linear,
    },
    Host(HostClipVision),
}

impl ClipImage {
    pub fn load(vb: &VarBuilder, cfg: &ClipVisionConfig) -> Result<ClipImage> {
        if vb.device().is_cpu() {
            return Ok(ClipImage::Host(HostClipVision::load(vb, cfg)?));
        }
        Ok(ClipImage::Candle {
            model: ClipVisionTransformer::new(vb.pp("vision_model"), cfg)?,
            projection: candle_nn::linear_no_bias(
                cfg.embed_dim,
                cfg.projection_dim,
                vb.pp("visual_projection"),
            )?,
        })
    }

    /// `pixels`: `rows × 3 × size × size` normalised values; returns `rows × projection`.
    pub fn embed(
        &self,
        pixels: Vec<f32>,
        rows: usize,
        size: usize,
        device: &Device,
    ) -> Result<Vec<f32>> {
        match self {
            ClipImage::Host(m) => m.forward(&pixels, rows),
            ClipImage::Candle { model, projection } => {
                let x = Tensor::from_vec(pixels, (rows, 3, size, size), device)?;
                let features = projection.forward(&model.forward(&x)?)?;
                Ok(features.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_come_from_config_json_with_defaults() {
        let cfg: Value = serde_json::from_str(
            r#"{"projection_dim": 768,
                "text_config": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
                "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                  "intermediate_size": 4096, "patch_size": 14, "hidden_act": "quick_gelu"}}"#,
        )
        .unwrap();
        let (t, v) = configs(&cfg).unwrap();
        assert_eq!(
            (t.embed_dim, t.num_hidden_layers, t.projection_dim),
            (768, 12, 768)
        );
        assert_eq!(
            (v.embed_dim, v.num_hidden_layers, v.patch_size, v.image_size),
            (1024, 24, 14, 224)
        );
    }

    #[test]
    fn unsupported_settings_are_refused() {
        let gelu: Value =
            serde_json::from_str(r#"{"vision_config": {"hidden_act": "gelu"}}"#).unwrap();
        assert!(configs(&gelu)
            .unwrap_err()
            .to_string()
            .contains("quick_gelu"));
        let eps: Value =
            serde_json::from_str(r#"{"text_config": {"layer_norm_eps": 1e-6}}"#).unwrap();
        assert!(configs(&eps).unwrap_err().to_string().contains("1e-5"));
        let heads: Value = serde_json::from_str(
            r#"{"text_config": {"hidden_size": 100, "num_attention_heads": 8}}"#,
        )
        .unwrap();
        assert!(configs(&heads)
            .unwrap_err()
            .to_string()
            .contains("multiple"));
    }
}
