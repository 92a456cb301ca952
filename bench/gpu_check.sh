#!/usr/bin/env bash
# The GPU check in one go, for a machine that has a GPU, its driver and CUDA toolkit, and
# PyTorch + timm, but no Rust toolchain and no network: it starts from a scalenet built
# elsewhere with `scripts/setup-cuda.sh` (stripped, optionally `xz -9`'d).
#
#   BIN=scalenet.xz bench/gpu_check.sh          # results under ${RESULTS:-gpu-out}/
#
# In order of importance, each step with its own time limit and the whole inside BUDGET seconds
# (default 540; on a fresh machine each new model shape first compiles and autotunes its
# kernels, 60-115 s on an H200, so the first steps take the longest): `scalenet selfcheck` on
# cuda:0 (golden fixtures, ops against the CPU, shared gradients); a small language model grown,
# trained and sampled on the CPU and on the GPU from the same start (the two must agree);
# SmolLM2-135M's shapes (random weights) timed, scalenet against PyTorch + transformers eager
# when transformers is installed; DeiT-Small/Tiny/Base at 224 px, training and inference, f32
# and bf16, against PyTorch eager on the same card; a short Fashion-MNIST training in f32 and
# bf16; then torch.compile as a second PyTorch column. Every result is JSON; bench/gpu_table.py
# turns them into the tables in docs/PERFORMANCE.md (written to $RESULTS/table.md here).
# Models and runs too large to bring back go to $WORK (default /tmp/gpu-work).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${RESULTS:-gpu-out}"
WORK="${WORK:-/tmp/gpu-work}"
BUDGET="${BUDGET:-540}"
BATCH="${BATCH:-64}"
LM_BATCH="${LM_BATCH:-8}"
LM_SEQ="${LM_SEQ:-512}"
STEPS="${STEPS:-10}"
# DEVICE=flex tries the script's CPU side on a machine without a GPU.
DEVICE="${DEVICE:-cuda:0}"
TORCH_DEVICE=cpu
[[ "$DEVICE" == cuda* ]] && TORCH_DEVICE=cuda
mkdir -p "$RESULTS" "$WORK"
BIN="${BIN:?BIN=path to a scalenet built with --features cuda (may end in .xz)}"
if [[ "$BIN" == *.xz ]]; then
    xz -dc "$BIN" >/tmp/scalenet-gpu && chmod +x /tmp/scalenet-gpu || { echo "cannot unpack $BIN" >&2; exit 1; }
    BIN=/tmp/scalenet-gpu
fi
export PYTHONUNBUFFERED=1
# burn's CUDA backend compiles every kernel on first use (about 20 s per new model on an H200),
# and each process starts with nothing compiled. cubecl can keep compiled kernels on disk
# (under target/environment here) when a cubecl.toml asks for it, so the later steps reuse
# what the earlier ones compiled. Only where the checkout has none of its own; removed at exit.
if [[ ! -e cubecl.toml ]]; then
    printf '[compilation]\ncache = true\n' >cubecl.toml
    trap 'rm -f cubecl.toml' EXIT
fi
# libdevice (math functions in kernels) comes from the toolkit.
[[ -z "${CUDA_PATH:-}" && -d /usr/local/cuda ]] && export CUDA_PATH=/usr/local/cuda

left() { echo $((BUDGET - SECONDS)); }
# step NAME LIMIT CMD...: runs CMD with at most LIMIT seconds (less if the budget is short),
# stdout to $RESULTS/NAME.out, stderr to $RESULTS/NAME.err, and a line in $RESULTS/steps.txt.
# ONLY (a bash regex over step names, e.g. 'selfcheck|lm-') runs a subset: on a fresh machine
# the kernel compilation makes the whole list longer than one session's GPU time.
step() {
    local name="$1" limit="$2"; shift 2
    [[ -n "${ONLY:-}" && ! "$name" =~ $ONLY ]] && return
    local l; l=$(left)
    (( l < 15 )) && { echo "$name skipped (budget spent)" | tee -a "$RESULTS/steps.txt"; return; }
    (( limit > l - 5 )) && limit=$((l - 5))
    local t0=$SECONDS
    timeout "$limit" "$@" >"$RESULTS/$name.out" 2>"$RESULTS/$name.err"
    local rc=$?
    echo "$name rc=$rc ${limit}s-limit $((SECONDS - t0))s" | tee -a "$RESULTS/steps.txt"
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nvcc --version 2>/dev/null | tail -1
    lscpu | grep 'Model name'
    python3 -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'
    python3 -c 'import transformers; print("transformers", transformers.__version__)'
    echo "CUDA_PATH=${CUDA_PATH:-}"
} >"$RESULTS/env.txt" 2>&1
cat "$RESULTS/env.txt"
: >"$RESULTS/steps.txt"

