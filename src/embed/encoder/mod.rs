//! Pretrained encoders: CLIP, SigLIP and sentence-transformers BERT models, loaded from a model's
//! files with only the towers a step needs.
//!
//! The family comes from `config.json` (`model_type`). Texts are tokenised with the model's own
//! `tokenizer.json` under the family's length rule ([`tokens`]) and embedded in length-sorted
//! sub-batches, so short texts are not padded to the longest of a large batch; results return in
//! input order. Images arrive as normalised `[rows, 3, size, size]` pixels whose geometry the
//! encoder states ([`ImageGeometry`]).

mod bert_host;
pub mod clip;
mod clip_vision_host;
pub mod host_ops;
mod host_weights;
pub mod sentence;
pub mod siglip;
pub mod tokens;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::image::{CLIP_MEAN, CLIP_STD};
use super::model_files::ModelFiles;
use tokens::{PadTo, TextTokenizer};

/// Which architecture a model folder holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    Clip,
    Siglip,
    SentenceBert,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Clip => "clip",
            Family::Siglip => "siglip",
            Family::SentenceBert => "sentence-bert",
        }
    }
}

/// How images must be prepared for the image tower.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageGeometry {
    pub size: u32,
    /// Shorter side to `size` then centre crop (CLIP); otherwise straight to `size × size`.
    pub crop: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

enum TextModel {
    Clip(clip::ClipText),
    Siglip(siglip::SiglipText),
    Sentence(Box<sentence::SentenceBert>),
}

enum ImageModel {
    Clip(clip::ClipImage),
    Siglip(siglip::SiglipImage),
}

pub struct Encoder {
    pub family: Family,
    device: Device,
    text: Option<(TextModel, TextTokenizer, usize)>,
    image: Option<(ImageModel, ImageGeometry, usize)>,
}

/// Sub-batches of texts hold about this many tokens (rows × padded length).
const TOKENS_PER_SUB_BATCH: usize = 2048;

pub fn family(files: &ModelFiles) -> Result<Family> {
    let config = files.config_json()?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    Ok(match model_type {
        "clip" => Family::Clip,
        "siglip" => Family::Siglip,
        "bert" => Family::SentenceBert,
        "" if files.get("modules.json").is_some() => Family::SentenceBert,
        other => bail!(
            "model {}: `model_type = \"{other}\"` in config.json is not supported; msae embeds with CLIP (`clip`), SigLIP (`siglip`) and sentence-transformers BERT (`bert`) models",
            files.described
        ),
    })
}

fn tokenizer_file(files: &ModelFiles) -> Result<&std::path::Path> {
    files.get("tokenizer.json").with_context(|| {
        format!(
            "model {} has no tokenizer.json, which embedding texts needs (a CLIP tokenizer.json can be written from the BPE merges file: see the README)",
            files.described
        )
    })
}

