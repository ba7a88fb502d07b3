"""The PyTorch side of the embed throughput benchmark (`cargo bench --bench embed_throughput`).

Loads the same model folder with `transformers` and embeds the same inputs the way msae does:
  minilm      sentence-transformers pipeline: texts sorted by token count, padded per batch,
              masked mean pooling, L2 normalisation
  clip-text   CLIP text tower on CLIP token ids (tokenizer.json), 77 tokens, projected features
  clip-image  CLIP image tower on preprocessed pixels (a raw float32 file), projected features
After one warm-up pass it prints {"ready": true}; then for every line R read from stdin it makes
R timed passes over the inputs and prints {"per_s": items per second}. Not used in CI.

usage: python3 torch_embed.py MODE MODEL_DIR THREADS BATCH INPUTS
  INPUTS: a text file (one item per line) for minilm/clip-text, a float32 file of
  N × 3 × 224 × 224 pixels for clip-image
"""
import json
import sys
import time

import numpy as np
import torch


def main():
    mode, model_dir, threads, batch, inputs = sys.argv[1:6]
    threads, batch = int(threads), int(batch)
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    from transformers import AutoModel, CLIPModel
    from tokenizers import Tokenizer

    if mode == "minilm":
        model = AutoModel.from_pretrained(model_dir).eval()
        tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        tok.no_padding()
        tok.enable_truncation(256)
        texts = open(inputs, encoding="utf-8").read().splitlines()

        def run():
            enc = tok.encode_batch(texts)
            order = sorted(range(len(enc)), key=lambda i: -len(enc[i].ids))
            for s in range(0, len(order), batch):
                group = [enc[i].ids for i in order[s : s + batch]]
                width = max(len(g) for g in group)
                ids = torch.zeros((len(group), width), dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for r, g in enumerate(group):
                    ids[r, : len(g)] = torch.tensor(g)
                    mask[r, : len(g)] = 1
                states = model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).float()
                pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
                torch.nn.functional.normalize(pooled, dim=-1)
            return len(texts)

    elif mode == "clip-text":
        model = CLIPModel.from_pretrained(model_dir).eval()
        tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        texts = open(inputs, encoding="utf-8").read().splitlines()
        rows = []
        for e in tok.encode_batch(texts):
            ids = e.ids[:77]
            if len(ids) == 77:
                ids[-1] = 49407
            rows.append(ids + [0] * (77 - len(ids)))
        all_ids = torch.tensor(rows, dtype=torch.long)

        def run():
            for s in range(0, len(rows), batch):
                model.get_text_features(input_ids=all_ids[s : s + batch])
            return len(rows)

    elif mode == "clip-image":
        model = CLIPModel.from_pretrained(model_dir).eval()
        pixels = torch.from_numpy(np.fromfile(inputs, dtype=np.float32).reshape(-1, 3, 224, 224))

        def run():
            for s in range(0, pixels.shape[0], batch):
                model.get_image_features(pixel_values=pixels[s : s + batch])
            return pixels.shape[0]

    else:
        raise SystemExit(f"unknown mode {mode}")

    run()
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        reps = int(line)
        t = time.perf_counter()
        n = sum(run() for _ in range(reps))
        print(json.dumps({"per_s": n / (time.perf_counter() - t)}), flush=True)


if __name__ == "__main__":
    main()
