"""Independent oracle for msae's image preprocessing: what Pillow (and torchvision's PIL path) make
of an image, to compare with the Rust implementation pixel for pixel.

Usage:

  pillow_preprocess.py pixels MANIFEST OUT_DIR
      MANIFEST is JSON: {"items": [ITEM, ...]} with each ITEM
        {"file": PATH}                      an image file, opened with Image.open
        or {"idx": PATH_GZ, "index": I}     image I of a gzipped IDX (MNIST-style) file
        "background": null | [R, G, B]      null: convert("RGB"); else composite onto R, G, B
        "size": null | N                    null: no resize (the RGB image as converted)
        "crop": true | false                true: torchvision Resize(N) + CenterCrop(N);
                                            false: resize to N x N
        "order": "pillow" | "horizontal-first"
                                            "pillow": Image.resize as installed (Pillow 13
                                            chooses the pass order per image);
                                            "horizontal-first": the two passes as two one-axis
                                            resizes, width first (what Pillow <= 12 does)
        "tensor": null | {"mean": [...], "std": [...]}
                                            also write ToTensor + Normalize in float32
      Writes OUT_DIR/pixels.bin (RGB bytes of every item, concatenated), OUT_DIR/tensors.bin
      (little-endian float32, CHW, for the items that ask for it) and OUT_DIR/index.json
      ({"pillow": version, "items": [per item: width, height, pixel offset, tensor offset or
      null]}).

  pillow_preprocess.py variants OUT_DIR
      Writes small PNG and JPEG files of many kinds (PNG colour types and bit depths, palettes
      with transparency, interlacing; JPEG subsamplings, progressive, grey, CMYK) made from a
      deterministic pattern, and lists them in OUT_DIR/variants.json.

The resize and crop follow torchvision's functional resize / center_crop for PIL images
(torchvision 0.17, the reference's version): the shorter side becomes N and the longer
int(N * long / short); nothing is resized when the size already matches; the crop offsets are
int(round((side - N) / 2.0)).
"""

import gzip
import io
import json
import os
import struct
import sys
import warnings
import zlib

import numpy as np
import PIL
from PIL import Image

warnings.simplefilter("ignore")

_idx_cache = {}


def read_idx(path):
    if path not in _idx_cache:
        with gzip.open(path, "rb") as f:
            data = f.read()
        magic, n, rows, cols = struct.unpack(">IIII", data[:16])
        if magic != 0x00000803:
            raise ValueError(f"{path}: not an IDX image file (magic {magic:#x})")
        _idx_cache[path] = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    return _idx_cache[path]


def open_item(item):
    if "file" in item:
        im = Image.open(item["file"])
        im.load()
        return im
    return Image.fromarray(read_idx(item["idx"])[item["index"]], mode="L")


def to_rgb(im, background):
    if background is None:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    bg = Image.new("RGB", im.size, tuple(background))
    bg.paste(rgba, (0, 0), rgba)
    return bg


def bicubic(im, size, order):
    if order == "pillow":
        return im.resize(size, Image.BICUBIC)
    if order != "horizontal-first":
        raise ValueError(f"unknown pass order {order!r}")
    # A resize that changes one dimension runs exactly one pass, so two of them in this order
    # are the two-pass resize with the horizontal pass first (8-bit image in between).
    w, h = im.size
    if size[0] != w:
        im = im.resize((size[0], h), Image.BICUBIC)
    if size[1] != h:
        im = im.resize(size, Image.BICUBIC)
    return im


