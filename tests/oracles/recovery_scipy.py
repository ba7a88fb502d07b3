"""Independent float64 NumPy/SciPy oracle of msae's `recovery` step (tests/recovery.rs), with
SynthSAEBench's definitions: |cos| of every decoder row (latent) with every true direction, rows
divided by max(norm, 1e-8); MCC the mean |cos| over scipy.optimize.linear_sum_assignment of
1 - |cos| (latents as rows); uniqueness the distinct argmax features per latent over the number of
latents; per latent its firing (code > 0) against the firing (> 0) of its argmax feature: TP, FP,
FN, TN, precision, recall, F1 (0 where undefined), accuracy, and their means over all latents;
true and SAE L0, dead latents, shrinkage (mean |x_hat|/|x| where |x| > 1e-6) and explained
variance (1 - mean |x - x_hat|^2 / (mean |x|^2 - |mean x|^2)).

usage: recovery_scipy.py MODEL TRUTH.npy OUT.json [DATA.npy CODES.npy RECON.npy [FIRING]]
CODES and RECON: the SAE's sparse code and reconstruction of DATA (an `extract` step's
`sparse_codes` and `sparse_recon`); FIRING: the true activations of DATA's rows, CSR codes
(safetensors) or a dense .npy.
"""

import json
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment

from msae_files import read_csr, read_safetensors


def unit(m):
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-8)


def main():
    model, truth, out = sys.argv[1:4]
    _, t = read_safetensors(model)
    dec = t["decoder"].astype(np.float64)
    f = np.load(truth).astype(np.float64)
    a = np.abs(unit(dec) @ unit(f).T)  # [latents, features]
    rows, cols = linear_sum_assignment(1.0 - a)
    best = np.argmax(a, axis=1)  # first maximum
    best_latent = np.argmax(a, axis=0)
    best_value = a[best_latent, np.arange(a.shape[1])]
    r = {
        "mcc": float(a[rows, cols].mean()),
        "pairs": [[int(i), int(j)] for i, j in zip(rows, cols)],
        "uniqueness": len(np.unique(best)) / a.shape[0],
        "best_feature": best.tolist(),
        "best_latent": best_latent.tolist(),
        "mean_max_abs_cos": float(best_value.mean()),
        "recovered_abs": float(np.mean(best_value > 0.9)),
    }
    # How far the optimum is from a different matching: the smallest gap between |cos| values of
    # one latent, which float rounding would have to bridge to change any argmax.
    s = np.sort(a, axis=1)
    r["min_argmax_gap"] = float(np.min(s[:, -1] - s[:, -2])) if a.shape[1] > 1 else 1.0
    if len(sys.argv) > 4:
        x = np.load(sys.argv[4]).astype(np.float64)
        z = np.load(sys.argv[5]).astype(np.float64)
        xh = np.load(sys.argv[6]).astype(np.float64)
        fires = z > 0
        r["sae_l0"] = float(fires.sum(axis=1).mean())
        r["dead_latents"] = int((~fires.any(axis=0)).sum())
        norm = np.linalg.norm(x, axis=1)
        keep = norm > 1e-6
        r["shrinkage"] = float((np.linalg.norm(xh, axis=1)[keep] / norm[keep]).mean())
        variance = (x**2).sum(axis=1).mean() - (x.mean(axis=0) ** 2).sum()
        r["explained_variance"] = float(1.0 - ((x - xh) ** 2).sum(axis=1).mean() / variance)
        if len(sys.argv) > 7:
            path = sys.argv[7]
            is_npy = open(path, "rb").read(6) == b"\x93NUMPY"
            acts = np.load(path).astype(np.float64) if is_npy else read_csr(path)
            gt = acts[:, best] > 0
            tp = (fires & gt).sum(axis=0)
            fp = (fires & ~gt).sum(axis=0)
            fn = (~fires & gt).sum(axis=0)
            tn = (~fires & ~gt).sum(axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
                rec = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
                f1 = np.where(p + rec > 0, 2 * p * rec / (p + rec), 0.0)
            r["true_l0"] = float((acts > 0).sum(axis=1).mean())
            r["precision"] = float(p.mean())
            r["recall"] = float(rec.mean())
            r["f1"] = float(f1.mean())
            r["accuracy"] = float(((tp + tn) / len(x)).mean())
            r["counts"] = np.stack([tp, fp, fn, tn], axis=1).tolist()
            r["latent_f1"] = f1.tolist()
    json.dump(r, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
