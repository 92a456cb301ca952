#!/usr/bin/env bash
# The converged-regime study (docs/RESULTS.md): a d96 ViT (patch 4 on 28 px: 49 patches, 3 heads)
# of depth L = 4 pretrained 30 epochs on the full Fashion-MNIST, grown to 2L and trained
# E = 10 epochs, against the baselines. Every arm is resumable: run the same command again.
#
#   scripts/converged-study.sh OUT_DIR [ARMS]      # ARMS: comma-separated (default: the headline)
#   scripts/converged-study.sh OUT_DIR all         # every arm: headline, scaling and variants
#   SCALENET_BLAS=.../libmkl_rt.so.3 scripts/converged-study.sh ...   # MKL for the products
#   scripts/converged-study.sh OUT_DIR ARMS --precision bf16           # more flags: to reproduce
#
# The recipe (drop path 0.1, 2 warmup epochs, the rest `reproduce`'s defaults) was fixed before
# any arm ran; nothing was chosen on the test set.
set -euo pipefail
OUT="${1:?usage: scripts/converged-study.sh OUT_DIR [ARMS]}"
HEADLINE=grown,grown-identity,scratch-3E,scratch-E,stacked,shared-only,base+E
ARMS="${2:-$HEADLINE}"
[[ "$ARMS" == all ]] && ARMS="$HEADLINE,grown-1.5L,grown-3L,scratch-1.5L-3E,scratch-3L-3E,adapters-only,interleave,rank-8,rank-64,grown-low-lr,base+E-low-lr"
BIN="${BIN:-scalenet}"
exec "$BIN" reproduce --out "$OUT" \
    --embed-dim 96 --num-heads 3 --patch-size 4 --base-depth 4 \
    --base-epochs 30 --epochs 10 --seeds 3 \
    --drop-path 0.1 --warmup-epochs 2 --only "$ARMS" "${@:3}"