def resize_shorter(im, size, order):
    """torchvision.transforms.functional.resize(im, size) for an int size and a PIL image."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return im
    return bicubic(im, (new_w, new_h), order)


def center_crop(im, size):
    """torchvision.transforms.functional.center_crop(im, size) when the image is large enough."""
    w, h = im.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def preprocess(item):
    im = to_rgb(open_item(item), item.get("background"))
    size = item.get("size")
    order = item.get("order", "pillow")
    if size is not None:
        if item.get("crop", True):
            im = center_crop(resize_shorter(im, size, order), size)
        else:
            im = bicubic(im, (size, size), order)
    return im


def to_tensor(im, mean, std):
    """ToTensor then Normalize, in float32 as torch computes them."""
    x = np.asarray(im, dtype=np.uint8).astype(np.float32) / np.float32(255)
    x = x.transpose(2, 0, 1)
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std, dtype="<f4")


def cmd_pixels(manifest_path, out_dir):
    with open(manifest_path) as f:
        items = json.load(f)["items"]
    index = []
    pixel_offset = 0
    tensor_offset = 0
    with open(os.path.join(out_dir, "pixels.bin"), "wb") as pixels, open(
        os.path.join(out_dir, "tensors.bin"), "wb"
    ) as tensors:
        for item in items:
            im = preprocess(item)
            assert im.mode == "RGB", im.mode
            raw = im.tobytes()
            pixels.write(raw)
            entry = {"width": im.size[0], "height": im.size[1], "pixels": pixel_offset, "tensor": None}
            pixel_offset += len(raw)
            if item.get("tensor"):
                t = to_tensor(im, item["tensor"]["mean"], item["tensor"]["std"])
                tensors.write(t.tobytes())
                entry["tensor"] = tensor_offset
                tensor_offset += t.size
            index.append(entry)
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump({"pillow": PIL.__version__, "items": index}, f)


# ---------------------------------------------------------------------------------------------
# Test images of many kinds.


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width, height, color_type, depth, rows, extra=b""):
    """A PNG written by hand, for kinds Pillow cannot save (16-bit RGB, RGBA, grey + alpha)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def pattern(w, h, seed):
    """Smooth gradients, hard edges and noise: exercises every rounding path."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    g = (y * 255 // max(h - 1, 1)).astype(np.uint8)
    b = np.where((x // 5 + y // 3) % 2 == 0, 230, 20).astype(np.uint8)
    rgb = np.stack([r, g, b], axis=-1)
    noise = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    mask = rng.random((h, w)) < 0.2
    rgb[mask] = noise[mask]
    alpha = ((x + 2 * y) * 255 // max(w + 2 * h - 3, 1)).astype(np.uint8)
    alpha[(x // 7) % 3 == 0] = 0
    alpha[(y // 6) % 4 == 1] = 255
    return rgb, alpha


def cmd_variants(out_dir):
    files = []

    def add(name, data, note):
        path = os.path.join(out_dir, name)
        with open(path, "wb") as f:
            f.write(data)
        files.append({"name": name, "path": path, "note": note})

    def save(name, im, note, **kw):
        buf = io.BytesIO()
        im.save(buf, format=name.rsplit(".", 1)[1].upper().replace("JPG", "JPEG"), **kw)
        add(name, buf.getvalue(), note)

    w, h = 61, 43
    rgb, alpha = pattern(w, h, 1)
    im_rgb = Image.fromarray(rgb, "RGB")
    im_rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    grey = np.asarray(im_rgb.convert("L"))
    im_l = Image.fromarray(grey, "L")
    im_la = Image.fromarray(np.dstack([grey, alpha]), "LA")

    save("rgb8.png", im_rgb, "8-bit RGB")
    save("rgba8.png", im_rgba, "8-bit RGBA")
    save("grey8.png", im_l, "8-bit grey")
    save("greyalpha8.png", im_la, "8-bit grey + alpha")
    save("rgb8_interlaced.png", im_rgb, "Adam7 interlaced RGB", optimize=False, interlace=1)
    save("mono1.png", im_l.convert("1"), "1-bit")
    pal = im_rgb.quantize(colors=200)
    save("palette8.png", pal, "palette, 8 bits per index")
    pal16 = im_rgb.quantize(colors=16)
    save("palette4.png", pal16, "palette, 4 bits per index", bits=4)
    save("palette8_trns.png", pal, "palette with per-entry alpha", transparency=bytes(range(200)))
    save("palette8_trns1.png", pal, "palette with one transparent index", transparency=3)
    # Colour-key transparency on grey and RGB.
    key_rgb = tuple(int(v) for v in rgb[0, 0])
    save("rgb8_trns.png", im_rgb, "RGB with a transparent colour", transparency=key_rgb)
    save("grey8_trns.png", im_l, "grey with a transparent value", transparency=int(grey[0, 0]))

    # 16-bit kinds, written by hand; low bytes vary so that truncation vs rounding shows.
    rng = np.random.default_rng(2)
    lo = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint16)
    rgba16 = (np.dstack([rgb, alpha]).astype(np.uint16) << 8) | lo
    be = rgba16.astype(">u2")
    add("rgb16.png", raw_png(w, h, 2, 16, [be[y, :, :3].tobytes() for y in range(h)]), "16-bit RGB")
    add("rgba16.png", raw_png(w, h, 6, 16, [be[y].tobytes() for y in range(h)]), "16-bit RGBA")
    la16 = be[:, :, [1, 3]]
    add("greyalpha16.png", raw_png(w, h, 4, 16, [la16[y].tobytes() for y in range(h)]), "16-bit grey + alpha")
    # 16-bit RGB with a transparent colour (compared on all 16 bits).
    key = struct.pack(">HHH", *[int(v) for v in rgba16[0, 0, :3]])
    add(
        "rgb16_trns.png",
        raw_png(w, h, 2, 16, [be[y, :, :3].tobytes() for y in range(h)], png_chunk(b"tRNS", key)),
        "16-bit RGB with a transparent colour",
    )

    # JPEGs: Pillow (libjpeg-turbo) encodes; the Rust side decodes with another decoder.
    big_rgb, _ = pattern(203, 157, 3)
    im_big = Image.fromarray(big_rgb, "RGB")
    save("q90_420.jpg", im_big, "JPEG 4:2:0", quality=90)
    save("q90_444.jpg", im_big, "JPEG 4:4:4", quality=90, subsampling=0)
    save("q90_422.jpg", im_big, "JPEG 4:2:2", quality=90, subsampling=1)
    save("q75_420_progressive.jpg", im_big, "progressive JPEG 4:2:0", quality=75, progressive=True)
    save("q90_grey.jpg", im_big.convert("L"), "grey JPEG", quality=90)
    save("q95_cmyk.jpg", im_big.convert("CMYK"), "CMYK JPEG", quality=95)
    save("odd_17x9.jpg", im_big.crop((0, 0, 17, 9)), "JPEG smaller than one MCU row", quality=90)

    with open(os.path.join(out_dir, "variants.json"), "w") as f:
        json.dump(files, f, indent=1)


def main(argv):
    if len(argv) == 4 and argv[1] == "pixels":
        cmd_pixels(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "variants":
        cmd_variants(argv[2])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
