"""Independent float64 NumPy oracle of msae's `concept_search` step (tests/concept_search.rs).

Reads the trained SAE from its safetensors file (parsed here by hand, as zero_shot_numpy.py does),
the query and gallery matrices, the `name` step's names and the gallery's labels and texts, and
computes what the step writes: for every edit, strength and query the edited embedding — the
sparse TopK code with one latent set, increased, scaled or removed, decoded and taken back through
the standardisation, plus the reconstruction error x − dec(z) when `residual` is on — and its k
gallery rows of highest cosine (ties to the lower row, the query's own row left out when queries
and gallery are one matrix), with the latent's activation in each; and per (edit, strength) the
mean activation, mean cosine, mean cosine to the original query ("kept"), and the shares of
neighbours labelled with the concept's name or holding it as a whole word in their text. Only
the per-row TopK family with the model's own statistics is covered (what the test trains).

usage: concept_search_numpy.py CONFIG.json OUT.json
CONFIG.json: {"model", "queries", "gallery", "names" (or null), "labels" (or null), "texts" (or
null), "edits", "strengths", "strength_unit", "residual", "k", "query_rows" (or null),
"exclude_self"}. OUT.json also holds `min_code_gap` (the smallest difference between the k-th
and (k+1)-th pre-activation of any encoded row: float32 cannot change which latents a code
keeps when it is large) and `min_cosine_gap` (the smallest difference between consecutive
cosines among the k + 1 best of any search: float32 cannot reorder a neighbour list then).
"""

import json
import sys

import numpy as np

from msae_files import lines, read_safetensors


def whole_word(text, word):
    """`word` occurs in `text` with no letter or digit right before or after it (lower case)."""
    text, word = text.lower(), word.strip().lower()
    if not word:
        return False
    start = text.find(word)
    while start >= 0:
        end = start + len(word)
        before_ok = start == 0 or not text[start - 1].isalnum()
        after_ok = end == len(text) or not text[end].isalnum()
        if before_ok and after_ok:
            return True
        start = text.find(word, start + 1)
    return False


def main():
    config_path, out_path = sys.argv[1:3]
    cfg = json.load(open(config_path))
    meta, t = read_safetensors(cfg["model"])
    model_cfg = meta["config"]
    assert model_cfg["arch"] == "topk", model_cfg["arch"]
    assert model_cfg.get("topk_variant", "relu") == "relu"
    assert float(model_cfg.get("soft_cap", 0.0)) == 0.0
    top = int(model_cfg["k"])
    f = lambda name: t[name].astype(np.float64)
    pre_bias, enc, lat_bias, dec, mu = f("pre_bias"), f("encoder"), f("latent_bias"), f("decoder"), f("mean_center")
    s = float(meta["scale"])
    n = int(meta["n"])

    gaps = {"code": [], "cosine": []}

    def encode(x):
        p = ((x - mu) * s - pre_bias) @ enc + lat_bias
        order = np.argsort(-p, axis=1, kind="stable")
        rows = np.arange(p.shape[0])[:, None]
        ranked = p[rows, order]
        if top < n:
            gaps["code"].append(float(np.min(ranked[:, top - 1] - ranked[:, top])))
        keep = np.zeros_like(p, dtype=bool)
        keep[rows, order[:, :top]] = True
        return np.where(keep & (p > 0), p, 0.0)

    def decode(z):
        return (z @ dec + pre_bias) / s + mu

    queries = np.load(cfg["queries"]).astype(np.float64)
    gallery = np.load(cfg["gallery"]).astype(np.float64)
    rows = cfg["query_rows"] if cfg["query_rows"] is not None else list(range(len(queries)))
    x = queries[rows]
    zq = encode(x)
    zg = encode(gallery)
    gnorm = np.linalg.norm(gallery, axis=1)
    gunit = np.divide(gallery, gnorm[:, None], out=np.zeros_like(gallery), where=gnorm[:, None] > 0)
    names = json.load(open(cfg["names"])) if cfg["names"] else None
    labels = lines(cfg["labels"]) if cfg["labels"] else None
    texts = lines(cfg["texts"]) if cfg["texts"] else None
    k = int(cfg["k"])

    def resolve(what):
        what = what.strip()
        digits = what[1:] if what.startswith("#") else what
        if digits.isdigit():
            j = int(digits)
            return j, (names[j]["word"] if names else "#%d" % j)
        # The best cosine among the latents named so; ties to the lower latent.
        matches = [(-names[j]["score"], j) for j in range(n) if names[j]["word"].lower() == what.lower()]
        j = min(matches)[1]
        return j, names[j]["word"]

    def cos(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))

    out_edits = []
    for text in cfg["edits"]:
        op, what = text.strip().split(None, 1)
        op = op.lower()
        j, concept = resolve(what)
        word = concept if names and concept.strip() else None
        gmax = float(zg[:, j].max())
        unit = gmax if cfg["strength_unit"] == "relative" and op in ("set", "add") else 1.0
        strengths = cfg["strengths"] if op != "ablate" else [None]
        results = []
        for strength in strengths:
            per_query = []
            for qi in range(len(rows)):
                z = zq[qi].copy()
                old = z[j]
                new = {
                    "set": lambda: strength * unit,
                    "add": lambda: old + strength * unit,
                    "scale": lambda: old * strength,
                    "ablate": lambda: 0.0,
                }[op]()
                z2 = z.copy()
                z2[j] = new
                if cfg["residual"]:
                    edited = x[qi] + decode(z2[None])[0] - decode(z[None])[0]
                else:
                    edited = decode(z2[None])[0]
                en = np.linalg.norm(edited)
                c = gunit @ edited / en if en > 0 else np.zeros(len(gallery))
                if cfg["exclude_self"]:
                    c[rows[qi]] = -np.inf
                order = np.lexsort((np.arange(len(c)), -c))
                best = c[order[: k + 1]]
                best = best[np.isfinite(best)]
                gaps["cosine"].append(float(np.min(best[:-1] - best[1:])))
                neighbours = [
                    {"row": int(r), "cosine": float(c[r]), "activation": float(zg[r, j])} for r in order[:k]
                ]
                per_query.append(
                    {
                        "row": rows[qi],
                        "activation": float(old),
                        "edited": float(new),
                        "kept": cos(edited, x[qi]),
                        "neighbours": neighbours,
                    }
                )
            found = [nb for q in per_query for nb in q["neighbours"]]
            entry = {
                "strength": strength,
                "mean_activation": float(np.mean([nb["activation"] for nb in found])),
                "mean_cosine": float(np.mean([nb["cosine"] for nb in found])),
                "kept": float(np.mean([q["kept"] for q in per_query])),
                "label_share": None,
                "text_share": None,
                "queries": per_query,
            }
            if labels is not None and word is not None:
                entry["label_share"] = float(
                    np.mean([labels[nb["row"]].strip().lower() == word.strip().lower() for nb in found])
                )
            if texts is not None and word is not None:
                entry["text_share"] = float(np.mean([whole_word(texts[nb["row"]], word) for nb in found]))
            results.append(entry)
        out_edits.append(
            {"edit": text, "op": op, "latent": j, "concept": concept, "gallery_max": gmax, "results": results}
        )
    json.dump(
        {
            "edits": out_edits,
            "min_code_gap": min(gaps["code"]) if gaps["code"] else None,
            "min_cosine_gap": min(gaps["cosine"]),
        },
        open(out_path, "w"),
        indent=1,
    )


if __name__ == "__main__":
    main()
