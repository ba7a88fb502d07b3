//! SigLIP through candle-transformers: `config.json` deserialises into its configuration.
//!
//! The text tower pools the last position, so every text is padded to the full context
//! (`max_position_embeddings`, 64) with the pad id; images are resized straight to the model's
//! square size (no crop) and normalised with mean = std = 0.5.

use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::siglip::{Config, TextModel, VisionModel};

pub fn config(files: &super::super::model_files::ModelFiles) -> Result<Config> {
    serde_json::from_value(files.config_json()?).map_err(|e| {
        anyhow::anyhow!(
            "config.json of {} is not a SigLIP configuration msae can read: {e}",
            files.described
        )
    })
}

pub struct SiglipText(TextModel);

impl SiglipText {
    pub fn load(vb: &VarBuilder, cfg: &Config) -> Result<SiglipText> {
        Ok(SiglipText(TextModel::new(
            &cfg.text_config,
            vb.pp("text_model"),
        )?))
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(ids)?)
    }
}

pub struct SiglipImage(VisionModel);

impl SiglipImage {
    pub fn load(vb: &VarBuilder, cfg: &Config) -> Result<SiglipImage> {
        Ok(SiglipImage(VisionModel::new(
            &cfg.vision_config,
            true,
            vb.pp("vision_model"),
        )?))
    }

    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(pixels)?)
    }
}
