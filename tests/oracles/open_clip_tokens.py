"""Reference CLIP token ids from open_clip's own tokenizer (its `SimpleTokenizer`, OpenAI's).

Usage: open_clip_tokens.py OPEN_CLIP_DIR TEXTS_JSON OUT_JSON

OPEN_CLIP_DIR is the unpacked `open_clip` package (its `tokenizer.py` and the BPE merges file
beside it); TEXTS_JSON a JSON list of strings. Writes a JSON object with, per text:
  ids          the reference ids: `SimpleTokenizer()(texts)` (start token, the text's tokens,
               end token; cut to 77 with the end token last), without the zero padding;
  plain_ids    the same tokenizer with its text cleaning (`ftfy.fix_text`, HTML unescaping twice,
               whitespace collapse, lowercase) replaced by what a tokenizer.json pipeline can do
               (NFC, whitespace collapse, lowercase);
  cleaned      the reference's cleaned text;
  plain        the text cleaned the second way.
When `cleaned` == `plain`, ftfy and HTML unescaping changed nothing that matters.

The tokenizer module imports torch at module level but the tokenizing path needs only
`torch.zeros`, `torch.tensor` and a few names used in annotations; a small NumPy-backed stand-in
is registered under that name so that no torch installation is needed.
"""
import importlib.util
import json
import sys
import types
import unicodedata

import numpy as np


def install_torch_stand_in():
    torch = types.ModuleType("torch")

    class _Tensor(np.ndarray):
        pass

    torch.Tensor = _Tensor
    torch.LongTensor = _Tensor
    torch.long = np.int64
    torch.zeros = lambda *shape, dtype=None: np.zeros(shape, dtype=np.int64)
    torch.tensor = lambda values, dtype=None: np.asarray(values, dtype=np.int64)
    sys.modules["torch"] = torch


def load_tokenizer_module(folder):
    install_torch_stand_in()
    spec = importlib.util.spec_from_file_location(
        "open_clip_reference_tokenizer", f"{folder}/tokenizer.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows_to_lists(rows, eot):
    """Drops the zero padding: each row ends at its last end token."""
    out = []
    for row in rows:
        row = [int(x) for x in row]
        last = max(i for i, x in enumerate(row) if x == eot)
        out.append(row[: last + 1])
    return out


def main():
    folder, texts_path, out_path = sys.argv[1:4]
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    mod = load_tokenizer_module(folder)

    reference = mod.SimpleTokenizer()

    def plain_clean(text):
        return mod.whitespace_clean(unicodedata.normalize("NFC", text)).lower()

    plain = mod.SimpleTokenizer()
    plain.clean_fn = plain_clean

    out = {
        "ids": rows_to_lists(reference(texts), reference.eot_token_id),
        "plain_ids": rows_to_lists(plain(texts), plain.eot_token_id),
        "cleaned": [reference.clean_fn(t) for t in texts],
        "plain": [plain_clean(t) for t in texts],
        "start_token": reference.decoder[reference.sot_token_id],
        "end_token": reference.decoder[reference.eot_token_id],
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
