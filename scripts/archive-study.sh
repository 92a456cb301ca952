#!/usr/bin/env bash
# Copies a `reproduce` study's finished runs (run.json, metrics.jsonl, curves.png, model/) and
# its report into another directory, without the checkpoints (the optimizer state, three times a
# model) or unfinished runs: small enough to commit, and a study directory `reproduce` goes on
# from (it reuses every finished arm and regrows models/ from the base). A language-model study
# (`--family llama`) keeps each run's final.json and the base's model alone (its models are
# larger and its report reads final.json), and its tokenizer; its corpus is made again from
# Debian's packages when missing. A segmentation or detection study (`--family seg`, `det`)
# keeps each run's final.json and grown-s0's model alone.
#
#   scripts/archive-study.sh STUDY_DIR ARCHIVE_DIR
set -euo pipefail
SRC="${1:?usage: scripts/archive-study.sh STUDY_DIR ARCHIVE_DIR}"
DST="${2:?usage: scripts/archive-study.sh STUDY_DIR ARCHIVE_DIR}"
[[ -f "$SRC/study.json" ]] || { echo "error: $SRC/study.json: not found; is $SRC a study directory?" >&2; exit 1; }
mkdir -p "$DST/runs"
LM=0
grep -q '"family": "llama"' "$SRC/study.json" && LM=1
SEG=0
grep -Eq '"family": "(seg|det)"' "$SRC/study.json" && SEG=1
for f in study.json RESULTS.md results.json results.png scaling.png variants.png tokenizer.json corpus_tokens.json; do
    [[ -f "$SRC/$f" ]] && cp "$SRC/$f" "$DST/$f.tmp-archive" && mv "$DST/$f.tmp-archive" "$DST/$f"
done
n=0
for run in "$SRC"/runs/*/; do
    name=$(basename "$run")
    if [[ $LM == 1 || $SEG == 1 ]]; then [[ -f "$run/final.json" ]] || continue
    else [[ -f "$run/model/config.json" ]] || continue; fi
    tmp="$DST/runs/.$name.tmp-archive"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for f in run.json metrics.jsonl curves.png final.json model; do
        [[ "$f" == model && $LM == 1 && "$name" != base ]] && continue
        [[ "$f" == model && $SEG == 1 && "$name" != grown-s0 ]] && continue
        [[ -e "$run/$f" ]] && cp -r "$run/$f" "$tmp/"
    done
    rm -rf "$DST/runs/$name"
    mv "$tmp" "$DST/runs/$name"
    n=$((n + 1))
done
echo "archived $n finished run(s) of $SRC in $DST"
