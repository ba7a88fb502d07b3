"""Independent float64 NumPy oracle of msae's `zero_shot` step (tests/zero_shot.rs).

Reads the trained SAE from its safetensors file (parsed here by hand: an 8-byte header length,
a JSON header with msae's metadata under __metadata__.msae, then the raw tensors), the data,
the class embeddings, the labels and the class names, and computes what the step reports:
for the original rows, the dense reconstruction and the reconstruction from the k largest
entries of the dense code, the accuracy, mean cross-entropy at the true class, agreement with
the original predictions and the accuracy recovered. Only the TopK family with the model's own
statistics is covered (what the test trains).

usage: zero_shot_numpy.py MODEL DATA.npy CLASSES.npy LABELS.txt CLASS_NAMES.txt LOGIT_SCALE KS OUT.json
(KS: comma-separated k values). OUT.json also holds `min_gap`, the smallest difference between
the two largest logits of any row of any evaluated matrix, so the test can tell that its float32
predictions cannot flip.
"""

import json
import sys

import numpy as np

from msae_files import lines, read_safetensors


def main():
    model, data, classes, labels, names, scale, ks, out = sys.argv[1:9]
    scale = float(scale)
    ks = [int(k) for k in ks.split(",") if k]
    meta, t = read_safetensors(model)
    cfg = meta["config"]
    assert cfg["arch"] in ("topk", "batchtopk", "msae"), cfg["arch"]
    f = lambda name: t[name].astype(np.float64)
    pre_bias, enc, lat_bias, dec, mean = f("pre_bias"), f("encoder"), f("latent_bias"), f("decoder"), f("mean_center")
    s = float(meta["scale"])
    n = meta["n"]

    x = np.load(data).astype(np.float64)
    c = np.load(classes).astype(np.float64)
    names = lines(names)
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[l] for l in lines(labels)])

    # The dense code of the top-k family: the activation without its selection.
    p = ((x - mean) * s - pre_bias) @ enc + lat_bias
    variant = cfg.get("topk_variant", "relu")
    dense = {"plain": p, "relu": np.maximum(p, 0), "abs": np.abs(p), "absrelu": np.abs(p)}[variant]
    cap = float(cfg.get("soft_cap", 0.0))
    if cap > 0:
        dense = cap * np.tanh(dense / cap)

    def recon(z):
        return (z @ dec + pre_bias) / s + mean

    def keep_topk(z, k):
        if k >= n:
            return z
        # Larger first, ties by lower column: a stable sort of −z.
        order = np.argsort(-z, axis=1, kind="stable")[:, :k]
        out = np.zeros_like(z)
        rows = np.arange(z.shape[0])[:, None]
        out[rows, order] = z[rows, order]
        return out

    cu = c / np.linalg.norm(c, axis=1, keepdims=True)
    gaps = []

    def logits(m):
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        u = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
        l = scale * (u @ cu.T)
        top2 = np.sort(l, axis=1)[:, -2:]
        gaps.append(float(np.min(top2[:, 1] - top2[:, 0])))
        return l

    def evaluate(m, reference):
        l = logits(m)
        pred = np.argmax(l, axis=1)  # first maximum: ties to the lower class
        mx = l.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(l - mx).sum(axis=1))
        ce = lse - l[np.arange(len(y)), y]
        return pred, {
            "accuracy": float(np.mean(pred == y)),
            "cross_entropy": float(np.mean(ce)),
            "agreement": float(np.mean(pred == reference)) if reference is not None else 1.0,
        }

    ref, original = evaluate(x, None)
    result = {"classes": len(names), "rows": int(x.shape[0]), "original": original, "topk": {}}
    _, result["dense"] = evaluate(recon(dense), ref)
    for k in ks:
        _, result["topk"][str(k)] = evaluate(recon(keep_topk(dense, min(k, n))), ref)
    base = original["accuracy"]
    for entry in [result["original"], result["dense"], *result["topk"].values()]:
        entry["accuracy_recovered"] = entry["accuracy"] / base if base > 0 else None
    result["min_gap"] = min(gaps)
    json.dump(result, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