impl Encoder {
    /// Loads the towers asked for from `files` onto `device`.
    pub fn load(files: &ModelFiles, text: bool, image: bool, device: &Device) -> Result<Encoder> {
        let family = family(files)?;
        let weights = files.weights()?;
        let vb = if weights.extension().is_some_and(|e| e == "safetensors") {
            // SAFETY: the weight file is mapped read-only; msae never writes it, and a
            // concurrent writer would be a user error it cannot prevent.
            unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device)? }
        } else {
            VarBuilder::from_pth(weights, DType::F32, device)?
        };
        let loaded = |what: &str, e: anyhow::Error| {
            anyhow::anyhow!(
                "cannot load the {what} tower of {} ({}): {e:#}",
                files.described,
                family.name()
            )
        };
        let mut enc = Encoder {
            family,
            device: device.clone(),
            text: None,
            image: None,
        };
        match family {
            Family::Clip => {
                let (tcfg, vcfg) = clip::configs(&files.config_json()?)?;
                if text {
                    let tok_path = tokenizer_file(files)?;
                    let probe = TextTokenizer::load(
                        tok_path,
                        tcfg.max_position_embeddings,
                        0,
                        PadTo::Longest,
                    )?;
                    let end = probe
                        .token_id("<|endoftext|>")
                        .unwrap_or(tcfg.vocab_size as u32 - 1);
                    let tok = TextTokenizer::load(
                        tok_path,
                        tcfg.max_position_embeddings,
                        end,
                        PadTo::Longest,
                    )?;
                    let model = clip::ClipText::load(&vb, &tcfg).map_err(|e| loaded("text", e))?;
                    enc.text = Some((TextModel::Clip(model), tok, tcfg.projection_dim));
                }
                if image {
                    let model =
                        clip::ClipImage::load(&vb, &vcfg).map_err(|e| loaded("image", e))?;
                    let geometry = ImageGeometry {
                        size: vcfg.image_size as u32,
                        crop: true,
                        mean: CLIP_MEAN,
                        std: CLIP_STD,
                    };
                    enc.image = Some((ImageModel::Clip(model), geometry, vcfg.projection_dim));
                }
            }
            Family::Siglip => {
                let cfg = siglip::config(files)?;
                if text {
                    let t = &cfg.text_config;
                    let tok = TextTokenizer::load(
                        tokenizer_file(files)?,
                        t.max_position_embeddings,
                        t.pad_token_id,
                        PadTo::Fixed(t.max_position_embeddings),
                    )?;
                    let model =
                        siglip::SiglipText::load(&vb, &cfg).map_err(|e| loaded("text", e))?;
                    enc.text = Some((TextModel::Siglip(model), tok, t.hidden_size));
                }
                if image {
                    let v = &cfg.vision_config;
                    let model =
                        siglip::SiglipImage::load(&vb, &cfg).map_err(|e| loaded("image", e))?;
                    let geometry = ImageGeometry {
                        size: v.image_size as u32,
                        crop: false,
                        mean: [0.5; 3],
                        std: [0.5; 3],
                    };
                    enc.image = Some((ImageModel::Siglip(model), geometry, v.hidden_size));
                }
            }
            Family::SentenceBert => {
                if image {
                    bail!("model {} is a text encoder (sentence-transformers BERT); it has no image tower", files.described);
                }
                if text {
                    let model =
                        sentence::SentenceBert::load(files, &vb).map_err(|e| loaded("text", e))?;
                    let tok = TextTokenizer::load(
                        tokenizer_file(files)?,
                        model.pipeline.max_len,
                        model.config.pad_token_id as u32,
                        PadTo::Longest,
                    )?;
                    let dim = model.config.hidden_size;
                    enc.text = Some((TextModel::Sentence(Box::new(model)), tok, dim));
                }
            }
        }
        Ok(enc)
    }

    pub fn text_dim(&self) -> Option<usize> {
        self.text.as_ref().map(|t| t.2)
    }

    pub fn image_dim(&self) -> Option<usize> {
        self.image.as_ref().map(|t| t.2)
    }

    pub fn image_geometry(&self) -> Option<ImageGeometry> {
        self.image.as_ref().map(|t| t.1)
    }

    /// Embeds texts; returns `texts.len() × text_dim` values in input order.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let (model, tok, dim) = self
            .text
            .as_ref()
            .context("the text tower was not loaded")?;
        let encoded = tok.encode(texts)?;
        // Longest first, so each sub-batch pads to a length close to its own texts'.
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].len()));
        let mut out = vec![0f32; texts.len() * dim];
        let mut start = 0;
        while start < order.len() {
            let longest = encoded[order[start]].len().max(1);
            let rows = (TOKENS_PER_SUB_BATCH / longest).clamp(1, order.len() - start);
            let group = &order[start..start + rows];
            let refs: Vec<&[u32]> = group.iter().map(|&i| encoded[i].as_slice()).collect();
            let padded_ids = || -> Result<Tensor> {
                let batch = tok.pad(&refs);
                Ok(Tensor::from_vec(
                    batch.ids,
                    (batch.rows, batch.len),
                    &self.device,
                )?)
            };
            let values: Vec<Vec<f32>> = match model {
                TextModel::Sentence(m) => m.embed(tok, &refs, &self.device)?,
                TextModel::Clip(m) => m.forward(&padded_ids()?)?.to_dtype(DType::F32)?.to_vec2()?,
                TextModel::Siglip(m) => {
                    m.forward(&padded_ids()?)?.to_dtype(DType::F32)?.to_vec2()?
                }
            };
            for (&i, row) in group.iter().zip(values) {
                out[i * dim..(i + 1) * dim].copy_from_slice(&row);
            }
            start += rows;
        }
        Ok(out)
    }

    /// Embeds preprocessed images (`rows × 3 × size × size` values); returns `rows × image_dim`.
    pub fn embed_images(&self, pixels: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        let (model, geometry, _) = self
            .image
            .as_ref()
            .context("the image tower was not loaded")?;
        let s = geometry.size as usize;
        let features = match model {
            ImageModel::Clip(m) => return m.embed(pixels, rows, s, &self.device),
            ImageModel::Siglip(m) => {
                m.forward(&Tensor::from_vec(pixels, (rows, 3, s, s), &self.device)?)?
            }
        };
        Ok(features.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }
}
