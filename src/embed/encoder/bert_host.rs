//! A BERT encoder evaluated on the CPU from host memory with the kernels of [`super::host_ops`].
//!
//! Same weights, same arithmetic as candle-transformers' `BertModel` (which stays the path on
//! other devices and is this module's test oracle); only the evaluation differs: one fused
//! query/key/value product per layer, attention one sequence per task, the bias, activation,
//! residual and layer norm folded into the passes that already touch the values. On short texts
//! this is several times less work outside the dense products (see the README's embedding
//! benchmark).

use anyhow::{bail, Result};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use super::host_ops::{self, Activation, Heads};
use super::host_weights::{get, norm};

struct Layer {
    /// Query, key and value weights stacked: `[3 · hidden, hidden]`.
    qkv_w: Vec<f32>,
    qkv_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    attn_ln: (Vec<f32>, Vec<f32>),
    up_w: Vec<f32>,
    up_b: Vec<f32>,
    down_w: Vec<f32>,
    down_b: Vec<f32>,
    ffn_ln: (Vec<f32>, Vec<f32>),
}

pub struct HostBert {
    hidden: usize,
    heads: usize,
    eps: f64,
    activation: Activation,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Row 0 of the token-type table (every text is one segment).
    segment: Vec<f32>,
    embed_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
    vocab: usize,
    max_positions: usize,
}

impl HostBert {
    /// Reads the weights under `embeddings.` and `encoder.` (or, as checkpoints saved from a
    /// task model have them, under `<model_type>.`).
    pub fn load(vb: &VarBuilder, config: &Config) -> Result<HostBert> {
        match Self::load_at(vb, config) {
            Ok(m) => Ok(m),
            Err(first) => match &config.model_type {
                Some(prefix) => Self::load_at(&vb.pp(prefix), config).map_err(|_| first),
                None => Err(first),
            },
        }
    }

