"""SAELens' inference forward pass in float64 NumPy, from a SAELens folder, as SAELens 6 defines it
(sae_lens/saes/*.py): an independent reference for msae's SAELens reader.

usage: saelens_numpy.py FOLDER DATA.npy CODES_OUT.npy RECON_OUT.npy [NORM_SCALING_FACTOR]

For a raw row x:
  x_n = x * c                      normalize_activations = expected_average_only_in with a known
                                   factor c (the argument, else the folder's
                                   activation_scaler.json); otherwise x_n = x
  h   = (x_n - b_dec * apply_b_dec_to_input) @ W_enc + b_enc
  standard:   z = relu(h)
  topk:       h *= |W_dec rows| if rescale_acts_by_decoder_norm (default false);
              z = relu of the k largest entries of h, 0 elsewhere
  jumprelu:   z = relu(h) * (h > threshold)
  batchtopk, matryoshka_batchtopk (training layouts): SAELens saves them for inference as a
              JumpReLU with topk_threshold for every latent after folding the decoder norms
              (rescale_acts_by_decoder_norm, default true): h *= |W_dec rows|;
              z = relu(h) * (h > topk_threshold)
  x_hat = ((z / |W_dec rows| if rescaled) @ W_dec + b_dec) / c
Writes z and x_hat as float64 .npy files.
"""

import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    body = raw[8 + n :]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        chunk = body[start:end]
        dtype = info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16
            values = bits.view(np.float32)
        else:
            values = np.frombuffer(chunk, dtype={"F32": "<f4", "F64": "<f8", "F16": "<f2"}[dtype])
        tensors[name] = values.astype(np.float64).reshape(info["shape"])
    return tensors


def main():
    folder, data, codes_out, recon_out = sys.argv[1:5]
    given = float(sys.argv[5]) if len(sys.argv) > 5 else None
    cfg = json.load(open(os.path.join(folder, "cfg.json")))
    t = read_safetensors(os.path.join(folder, "sae_weights.safetensors"))
    x = np.load(data).astype(np.float64)
    arch = cfg["architecture"]
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", "expected_average_only_in"):
        raise SystemExit(f"this oracle does not implement normalize_activations = {norm}")
    c = None
    if norm == "expected_average_only_in":
        c = given
        scaler = os.path.join(folder, "activation_scaler.json")
        if c is None and os.path.exists(scaler):
            c = json.load(open(scaler))["scaling_factor"]
    w_enc, b_enc, w_dec, b_dec = t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"]
    batch_family = arch in ("batchtopk", "matryoshka_batchtopk")
    rescale = cfg.get("rescale_acts_by_decoder_norm", batch_family)
    norms = np.linalg.norm(w_dec, axis=1)

    xn = x * c if c is not None else x
    sae_in = xn - b_dec if cfg.get("apply_b_dec_to_input", True) else xn
    h = sae_in @ w_enc + b_enc
    if rescale:
        h = h * norms
    if arch == "standard":
        z = np.maximum(h, 0.0)
    elif arch == "topk":
        k = int(cfg.get("k", 100))
        idx = np.argpartition(-h, k - 1, axis=1)[:, :k]
        z = np.zeros_like(h)
        rows = np.arange(h.shape[0])[:, None]
        z[rows, idx] = np.maximum(h[rows, idx], 0.0)
    elif arch == "jumprelu":
        z = np.maximum(h, 0.0) * (h > t["threshold"])
    elif batch_family:
        z = np.maximum(h, 0.0) * (h > float(t["topk_threshold"]))
    else:
        raise SystemExit(f"this oracle does not implement architecture {arch}")
    z_dec = z / norms if rescale else z
    recon = z_dec @ w_dec + b_dec
    if c is not None:
        recon = recon / c
    np.save(codes_out, z)
    np.save(recon_out, recon)


main()
