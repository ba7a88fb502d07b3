#!/usr/bin/env bash
# The GPU check in one go: msae's CUDA build against its CPU results and against PyTorch on the
# same card. Two stages, because a machine with a GPU may have no Rust toolchain and building
# the CUDA backend takes long:
#
#   scripts/gpu-check.sh build        (here, with the README's "GPU build" environment set:
#                                      PATH, CUDA_HOME, CUDA_COMPUTE_CAP, LIBRARY_PATH)
#       builds `msae`, the device-agreement test and the two training benchmarks with
#       `--features cuda` into target-cuda/ and copies them to target-cuda/gpu-check/.
#   scripts/gpu-check.sh run [DEVICE] (on the GPU machine, from the repository root; DEVICE
#                                      defaults to cuda:0; needs python3 with PyTorch)
#       1. the device-agreement test with MSAE_TEST_DEVICE=DEVICE;
#       2. the quick start on the CPU and on DEVICE, tables compared within the stated
#          tolerance (relative 1e-3 on every metric, the test's DEVICE_AGREEMENT_REL);
#       3. training throughput on DEVICE next to PyTorch on the same card (d = 768,
#          n = 24,576, batch 4,096: TopK, BatchTopK, Matryoshka);
#       4. a fused grid of 8 SAEs against 8 sequential trainings on DEVICE;
#       and prints one summary table. Sized to finish within 10 minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target-cuda/gpu-check

case "${1:-}" in
build)
    export CARGO_TARGET_DIR=target-cuda
    cargo build --locked --release --features cuda --bin msae
    cargo bench --locked --features cuda --no-run --bench train_throughput --bench fused_grid
    cargo test --locked --release --features cuda --no-run --test integration
    mkdir -p "$out"
    cp target-cuda/release/msae "$out/"
    for b in train_throughput fused_grid integration; do
        cp "$(ls -t target-cuda/release/deps/$b-* | grep -v '\.d$' | head -1)" "$out/$b"
    done
    # The test binary runs the msae binary by the absolute path it was built with.
    realpath target-cuda/release/msae >"$out/msae-path"
    ls -l "$out"
    ;;
run)
    device=${2:-cuda:0}
    [ -x "$out/msae" ] || { echo "no $out/msae: run \`$0 build\` first" >&2; exit 1; }
    nvidia-smi -L || true
    summary=$(mktemp)
    # 1. The test binary expects msae at its build path.
    want=$(cat "$out/msae-path")
    if [ ! -x "$want" ]; then mkdir -p "$(dirname "$want")" && cp "$out/msae" "$want"; fi
    if MSAE_TEST_DEVICE=$device "$out/integration" device_agreement:: --nocapture; then
        echo "| device agreement test ($device) | passed |" >>"$summary"
    else
        echo "| device agreement test ($device) | FAILED |" >>"$summary"
    fi
    # 2. The quick start on both devices.
    for dev in cpu "$device"; do
        tag=${dev//:/}
        rm -rf "/tmp/gpu-check-$tag"
        t0=$(date +%s.%N)
        "$out/msae" --cache "/tmp/gpu-check-$tag/cache" -q run --device "$dev" \
            --results "/tmp/gpu-check-$tag/results" experiments/quickstart.toml
        python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')" >"/tmp/gpu-check-$tag.s"
        "$out/msae" --cache "/tmp/gpu-check-$tag/cache" table --format json \
            experiments/quickstart.toml >"/tmp/gpu-check-$tag.json"
    done
    python3 - "/tmp/gpu-check-cpu.json" "/tmp/gpu-check-${device//:/}.json" \
        "$(cat /tmp/gpu-check-cpu.s)" "$(cat "/tmp/gpu-check-${device//:/}.s")" "$device" \
        >>"$summary" <<'PY'
import json, sys
def rows(path):
    # `msae table --format json` prints one JSON array per step kind, one after another.
    text, dec, pos, out = open(path).read(), json.JSONDecoder(), 0, {}
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        table, pos = dec.raw_decode(text, pos)
        for r in table:
            out[r["instance"]] = r
    return out
ra, rb = (rows(p) for p in sys.argv[1:3])
worst, where, compared = 0.0, "", 0
for key, r in ra.items():
    s = rb.get(key, {})
    for m, v in r.items():
        w = s.get(m)
        if "seconds" in m or isinstance(v, bool):
            continue  # timings differ by nature
        if isinstance(v, (int, float)) and isinstance(w, (int, float)):
            compared += 1
            rel = abs(v - w) / max(abs(v), abs(w), 1e-12)
            if rel > worst:
                worst, where = rel, f"{key} {m}"
missing = [k for k in ra if k not in rb]
ok = "within" if worst <= 1e-3 and not missing else "OUTSIDE"
if missing:
    where += f"; {len(missing)} rows missing on the device, e.g. {missing[0]}"
print(f"| quick start, cpu {sys.argv[3]} s, {sys.argv[5]} {sys.argv[4]} s | {compared} metrics, "
      f"largest relative difference {worst:.2e} ({where}), {ok} 1e-3 |")
PY
    # 3. Training throughput next to PyTorch on the same card.
    MSAE_TORCH_PYTHON=python3 MSAE_TORCH_SCRIPT=benches/torch_sae.py "$out/train_throughput" \
        --device "$device" --d 768 --n 24576 --batch 4096 --archs topk,batchtopk,msae \
        --steps 5 --rounds 3 --threads "$(nproc)" | tee /tmp/gpu-check-train.txt
    grep '^| [a-z]' /tmp/gpu-check-train.txt | grep -v '^| arch' |
        sed 's/^| \([a-z]*\) |/| training \1 (msae, PyTorch samples\/s, ratio, goal, met) |/' >>"$summary" || true
    # 4. A fused grid of 8 against 8 sequential trainings.
    "$out/fused_grid" --device "$device" --models 8 --d 768 --n 24576 --batch 4096 --steps 6 \
        --rounds 2 --threads "$(nproc)" | tee /tmp/gpu-check-fused.txt
    grep '^| fused' /tmp/gpu-check-fused.txt |
        sed 's/^| fused, one data pass |/| fused grid of 8 (samples\/s, ratio to sequential; goal 3×) |/' >>"$summary" || true
    echo
    echo "| check | result |"
    echo "|---|---|"
    cat "$summary"
    ;;
*)
    sed -n '2,21p' "$0" >&2
    exit 2
    ;;
esac