# Kernel tuning does not change results; the least of it saves a minute here.
CUBECL_AUTOTUNE_LEVEL=minimal step selfcheck 180 "$BIN" selfcheck --device "$DEVICE" --json "$RESULTS/selfcheck.json"
tail -1 "$RESULTS/selfcheck.out"

# A small language model, grown, trained two epochs on this repository's README and sampled
# greedily, on the CPU (flex) and on the GPU from the same weights and seed.
LM="$WORK/lm-tiny"
rm -rf "$LM" && mkdir -p "$LM"
cp -r tests/fixtures/llama/gqa_tied "$LM/base"
python3 bench/lm_inputs.py char-tokenizer "$LM/base"
"$BIN" expand "$LM/base" --depth 4 --out "$LM/grown" >"$RESULTS/lm-expand.out" 2>&1
for dev in flex "$DEVICE"; do
    tag="${dev%%:*}"
    CUBECL_AUTOTUNE_LEVEL=minimal step "lm-train-$tag" 90 "$BIN" train "$LM/grown" --data text:README.md \
        --seq-len 64 --batch-size 8 --epochs 2 --lr 1e-3 --warmup-epochs 0 --val-split 0.1 --seed 0 \
        --precision f32 --device "$dev" --out "$LM/run-$tag"
    cp "$LM/run-$tag/metrics.jsonl" "$RESULTS/lm-train-$tag.jsonl" 2>/dev/null
    CUBECL_AUTOTUNE_LEVEL=minimal step "lm-generate-$tag" 60 "$BIN" generate "$LM/run-$tag/model" \
        --prompt "The model" --max-new-tokens 40 --device "$dev"
done

# SmolLM2-135M's shapes with random weights (the model itself does not travel): speed only.
python3 bench/lm_inputs.py random-model bench/smollm2-135m.config.json "$WORK/smollm2" >/dev/null
HAVE_TRANSFORMERS=0
python3 -c 'import transformers' 2>/dev/null && HAVE_TRANSFORMERS=1
for p in f32 bf16; do
    step "ours-lm-$p" 150 "$BIN" bench "$WORK/smollm2" --batch-size "$LM_BATCH" --seq-len "$LM_SEQ" \
        --steps "$STEPS" --warmup 3 --device "$DEVICE" --precision "$p"
    (( HAVE_TRANSFORMERS )) && step "eager-lm-$p" 90 python3 bench/torch_lm_bench.py "$WORK/smollm2" \
        --batch-size "$LM_BATCH" --seq-len "$LM_SEQ" --steps "$STEPS" --warmup 3 --device "$TORCH_DEVICE" \
        --precision "$p"
done

bench_pair() { # ARCH PRECISION
    local tag="${1%%_patch*}-$2"
    step "ours-$tag" 150 "$BIN" bench --arch "$1" --batch-size "$BATCH" --steps "$STEPS" --warmup 3 \
        --device "$DEVICE" --precision "$2"
    step "eager-$tag" 60 python3 bench/torch_bench.py --arch "$1" --batch-size "$BATCH" \
        --steps "$STEPS" --warmup 3 --device "$TORCH_DEVICE" --precision "$2"
}
bench_pair deit_small_patch16_224 f32
bench_pair deit_small_patch16_224 bf16
for arch in deit_tiny_patch16_224 deit_base_patch16_224; do
    for p in bf16 f32; do bench_pair "$arch" "$p"; done
done

for p in f32 bf16; do
    rm -rf "$RESULTS/init" "$RESULTS/run-$p"
    "$BIN" init --arch vit_tiny_patch16_224 --model-arg img_size=28 --model-arg patch_size=4 \
        --model-arg in_chans=1 --model-arg num_classes=10 --model-arg depth=6 --out "$RESULTS/init" >/dev/null
    step "train-$p" 90 "$BIN" train "$RESULTS/init" --data fmnist-mini --epochs 3 --batch-size 128 \
        --lr 1e-3 --device "$DEVICE" --precision "$p" --seed 0 --out "$RESULTS/run-$p"
    cp "$RESULTS/run-$p/metrics.jsonl" "$RESULTS/train-$p.jsonl" 2>/dev/null
done

for arch in deit_small_patch16_224 deit_tiny_patch16_224 deit_base_patch16_224; do
    for p in bf16 f32; do
        step "compile-${arch%%_patch*}-$p" 150 python3 bench/torch_bench.py --arch "$arch" \
            --batch-size "$BATCH" --steps "$STEPS" --warmup 3 --device "$TORCH_DEVICE" --precision "$p" --compile
    done
done

python3 bench/gpu_table.py "$RESULTS" | tee "$RESULTS/table.md"
echo "gpu_check: $SECONDS s"
