"""An independent sentence-embedding pass of a BERT sentence model (all-MiniLM-L6-v2) in NumPy,
in float64, for checking other implementations.

Usage:
  minilm_numpy.py MODEL_DIR TEXTS.txt OUT.npy

MODEL_DIR holds the model as published: `config.json` (a BERT config), `vocab.txt` (one
WordPiece token per line, its line number the id) and `model.safetensors`. TEXTS has one text
per line. OUT receives float64 [N, hidden] sentence embeddings.

The pipeline, from its definitions (Devlin et al. 2019; Reimers & Gurevych 2019):
  tokens: lowercase, accents removed (NFD, combining marks dropped), split on whitespace and
          around every punctuation character, each word split greedily into the longest
          vocabulary pieces (continuations prefixed `##`; a word with no split is `[UNK]`),
          framed as [CLS] … [SEP];
  embeddings: word + position + token type 0, then LayerNorm;
  encoder layer: x = LN(x + Wo·Attn(x)); x = LN(x + W2·gelu(W1·x)), gelu with erf;
  attention: per head softmax(q kᵀ / sqrt(d_head)) v (one text at a time, so no padding);
  sentence: mean of the token states, scaled to unit length.
"""
import json
import math
import struct
import sys
import unicodedata

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "I64": "<i8"}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in DTYPES:
            continue
        start, end = info["data_offsets"]
        values = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = values.reshape(info["shape"]).astype(np.float64)
    return tensors


def is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def words(text):
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out = []
    for chunk in text.split():
        current = ""
        for ch in chunk:
            if is_punctuation(ch):
                if current:
                    out.append(current)
                    current = ""
                out.append(ch)
            else:
                current += ch
        if current:
            out.append(current)
    return out


def wordpiece(word, vocab):
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        found = None
        while start < end:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = piece
                break
            end -= 1
        if found is None:
            return ["[UNK]"]
        pieces.append(found)
        start = end
    return pieces


def token_ids(text, vocab):
    tokens = ["[CLS]"]
    for w in words(text):
        tokens.extend(wordpiece(w, vocab))
    tokens.append("[SEP]")
    return [vocab[t] for t in tokens]


def layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def linear(x, t, prefix):
    return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def embed(ids, t, cfg):
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    n = len(ids)
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][:n]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    d = x.shape[1]
    dh = d // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = linear(x, t, p + "attention.self.query").reshape(n, heads, dh).transpose(1, 0, 2)
        k = linear(x, t, p + "attention.self.key").reshape(n, heads, dh).transpose(1, 0, 2)
        v = linear(x, t, p + "attention.self.value").reshape(n, heads, dh).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        scores -= scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=-1, keepdims=True)
        attended = (weights @ v).transpose(1, 0, 2).reshape(n, d)
        x = layer_norm(
            x + linear(attended, t, p + "attention.output.dense"),
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        hidden = gelu(linear(x, t, p + "intermediate.dense"))
        x = layer_norm(
            x + linear(hidden, t, p + "output.dense"),
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
            eps,
        )
    pooled = x.mean(axis=0)
    return pooled / np.linalg.norm(pooled)


def main():
    model_dir, texts_path, out_path = sys.argv[1:4]
    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    with open(f"{model_dir}/vocab.txt", encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    tensors = read_safetensors(f"{model_dir}/model.safetensors")
    with open(texts_path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    out = np.stack([embed(token_ids(text, vocab), tensors, cfg) for text in texts])
    np.save(out_path, out)


if __name__ == "__main__":
    main()