    fn load_at(vb: &VarBuilder, c: &Config) -> Result<HostBert> {
        let h = c.hidden_size;
        if c.num_attention_heads == 0 || !h.is_multiple_of(c.num_attention_heads) {
            bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                c.num_attention_heads
            );
        }
        let e = vb.pp("embeddings");
        let segment = get(&e, &[c.type_vocab_size, h], "token_type_embeddings.weight")?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let s = l.pp("attention.self");
            let mut qkv_w = get(&s, &[h, h], "query.weight")?;
            qkv_w.extend(get(&s, &[h, h], "key.weight")?);
            qkv_w.extend(get(&s, &[h, h], "value.weight")?);
            let mut qkv_b = get(&s, &[h], "query.bias")?;
            qkv_b.extend(get(&s, &[h], "key.bias")?);
            qkv_b.extend(get(&s, &[h], "value.bias")?);
            let f = c.intermediate_size;
            layers.push(Layer {
                qkv_w,
                qkv_b,
                out_w: get(&l, &[h, h], "attention.output.dense.weight")?,
                out_b: get(&l, &[h], "attention.output.dense.bias")?,
                attn_ln: norm(&l.pp("attention.output.LayerNorm"), h)?,
                up_w: get(&l, &[f, h], "intermediate.dense.weight")?,
                up_b: get(&l, &[f], "intermediate.dense.bias")?,
                down_w: get(&l, &[h, f], "output.dense.weight")?,
                down_b: get(&l, &[h], "output.dense.bias")?,
                ffn_ln: norm(&l.pp("output.LayerNorm"), h)?,
            });
        }
        Ok(HostBert {
            hidden: h,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
            activation: match c.hidden_act {
                HiddenAct::Gelu => Activation::GeluErf,
                HiddenAct::GeluApproximate => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
            },
            word: get(&e, &[c.vocab_size, h], "word_embeddings.weight")?,
            position: get(
                &e,
                &[c.max_position_embeddings, h],
                "position_embeddings.weight",
            )?,
            segment: segment[..h].to_vec(),
            embed_ln: norm(&e.pp("LayerNorm"), h)?,
            layers,
            vocab: c.vocab_size,
            max_positions: c.max_position_embeddings,
        })
    }

    /// The last hidden states of each token of `sequences` (token ids, unpadded), packed: one
    /// row of `hidden` per token, sequence after sequence. Nothing is padded, so nothing is
    /// computed for padding.
    pub fn forward(&self, sequences: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.hidden;
        let mut offsets = Vec::with_capacity(sequences.len() + 1);
        offsets.push(0);
        for s in sequences {
            if s.len() > self.max_positions {
                bail!(
                    "{} tokens exceed the model's {} positions",
                    s.len(),
                    self.max_positions
                );
            }
            offsets.push(offsets.last().unwrap() + s.len());
        }
        let m = *offsets.last().unwrap();
        let mut x = Vec::with_capacity(m * h);
        for s in sequences {
            for (t, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab {
                    bail!("token id {id} is outside the vocabulary of {}", self.vocab);
                }
                let (w, p) = (&self.word[id * h..][..h], &self.position[t * h..][..h]);
                x.extend(
                    w.iter()
                        .zip(&self.segment)
                        .zip(p)
                        .map(|((a, b), c)| a + b + c),
                );
            }
        }
        host_ops::add_layer_norm(&mut x, None, &self.embed_ln.0, &self.embed_ln.1, self.eps);
        let heads = Heads {
            count: self.heads,
            dim: h / self.heads,
        };
        let (mut qkv, mut ctx, mut y, mut up) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for l in &self.layers {
            host_ops::linear(&x, m, h, &l.qkv_w, &l.qkv_b, &mut qkv);
            host_ops::attention(&qkv, &offsets, heads, &mut ctx);
            host_ops::linear(&ctx, m, h, &l.out_w, &l.out_b, &mut y);
            host_ops::add_layer_norm(&mut y, Some(&x), &l.attn_ln.0, &l.attn_ln.1, self.eps);
            std::mem::swap(&mut x, &mut y);
            let f = l.up_b.len();
            host_ops::linear(&x, m, h, &l.up_w, &l.up_b, &mut up);
            host_ops::activate_all(self.activation, &mut up);
            host_ops::linear(&up, m, f, &l.down_w, &l.down_b, &mut y);
            host_ops::add_layer_norm(&mut y, Some(&x), &l.ffn_ln.0, &l.ffn_ln.1, self.eps);
            std::mem::swap(&mut x, &mut y);
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use candle_transformers::models::bert::BertModel;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    fn config(act: HiddenAct) -> Config {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 50, "hidden_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 96, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0, "max_position_embeddings": 16, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "classifier_dropout": null, "model_type": "bert"
        }))
        .map(|mut c: Config| {
            c.hidden_act = act;
            c
        })
        .unwrap()
    }

    /// Random weights for every tensor `BertModel` reads, under `prefix`.
    fn weights(c: &Config, prefix: &str, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![c.vocab_size, h],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![c.max_position_embeddings, h],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![c.type_vocab_size, h],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for i in 0..c.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            for p in ["query", "key", "value"] {
                shapes.push((format!("{l}.attention.self.{p}.weight"), vec![h, h]));
                shapes.push((format!("{l}.attention.self.{p}.bias"), vec![h]));
            }
            shapes.push((format!("{l}.attention.output.dense.weight"), vec![h, h]));
            shapes.push((format!("{l}.attention.output.dense.bias"), vec![h]));
            shapes.push((format!("{l}.attention.output.LayerNorm.weight"), vec![h]));
            shapes.push((format!("{l}.attention.output.LayerNorm.bias"), vec![h]));
            shapes.push((format!("{l}.intermediate.dense.weight"), vec![f, h]));
            shapes.push((format!("{l}.intermediate.dense.bias"), vec![f]));
            shapes.push((format!("{l}.output.dense.weight"), vec![h, f]));
            shapes.push((format!("{l}.output.dense.bias"), vec![h]));
            shapes.push((format!("{l}.output.LayerNorm.weight"), vec![h]));
            shapes.push((format!("{l}.output.LayerNorm.bias"), vec![h]));
        }
        shapes
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let is_gain = name.ends_with("LayerNorm.weight");
                let v: Vec<f32> = (0..n)
                    .map(|_| {
                        let r: f32 = rng.random_range(-1.0..1.0);
                        if is_gain {
                            1.0 + 0.2 * r
                        } else {
                            0.3 * r
                        }
                    })
                    .collect();
                (
                    format!("{prefix}{name}"),
                    Tensor::from_vec(v, shape, &Device::Cpu).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn host_bert_matches_candle_transformers_with_padding() {
        for (act, prefix) in [
            (HiddenAct::Gelu, ""),
            (HiddenAct::GeluApproximate, "bert."),
            (HiddenAct::Relu, ""),
        ] {
            let c = config(act);
            let vb = VarBuilder::from_tensors(weights(&c, prefix, 7), DType::F32, &Device::Cpu);
            let oracle = BertModel::load(vb.clone(), &c).unwrap();
            let host = HostBert::load(&vb, &c).unwrap();
            // Three texts of 7, 4 and 1 tokens, padded to 7.
            let (rows, len) = (3, 7);
            let lens = [7, 4, 1];
            let ids: Vec<u32> = (0..rows * len)
                .map(|i| {
                    if i % len < lens[i / len] {
                        (i * 13 % 49 + 1) as u32
                    } else {
                        0
                    }
                })
                .collect();
            let mask: Vec<u32> = (0..rows * len)
                .map(|i| (i % len < lens[i / len]) as u32)
                .collect();
            let seqs: Vec<&[u32]> = (0..rows)
                .map(|r| &ids[r * len..r * len + lens[r]])
                .collect();
            let packed = host.forward(&seqs).unwrap();
            let t_ids = Tensor::from_vec(ids.clone(), (rows, len), &Device::Cpu).unwrap();
            let t_mask = Tensor::from_vec(mask.clone(), (rows, len), &Device::Cpu).unwrap();
            let padded: Vec<f32> = oracle
                .forward(&t_ids, &t_ids.zeros_like().unwrap(), Some(&t_mask))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // The oracle's rows of real tokens, packed as the host model returns them.
            let h = c.hidden_size;
            let want: Vec<f32> = (0..rows)
                .flat_map(|r| padded[r * len * h..(r * len + lens[r]) * h].to_vec())
                .collect();
            let got = packed;
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 2e-5, "{act:?}: worst |diff| {worst}");
        }
    }

    #[test]
    fn out_of_range_ids_and_lengths_are_errors() {
        let c = config(HiddenAct::Gelu);
        let vb = VarBuilder::from_tensors(weights(&c, "", 1), DType::F32, &Device::Cpu);
        let host = HostBert::load(&vb, &c).unwrap();
        let err = host.forward(&[&[60]]).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
        let err = host.forward(&[&[1; 17]]).unwrap_err().to_string();
        assert!(err.contains("exceed"), "{err}");
    }
}
