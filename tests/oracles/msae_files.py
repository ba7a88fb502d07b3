"""Readers of msae's own files shared by the NumPy oracles: a model's safetensors file (parsed by
hand: an 8-byte header length, a JSON header with msae's metadata under __metadata__.msae, then
the raw tensors) and a text file of one entry per line."""

import json
import struct

import numpy as np


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    meta = json.loads(header.pop("__metadata__")["msae"])
    dtypes = {"F32": "<f4", "F64": "<f8", "I64": "<i8"}
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return meta, tensors


def lines(path):
    text = open(path, encoding="utf-8").read()
    if text.endswith("\n"):
        text = text[:-1]
    return [l.strip() for l in text.split("\n")] if text else []


def read_csr(path):
    """A CSR codes file (a `synth` step's `train_codes`/`test_codes`): safetensors with `indptr`
    (int64), `indices` (int32) and `values` (float32) and the shape in the metadata entry
    `csr_shape` = "rows,cols". Returns the dense float64 matrix."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    rows, cols = (int(v) for v in header.pop("__metadata__")["csr_shape"].split(","))
    dtypes = {"F32": "<f4", "I32": "<i4", "I64": "<i8"}
    t = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        t[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]])
    dense = np.zeros((rows, cols))
    for r in range(rows):
        a, b = t["indptr"][r], t["indptr"][r + 1]
        dense[r, t["indices"][a:b]] = t["values"][a:b]
    return dense
