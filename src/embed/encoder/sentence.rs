//! Sentence-transformers BERT encoders (all-MiniLM-L6-v2 and kin): the transformer's hidden
//! states pooled over the text's tokens, then L2-normalised when the model's pipeline says so.
//!
//! The pipeline is read from the model's own files: `modules.json` (is there a `Normalize`
//! module?), `1_Pooling/config.json` (mean or first-token pooling) and
//! `sentence_bert_config.json` (the maximum length, 256 for all-MiniLM-L6-v2).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::Value;

use super::super::model_files::{read_json, ModelFiles};
use super::bert_host::HostBert;
use super::tokens::TextTokenizer;

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pooling {
    /// The mean over the text's tokens (padding excluded).
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
}

/// The pipeline settings of a sentence-transformers model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_len: usize,
}

impl Pipeline {
    /// Reads the pipeline; a plain BERT folder (no sentence-transformers files) gets mean pooling
    /// without normalisation and the model's position limit.
    pub fn read(files: &ModelFiles, max_positions: usize) -> Result<Pipeline> {
        let normalize = match files.get("modules.json") {
            Some(p) => read_json(p)?
                .as_array()
                .map(|mods| {
                    mods.iter().any(|m| {
                        m.get("type")
                            .and_then(Value::as_str)
                            .is_some_and(|t| t.ends_with("Normalize"))
                    })
                })
                .unwrap_or(false),
            None => false,
        };
        let pooling = match files.get("1_Pooling/config.json") {
            Some(p) => {
                let cfg = read_json(p)?;
                let on = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
                match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
                    (true, false) => Pooling::Mean,
                    (false, true) => Pooling::Cls,
                    _ => bail!(
                        "{}: msae supports mean or first-token pooling, one at a time",
                        p.display()
                    ),
                }
            }
            None => Pooling::Mean,
        };
        let max_len = match files.get("sentence_bert_config.json") {
            Some(p) => read_json(p)?
                .get("max_seq_length")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .unwrap_or(max_positions),
            None => max_positions,
        }
        .min(max_positions);
        Ok(Pipeline {
            pooling,
            normalize,
            max_len,
        })
    }
}

/// Where the transformer runs: candle-transformers' model on any device, or the host kernels on
/// the CPU (the same arithmetic, several times faster on short texts).
enum Transformer {
    Candle(BertModel),
    Host(HostBert),
}

pub struct SentenceBert {
    model: Transformer,
    pub pipeline: Pipeline,
    pub config: Config,
}

impl SentenceBert {
    pub fn load(files: &ModelFiles, vb: &VarBuilder) -> Result<SentenceBert> {
        let config: Config = serde_json::from_value(files.config_json()?).map_err(|e| {
            anyhow::anyhow!(
                "config.json of {} is not a BERT configuration msae can read: {e}",
                files.described
            )
        })?;
        let pipeline = Pipeline::read(files, config.max_position_embeddings)?;
        let model = if vb.device().is_cpu() {
            Transformer::Host(HostBert::load(vb, &config)?)
        } else {
            Transformer::Candle(BertModel::load(vb.clone(), &config)?)
        };
        Ok(SentenceBert {
            model,
            pipeline,
            config,
        })
    }

    /// Embeds token sequences (unpadded); returns one vector of `hidden` values per sequence.
    pub fn embed(
        &self,
        tok: &TextTokenizer,
        sequences: &[&[u32]],
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let model = match &self.model {
            Transformer::Host(m) => m,
            Transformer::Candle(_) => {
                let batch = tok.pad(sequences);
                let ids = Tensor::from_vec(batch.ids, (batch.rows, batch.len), device)?;
                let mask = Tensor::from_vec(batch.mask, (batch.rows, batch.len), device)?;
                return Ok(self.forward(&ids, &mask)?.to_dtype(DType::F32)?.to_vec2()?);
            }
        };
        let h = self.config.hidden_size;
        let states = model.forward(sequences)?;
        let mut rows = Vec::with_capacity(sequences.len());
        let mut start = 0;
        for s in sequences {
            let tokens = &states[start * h..(start + s.len()) * h];
            start += s.len();
            let mut v = match self.pipeline.pooling {
                Pooling::Cls => tokens
                    .get(..h)
                    .map_or_else(|| vec![0.0; h], <[f32]>::to_vec),
                Pooling::Mean => {
                    let mut sum = vec![0f32; h];
                    for t in tokens.chunks_exact(h) {
                        for (a, b) in sum.iter_mut().zip(t) {
                            *a += b;
                        }
                    }
                    // sentence-transformers clamps the token count at 1e-9.
                    let count = (s.len() as f32).max(1e-9);
                    sum.iter().map(|x| x / count).collect()
                }
            };
            if self.pipeline.normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
            rows.push(v);
        }
        Ok(rows)
    }

    /// `ids`, `mask`: `[rows, len]` u32 on candle-transformers' model. Returns `[rows, hidden]`.
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let Transformer::Candle(model) = &self.model else {
            bail!("internal error: padded batches go to candle-transformers' model only");
        };
        let states = model.forward(ids, &ids.zeros_like()?, Some(mask))?;
        let pooled = match self.pipeline.pooling {
            Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let sum = states.broadcast_mul(&m)?.sum(1)?;
                // sentence-transformers clamps the token count at 1e-9 (an empty mask gives 0).
                let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
                sum.broadcast_div(&count)?
            }
        };
        if self.pipeline.normalize {
            Ok(l2_normalize(&pooled)?)
        } else {
            Ok(pooled)
        }
    }
}

/// Rows divided by their L2 norm (a zero row stays zero, as sentence-transformers' clamp at
/// 1e-12 leaves it).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}
