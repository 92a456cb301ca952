#!/usr/bin/env bash
# One prepared GPU session: scalenet (built with --features cuda) against PyTorch + timm on the
# same card, f32 and bf16, plus a short bf16-vs-f32 training run on the built-in subset.
# Writes everything under ${OUT:-gpu-out}/.
#
#   BIN=path/to/scalenet bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
BIN="${BIN:?BIN=path to a scalenet built with --features cuda}"
export PYTHONUNBUFFERED=1
# cubecl finds libcuda through the driver; nvrtc comes from the toolkit or from pip's wheels.
for d in /usr/local/cuda/lib64 $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, sub, "lib") for p in nvidia.__path__ for sub in os.listdir(p)))' 2>/dev/null); do
    [[ -d "$d" ]] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
{
    nvidia-smi -L
    python3 -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'
    "$BIN" bench --arch vit_tiny_patch16_224 --model-arg img_size=28 --model-arg patch_size=4 \
        --model-arg in_chans=1 --model-arg num_classes=10 --batch-size 128 --steps 3 --warmup 3 \
        --device cuda:0
} 2>&1 | tee "$OUT/smoke.txt"
STEPS=20 BIN="$BIN" timeout 240 bench/compare.sh --device cuda 2>&1 | tee "$OUT/compare-f32.txt"
STEPS=20 BIN="$BIN" timeout 240 bench/compare.sh --device cuda --precision bf16 2>&1 | tee "$OUT/compare-bf16.txt"
for p in f32 bf16; do
    rm -rf "$OUT/init" "$OUT/run-$p"
    "$BIN" init --arch vit_tiny_patch16_224 --model-arg img_size=28 --model-arg patch_size=4 \
        --model-arg in_chans=1 --model-arg num_classes=10 --model-arg depth=6 --out "$OUT/init" >/dev/null
    timeout 150 "$BIN" train "$OUT/init" --data fmnist-mini --epochs 5 --batch-size 128 --lr 1e-3 \
        --device cuda:0 --precision "$p" --out "$OUT/run-$p" 2>&1 | tail -4 | tee "$OUT/train-$p.txt"
done
