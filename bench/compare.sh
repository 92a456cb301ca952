#!/usr/bin/env bash
# Runs scalenet and PyTorch+timm on the same configurations, on this machine, one after the
# other in one go, and prints each ratio (scalenet / PyTorch; above 1 means scalenet is faster,
# below 1 for memory means scalenet uses less).
#
#   bench/compare.sh              # uses `python3` (needs torch + timm)
#   bench/compare.sh --venv DIR   # creates DIR with torch + timm first if missing
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [[ "${1:-}" == "--venv" ]]; then
    VENV="${2:?--venv needs a directory}"
    [[ -x "$VENV/bin/python" ]] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q torch timm safetensors; }
    PY="$VENV/bin/python"
fi
STEPS="${STEPS:-10}"
cargo build --release -q
BIN=target/release/scalenet
THREADS=$(nproc)

run_pair() {
    local name="$1" batch="$2"; shift 2
    local margs=()
    for a in "$@"; do margs+=(--model-arg "$a"); done
    local ours theirs
    ours=$("$BIN" bench --arch "${ARCH}" "${margs[@]}" --batch-size "$batch" --steps "$STEPS")
    theirs=$("$PY" bench/torch_bench.py --arch "${ARCH}" "${margs[@]}" --batch-size "$batch" --steps "$STEPS" --threads "$THREADS")
    "$PY" - "$name" "$ours" "$theirs" <<'PYEOF'
import json, sys
name, ours, theirs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
row = lambda k: f"{ours[k]:9.1f} {theirs[k]:9.1f} {ours[k] / theirs[k]:6.2f}x"
print(f"{name}")
print(f"  train img/s    {row('train_img_per_s')}")
print(f"  infer img/s    {row('infer_img_per_s')}")
print(f"  train peak MiB {row('train_peak_rss_mib')}")
PYEOF
}

echo "config                  scalenet   pytorch  ratio   ($(nproc) cores, $(date -u +%F))"
ARCH=deit_tiny_patch16_224 run_pair "DeiT-Tiny 224px, batch 16" 16
ARCH=vit_tiny_patch16_224 run_pair "28px grey, patch 4, d192x12, batch 128" 128 img_size=28 patch_size=4 in_chans=1 num_classes=10
