"""Independent float64 NumPy oracle of msae's `bias` step (tests/bias.rs).

Reads the SAE and the probe from their safetensors files (parsed here by hand: an 8-byte header
length, a JSON header with msae's metadata under __metadata__.msae, then the raw tensors), the
data, labels and groups, and msae's own report only for *which* latents it tested (the concepts,
their controls and the scales). For each concept and scale it applies the intervention literally:
standardise the row, take the SAE's sparse code (per-row TopK), multiply the concept's entry by
the factor, add the change of the decoder's output to the standardised row, un-standardise, and
apply the probe (its own standardisation, division by the norm, affine map, softmax). It reports
the mean change of every class's probability, the flip rate and the accuracy change over all rows
and per group, for the concept and for its control (the mean of the same numbers over its
control latents), and the baseline. Only the TopK family is covered (what the test trains).

usage: bias_numpy.py MODEL PROBE DATA.npy LABELS.txt GROUPS.txt|- REPORT.json OUT.json

OUT.json also holds `min_code_gap`, the smallest difference between the k-th and (k+1)-th
pre-activation of any row (how far the f32 top-k selection is from a tie), `min_logit_gap`, the
smallest difference between the two largest logits of any evaluated row (how far a prediction is
from a tie), and each tested latent's firing frequency.
"""

import json
import sys

import numpy as np

from msae_files import lines, read_safetensors


def main():
    model, probe_path, data, labels, groups, report, out = sys.argv[1:8]
    meta, t = read_safetensors(model)
    cfg = meta["config"]
    assert cfg["arch"] == "topk", cfg["arch"]
    assert cfg.get("topk_variant", "relu") == "relu" and float(cfg.get("soft_cap", 0.0)) == 0.0
    f = lambda name: t[name].astype(np.float64)
    pre_bias, enc, lat_bias, dec, mean = f("pre_bias"), f("encoder"), f("latent_bias"), f("decoder"), f("mean_center")
    s = float(meta["scale"])
    k = int(cfg["k"])

    pmeta, pt = read_safetensors(probe_path)
    assert pmeta["format"] == "msae-probe-v1", pmeta
    classes = pmeta["classes"]
    W, b = pt["weight"].astype(np.float64), pt["bias"].astype(np.float64)
    pmean, pscale = pt["mean"].astype(np.float64), float(pt["scale"][0])
    eps = float(pmeta["norm_eps"])

    x = np.load(data).astype(np.float64)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[l] for l in lines(labels)])
    g = np.array(lines(groups)) if groups != "-" else None
    rows = x.shape[0]

    # The sparse TopK code (TopKReLU): the k largest pre-activations of each row, kept if positive.
    xs = (x - mean) * s
    p = (xs - pre_bias) @ enc + lat_bias
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    code_gap = float(np.min(ranked[:, k - 1] - ranked[:, k])) if k < p.shape[1] else float("inf")
    z = np.zeros_like(p)
    top = order[:, :k]
    r_idx = np.arange(rows)[:, None]
    z[r_idx, top] = np.maximum(p[r_idx, top], 0.0)

    logit_gaps = []

    def probe(raw):
        v = (raw - pmean) * pscale
        norm = np.maximum(np.linalg.norm(v, axis=1, keepdims=True), eps)
        l = (v / norm) @ W.T + b
        top2 = np.sort(l, axis=1)[:, -2:]
        logit_gaps.append(float(np.min(top2[:, 1] - top2[:, 0])))
        e = np.exp(l - l.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    # The baseline: the probe on the rows themselves.
    p0 = probe(x)
    pred0 = np.argmax(p0, axis=1)
    correct0 = (pred0 == y).astype(np.float64)

    def per_row(latent, factor):
        """Per-row changes [rows, C + 2] of scaling one latent's code by `factor`."""
        z2 = z.copy()
        z2[:, latent] *= factor
        x2 = xs + (z2 @ dec + pre_bias) - (z @ dec + pre_bias)
        p1 = probe(x2 / s + mean)
        pred1 = np.argmax(p1, axis=1)
        flip = (pred1 != pred0).astype(np.float64)
        acc = (pred1 == y).astype(np.float64) - correct0
        return np.concatenate([p1 - p0, flip[:, None], acc[:, None]], axis=1)

    populations = {"all": np.ones(rows, dtype=bool)}
    if g is not None:
        for name in sorted(set(g.tolist())):
            populations[name] = g == name

    def estimates(changes, mask):
        m = changes[mask].mean(axis=0)
        return {
            "probability_change": {c: float(m[i]) for i, c in enumerate(classes)},
            "flip_rate": float(m[-2]),
            "accuracy_change": float(m[-1]),
        }

    rep = json.load(open(report))
    result = {"classes": classes, "baseline": {}, "concepts": [], "frequency": {}}
    for name, mask in populations.items():
        result["baseline"][name] = {
            "rows": int(mask.sum()),
            "accuracy": float(correct0[mask].mean()),
            "probability": {c: float(p0[mask, i].mean()) for i, c in enumerate(classes)},
        }
    firing = (z != 0).mean(axis=0)
    for concept in rep["concepts"]:
        latent = concept["latent"]
        controls = [c["latent"] for c in concept["controls"]]
        for j in [latent, *controls]:
            result["frequency"][str(j)] = float(firing[j])
        effects = []
        for factor in rep["scales"]:
            mine = per_row(latent, factor)
            theirs = np.mean([per_row(j, factor) for j in controls], axis=0)
            effects.append(
                {
                    "scale": factor,
                    "populations": {
                        name: {"concept": estimates(mine, mask), "control": estimates(theirs, mask)}
                        for name, mask in populations.items()
                    },
                }
            )
        result["concepts"].append({"latent": latent, "effects": effects})
    result["min_code_gap"] = code_gap
    result["min_logit_gap"] = min(logit_gaps)
    json.dump(result, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
