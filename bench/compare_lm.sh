#!/usr/bin/env bash
# Runs scalenet and PyTorch + transformers on the same language model and shapes, on this
# machine, one after the other in one go, and prints each ratio (scalenet / PyTorch; above 1
# means scalenet is faster, below 1 for memory means scalenet uses less).
#
#   bench/compare_lm.sh MODEL_DIR                    # a transformers directory (e.g. `scalenet convert` output)
#   bench/compare_lm.sh MODEL_DIR --precision bf16   # bf16 against torch.autocast(bfloat16)
#   BIN=path/to/scalenet STEPS=5 WARMUP=2 BATCH=4 SEQ=256 bench/compare_lm.sh MODEL_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:?usage: bench/compare_lm.sh MODEL_DIR [--precision f32|bf16]}"; shift
PRECISION=f32
while [[ $# -gt 0 ]]; do
    case "$1" in
        --precision) PRECISION="${2:?--precision needs f32 or bf16}"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
PY="${PY:-python3}"
STEPS="${STEPS:-5}"; WARMUP="${WARMUP:-2}"; BATCH="${BATCH:-4}"; SEQ="${SEQ:-256}"
if [[ -z "${BIN:-}" ]]; then
    cargo build --release -q
    BIN=target/release/scalenet
fi
ours=$("$BIN" bench "$MODEL" --batch-size "$BATCH" --seq-len "$SEQ" --steps "$STEPS" --warmup "$WARMUP" --precision "$PRECISION")
theirs=$("$PY" bench/torch_lm_bench.py "$MODEL" --batch-size "$BATCH" --seq-len "$SEQ" --steps "$STEPS" \
    --warmup "$WARMUP" --threads "$(nproc)" --precision "$PRECISION")
"$PY" - "$MODEL" "$ours" "$theirs" <<'PYEOF'
import json, sys
name, ours, theirs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
row = lambda k: f"{ours[k]:9.1f} {theirs[k]:9.1f} {ours[k] / theirs[k]:6.2f}x"
print(f"{name}: batch {ours['batch_size']} x {ours['seq_len']} tokens, {ours['precision']}")
print(f"                      scalenet   pytorch  ratio")
print(f"  train tokens/s     {row('train_tokens_per_s')}")
print(f"  forward tokens/s   {row('infer_tokens_per_s')}")
print(f"  decode tokens/s    {row('decode_tokens_per_s')}")
print(f"  train peak MiB     {row('train_peak_rss_mib')}")
print(f"  # ours: {ours['device']} ({ours['precision_reason']}); theirs: {theirs['device']}, torch {theirs['torch']}")
PYEOF
