//! CLIP's image tower evaluated on the CPU from host memory with the kernels of
//! [`super::host_ops`].
//!
//! The arithmetic of candle-transformers' `ClipVisionTransformer` plus the visual projection
//! (which stay the path on other devices and are this module's test oracle): the patch
//! convolution as one product of the image's patches with the flattened kernel, the class token,
//! position embeddings, the pre-layer norm, pre-norm encoder layers with QuickGELU, the
//! post-layer norm of the class token and the projection. Residual additions ride on the dense
//! products (the product accumulates into the residual stream), attention runs one image per task.

use anyhow::Result;
use candle_nn::VarBuilder;
use candle_transformers::models::clip::vision_model::ClipVisionConfig;

use super::host_ops::{self, Activation, Heads};
use super::host_weights::{get, norm};

/// CLIP's layer norms use this epsilon (checked against `config.json` when loading).
const EPS: f64 = 1e-5;

struct Layer {
    ln1: (Vec<f32>, Vec<f32>),
    /// Query, key and value weights stacked: `[3 · hidden, hidden]`.
    qkv_w: Vec<f32>,
    qkv_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    ln2: (Vec<f32>, Vec<f32>),
    fc1_w: Vec<f32>,
    fc1_b: Vec<f32>,
    fc2_w: Vec<f32>,
    fc2_b: Vec<f32>,
}

pub struct HostClipVision {
    hidden: usize,
    heads: usize,
    patch: usize,
    size: usize,
    /// The patch convolution's kernel as a `[hidden, 3 · patch²]` matrix.
    patch_w: Vec<f32>,
    class: Vec<f32>,
    position: Vec<f32>,
    pre_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
    post_ln: (Vec<f32>, Vec<f32>),
    /// `[projection, hidden]`.
    projection: Vec<f32>,
}

