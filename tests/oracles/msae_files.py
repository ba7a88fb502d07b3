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
