"""An independent CLIP forward pass in NumPy, in float64, for checking other implementations.

Usage:
  clip_numpy.py MODEL_DIR [--pixels PIXELS.npy --image-out IMAGE.npy]
                          [--ids IDS.npy --text-out TEXT.npy]

MODEL_DIR holds a Hugging Face CLIP model: `config.json` (a `CLIPModel` config with
`text_config` and `vision_config`) and `model.safetensors` (read here directly: an 8-byte
little-endian header length, a JSON header of name -> dtype, shape, byte offsets, then the raw
little-endian data). PIXELS is a float array [B, 3, H, W] of preprocessed images, IDS an integer
array [B, L] of token ids. The outputs are the projected features, float64 [B, projection_dim]
(before any normalisation).

The architecture, from its definition (Radford et al. 2021, and the Hugging Face weight layout):
  encoder layer (both towers):  x = x + Attn(LN1(x));  x = x + fc2(quick_gelu(fc1(LN2(x))))
  attention: per head softmax(q k^T / sqrt(d_head) + mask) v, then the output projection;
  quick_gelu(x) = x * sigmoid(1.702 x);
  vision: patches = conv(pixels, kernel = stride = patch, no bias), flattened row by row;
          tokens = [class embedding, patches] + position embeddings; pre-LN; encoder (no mask);
          post-LN of the class token; visual projection (no bias);
  text:   tokens = token embeddings + position embeddings; encoder with a causal mask;
          final LN; the state at the first position of the largest id in each row (the end
          token, CLIP's largest id); text projection (no bias).
"""
import argparse
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{name}: dtype {info['dtype']} is not supported here")
        start, end = info["data_offsets"]
        values = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = values.reshape(info["shape"]).astype(np.float64)
    return tensors


def layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def linear(x, weights, prefix, bias=True):
    y = x @ weights[prefix + ".weight"].T
    if bias:
        y = y + weights[prefix + ".bias"]
    return y


def quick_gelu(x):
    return x / (1.0 + np.exp(-1.702 * x))


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def attention(x, w, prefix, heads, mask):
    batch, seq, hidden = x.shape
    d = hidden // heads

    def split(y):  # [B, S, H*d] -> [B, H, S, d]
        return y.reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)

    q = split(linear(x, w, prefix + ".q_proj"))
    k = split(linear(x, w, prefix + ".k_proj"))
    v = split(linear(x, w, prefix + ".v_proj"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    out = softmax(scores) @ v  # [B, H, S, d]
    out = out.transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    return linear(out, w, prefix + ".out_proj")


def encoder(x, w, prefix, layers, heads, eps, mask):
    for i in range(layers):
        p = f"{prefix}.encoder.layers.{i}"
        h = layer_norm(x, w[p + ".layer_norm1.weight"], w[p + ".layer_norm1.bias"], eps)
        x = x + attention(h, w, p + ".self_attn", heads, mask)
        h = layer_norm(x, w[p + ".layer_norm2.weight"], w[p + ".layer_norm2.bias"], eps)
        x = x + linear(quick_gelu(linear(h, w, p + ".mlp.fc1")), w, p + ".mlp.fc2")
    return x


def check_activation(cfg, tower):
    act = cfg.get("hidden_act", "quick_gelu")
    if act != "quick_gelu":
        raise ValueError(f"{tower}: activation {act!r}; this oracle implements quick_gelu")


def image_features(pixels, w, cfg):
    vc = cfg["vision_config"]
    check_activation(vc, "vision")
    eps = vc.get("layer_norm_eps", 1e-5)
    p = vc["patch_size"]
    pixels = np.asarray(pixels, dtype=np.float64)
    batch, channels, height, width = pixels.shape
    gh, gw = height // p, width // p
    if (gh * p, gw * p) != (height, width):
        raise ValueError(f"image {height}x{width} is not a whole number of {p}-pixel patches")
    # A convolution with kernel = stride = p is a linear map of each non-overlapping patch.
    patches = (
        pixels.reshape(batch, channels, gh, p, gw, p)
        .transpose(0, 2, 4, 1, 3, 5)  # [B, gh, gw, C, p, p]
        .reshape(batch, gh * gw, channels * p * p)
    )
    kernel = w["vision_model.embeddings.patch_embedding.weight"]  # [D, C, p, p]
    hidden = kernel.shape[0]
    tokens = patches @ kernel.reshape(hidden, -1).T  # [B, N, D]
    cls = np.broadcast_to(w["vision_model.embeddings.class_embedding"], (batch, 1, hidden))
    x = np.concatenate([cls, tokens], axis=1)
    x = x + w["vision_model.embeddings.position_embedding.weight"][None, : x.shape[1]]
    x = layer_norm(x, w["vision_model.pre_layrnorm.weight"], w["vision_model.pre_layrnorm.bias"], eps)
    x = encoder(x, w, "vision_model", vc["num_hidden_layers"], vc["num_attention_heads"], eps, None)
    pooled = layer_norm(
        x[:, 0], w["vision_model.post_layernorm.weight"], w["vision_model.post_layernorm.bias"], eps
    )
    return pooled @ w["visual_projection.weight"].T


def text_features(ids, w, cfg):
    tc = cfg["text_config"]
    check_activation(tc, "text")
    eps = tc.get("layer_norm_eps", 1e-5)
    ids = np.asarray(ids, dtype=np.int64)
    batch, seq = ids.shape
    x = w["text_model.embeddings.token_embedding.weight"][ids]
    x = x + w["text_model.embeddings.position_embedding.weight"][None, :seq]
    causal = np.tril(np.ones((seq, seq), dtype=bool))[None, None]  # query i sees keys j <= i
    x = encoder(x, w, "text_model", tc["num_hidden_layers"], tc["num_attention_heads"], eps, causal)
    x = layer_norm(
        x, w["text_model.final_layer_norm.weight"], w["text_model.final_layer_norm.bias"], eps
    )
    positions = ids.argmax(axis=1)  # NumPy's argmax returns the first maximum
    pooled = x[np.arange(batch), positions]
    return pooled @ w["text_projection.weight"].T


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--pixels")
    ap.add_argument("--image-out")
    ap.add_argument("--ids")
    ap.add_argument("--text-out")
    args = ap.parse_args(argv)
    with open(f"{args.model_dir}/config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    w = read_safetensors(f"{args.model_dir}/model.safetensors")
    if args.pixels:
        np.save(args.image_out, image_features(np.load(args.pixels), w, cfg))
    if args.ids:
        np.save(args.text_out, text_features(np.load(args.ids), w, cfg))


if __name__ == "__main__":
    main(sys.argv[1:])