impl HostClipVision {
    /// Reads `vision_model.*` and `visual_projection.weight` of a Hugging Face `CLIPModel`.
    pub fn load(vb: &VarBuilder, c: &ClipVisionConfig) -> Result<HostClipVision> {
        let h = c.embed_dim;
        let p = c.patch_size;
        let v = vb.pp("vision_model");
        let e = v.pp("embeddings");
        let grid = c.image_size / p;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = v.pp(format!("encoder.layers.{i}"));
            let a = l.pp("self_attn");
            let mut qkv_w = get(&a, &[h, h], "q_proj.weight")?;
            qkv_w.extend(get(&a, &[h, h], "k_proj.weight")?);
            qkv_w.extend(get(&a, &[h, h], "v_proj.weight")?);
            let mut qkv_b = get(&a, &[h], "q_proj.bias")?;
            qkv_b.extend(get(&a, &[h], "k_proj.bias")?);
            qkv_b.extend(get(&a, &[h], "v_proj.bias")?);
            let f = c.intermediate_size;
            layers.push(Layer {
                ln1: norm(&l.pp("layer_norm1"), h)?,
                qkv_w,
                qkv_b,
                out_w: get(&a, &[h, h], "out_proj.weight")?,
                out_b: get(&a, &[h], "out_proj.bias")?,
                ln2: norm(&l.pp("layer_norm2"), h)?,
                fc1_w: get(&l, &[f, h], "mlp.fc1.weight")?,
                fc1_b: get(&l, &[f], "mlp.fc1.bias")?,
                fc2_w: get(&l, &[h, f], "mlp.fc2.weight")?,
                fc2_b: get(&l, &[h], "mlp.fc2.bias")?,
            });
        }
        Ok(HostClipVision {
            hidden: h,
            heads: c.num_attention_heads,
            patch: p,
            size: c.image_size,
            patch_w: get(&e, &[h, c.num_channels, p, p], "patch_embedding.weight")?,
            class: get(&e, &[h], "class_embedding")?,
            position: get(&e, &[grid * grid + 1, h], "position_embedding.weight")?,
            pre_ln: norm(&v.pp("pre_layrnorm"), h)?,
            layers,
            post_ln: norm(&v.pp("post_layernorm"), h)?,
            projection: get(vb, &[c.projection_dim, h], "visual_projection.weight")?,
        })
    }

    /// The projected features, `[rows, projection]`, of `pixels` (`[rows, 3, size, size]`).
    pub fn forward(&self, pixels: &[f32], rows: usize) -> Result<Vec<f32>> {
        let (h, p, s) = (self.hidden, self.patch, self.size);
        let grid = s / p;
        let len = grid * grid + 1;
        let patch_len = 3 * p * p;
        anyhow::ensure!(
            pixels.len() == rows * 3 * s * s,
            "{} pixel values for {rows} images of 3 × {s} × {s}",
            pixels.len()
        );
        // Every image's patches as rows of (channel, y, x) values: the convolution's layout.
        let mut patches = Vec::with_capacity(rows * grid * grid * patch_len);
        for img in pixels.chunks_exact(3 * s * s) {
            for gy in 0..grid {
                for gx in 0..grid {
                    for ch in img.chunks_exact(s * s) {
                        for y in 0..p {
                            let at = (gy * p + y) * s + gx * p;
                            patches.extend_from_slice(&ch[at..at + p]);
                        }
                    }
                }
            }
        }
        let mut embedded = Vec::new();
        let zero_bias = vec![0f32; h];
        host_ops::linear(
            &patches,
            rows * grid * grid,
            patch_len,
            &self.patch_w,
            &zero_bias,
            &mut embedded,
        );
        drop(patches);
        // Sequences of the class token then the patches, plus position embeddings.
        let m = rows * len;
        let mut x = Vec::with_capacity(m * h);
        for image in embedded.chunks_exact(grid * grid * h) {
            let tokens = self.class.iter().chain(image);
            x.extend(tokens.zip(&self.position).map(|(a, b)| a + b));
        }
        drop(embedded);
        host_ops::add_layer_norm(&mut x, None, &self.pre_ln.0, &self.pre_ln.1, EPS);
        let heads = Heads {
            count: self.heads,
            dim: h / self.heads,
        };
        let offsets: Vec<usize> = (0..=rows).map(|r| r * len).collect();
        let (mut y, mut qkv, mut ctx, mut up) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for l in &self.layers {
            y.clone_from(&x);
            host_ops::add_layer_norm(&mut y, None, &l.ln1.0, &l.ln1.1, EPS);
            host_ops::linear(&y, m, h, &l.qkv_w, &l.qkv_b, &mut qkv);
            host_ops::attention(&qkv, &offsets, heads, &mut ctx);
            host_ops::linear_accumulate(&ctx, m, h, &l.out_w, &l.out_b, &mut x);
            y.clone_from(&x);
            host_ops::add_layer_norm(&mut y, None, &l.ln2.0, &l.ln2.1, EPS);
            host_ops::linear(&y, m, h, &l.fc1_w, &l.fc1_b, &mut up);
            host_ops::activate_all(Activation::QuickGelu, &mut up);
            host_ops::linear_accumulate(&up, m, l.fc1_b.len(), &l.fc2_w, &l.fc2_b, &mut x);
        }
        let mut pooled: Vec<f32> = x
            .chunks_exact(len * h)
            .flat_map(|seq| &seq[..h])
            .copied()
            .collect();
        host_ops::add_layer_norm(&mut pooled, None, &self.post_ln.0, &self.post_ln.1, EPS);
        let mut out = Vec::new();
        let no_bias = vec![0f32; self.projection.len() / h];
        host_ops::linear(&pooled, rows, h, &self.projection, &no_bias, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::random_clip::{random_clip_tensors, TinyClipConfig};
    use candle_core::{DType, Device, Module, Tensor};
    use candle_transformers::models::clip::vision_model::ClipVisionTransformer;

    #[test]
    fn host_clip_vision_matches_candle_transformers() {
        let mut cfg = TinyClipConfig::default();
        cfg.vision.image_size = 64;
        cfg.vision.patch_size = 16;
        let tensors: std::collections::HashMap<String, Tensor> = random_clip_tensors(&cfg, 3)
            .unwrap()
            .into_iter()
            .map(|(name, shape, values)| {
                (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
            })
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let (_, vcfg) = super::super::clip::configs(&cfg.hf_config_json()).unwrap();
        let oracle = ClipVisionTransformer::new(vb.pp("vision_model"), &vcfg).unwrap();
        let projection = candle_nn::linear_no_bias(
            vcfg.embed_dim,
            vcfg.projection_dim,
            vb.pp("visual_projection"),
        )
        .unwrap();
        let host = HostClipVision::load(&vb, &vcfg).unwrap();
        let rows = 3;
        let n = rows * 3 * 64 * 64;
        let pixels: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 2000) as f32 / 1000.0 - 1.0) * 1.7)
            .collect();
        let got = host.forward(&pixels, rows).unwrap();
        let x = Tensor::from_vec(pixels, (rows, 3, 64, 64), &Device::Cpu).unwrap();
        let want: Vec<f32> = projection
            .forward(&oracle.forward(&x).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got.len(), want.len());
        let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "worst |diff| {worst} (largest value {scale})"
        );
        let err = host.forward(&[0.0; 5], 1).unwrap_err().to_string();
        assert!(err.contains("pixel values"), "{err}");
    }
}
