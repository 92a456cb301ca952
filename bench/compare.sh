#!/usr/bin/env bash
# Runs scalenet and PyTorch+timm on the same configurations, on this machine, one after the
# other in one go, and prints each ratio (scalenet / PyTorch; above 1 means scalenet is faster,
# below 1 for memory means scalenet uses less).
#
#   bench/compare.sh                     # uses `python3` (needs torch + timm)
#   bench/compare.sh --venv DIR          # creates DIR with torch + timm first if missing
#   bench/compare.sh --precision bf16    # bf16 against torch.autocast(bfloat16)
#   bench/compare.sh --precision auto    # our --precision auto against PyTorch's default f32
#   bench/compare.sh --device cuda       # on a GPU (memory: our host RSS vs torch's GPU peak)
#   BIN=path/to/scalenet STEPS=20 bench/compare.sh   # a prebuilt binary; more timed steps
#   ROWS=seg bench/compare.sh            # only the segmentation rows (ROWS=det: the detection
#                                        # rows; ROWS=classify: the classification rows)
#   SCALENET_BLAS=/path/libmkl_rt.so.3 bench/compare.sh   # our f32 products through a BLAS
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
PRECISION=f32
DEVICE=cpu
while [[ $# -gt 0 ]]; do
    case "$1" in
        --venv)
            VENV="${2:?--venv needs a directory}"
            [[ -x "$VENV/bin/python" ]] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q torch timm safetensors; }
            PY="$VENV/bin/python"; shift 2 ;;
        --precision) PRECISION="${2:?--precision needs f32, bf16 or auto}"; shift 2 ;;
        --device) DEVICE="${2:?--device needs cpu or cuda}"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
STEPS="${STEPS:-10}"
ROWS="${ROWS:-all}"   # all, classify, seg or det
# auto is ours to resolve; PyTorch runs what its users get by default.
THEIRS_PRECISION="$PRECISION"
[[ "$PRECISION" == auto ]] && THEIRS_PRECISION=f32
if [[ -z "${BIN:-}" ]]; then
    FEATURES=()
    [[ "$DEVICE" == cuda ]] && FEATURES=(--features cuda)
    cargo build --release -q "${FEATURES[@]}"
    BIN=target/release/scalenet
fi
OURS_DEVICE=flex
[[ "$DEVICE" == cuda ]] && OURS_DEVICE=cuda:0
THREADS=$(nproc)

# One configuration's rows: ours, theirs and the ratio of each measure.
show_ratios() {
    "$PY" - "$1" "$2" "$3" <<'PYEOF'
import json, sys
name, ours, theirs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
row = lambda k: f"{ours[k]:9.1f} {theirs[k]:9.1f} {ours[k] / theirs[k]:6.2f}x"
print(f"{name}")
print(f"  train img/s    {row('train_img_per_s')}")
print(f"  infer img/s    {row('infer_img_per_s')}")
print(f"  train peak MiB {row('train_peak_rss_mib')}")
print(f"  # ours: {ours['device']} {ours.get('precision', 'f32')} ({ours.get('f32_gemm', '')}); theirs: {theirs['device']}")
PYEOF
}

run_pair() {
    local name="$1" batch="$2"; shift 2
    local margs=()
    for a in "$@"; do margs+=(--model-arg "$a"); done
    local ours theirs
    ours=$("$BIN" bench --arch "${ARCH}" "${margs[@]}" --batch-size "$batch" --steps "$STEPS" \
        --device "$OURS_DEVICE" --precision "$PRECISION")
    theirs=$("$PY" bench/torch_bench.py --arch "${ARCH}" "${margs[@]}" --batch-size "$batch" \
        --steps "$STEPS" --threads "$THREADS" --device "$DEVICE" --precision "$THEIRS_PRECISION")
    show_ratios "$name" "$ours" "$theirs"
}

echo "config                  scalenet   pytorch  ratio   ($DEVICE, $PRECISION, $(nproc) cores, $(date -u +%F))"
if [[ "$ROWS" == all || "$ROWS" == classify ]]; then
    ARCH=deit_tiny_patch16_224 run_pair "DeiT-Tiny 224px, batch 16" 16
    ARCH=vit_tiny_patch16_224 run_pair "28px grey, patch 4, d192x12, batch 128" 128 img_size=28 patch_size=4 in_chans=1 num_classes=10
    ARCH=swin_tiny_patch4_window7_224 run_pair "Swin-Tiny 224px, batch 8" 8
    ARCH=swin_tiny_patch4_window7_224 run_pair "28px grey Swin, patch 2, d32, depths 2,2, window 7, batch 128" 128 img_size=28 patch_size=2 in_chans=1 embed_dim=32 "depths=[2,2]" "num_heads=[2,4]" window_size=7 num_classes=10
fi
[[ "$ROWS" == classify ]] && exit 0

# Segmentation: the same segmentor directory timed by `scalenet bench` and by the package's
# PyTorch reference (bench/torch_seg_bench.py: mmsegmentation's UPerHead/FCNHead modules on the
# timm or grown backbone), training steps with mmsegmentation's loss and BatchNorm in train mode.
SEGTMP=$(mktemp -d)
trap 'rm -rf "$SEGTMP"' EXIT
# One directory timed by `scalenet bench` and by the PyTorch script $4.
run_dir_pair() {
    local name="$1" dir="$2" batch="$3" script="$4"
    local ours theirs
    ours=$("$BIN" bench "$dir" --batch-size "$batch" --steps "$STEPS" --device "$OURS_DEVICE" \
        --precision "$PRECISION")
    theirs=$("$PY" "$script" "$dir" --batch-size "$batch" --steps "$STEPS" \
        --threads "$THREADS" --device "$DEVICE" --precision "$THEIRS_PRECISION")
    show_ratios "$name" "$ours" "$theirs"
}
run_seg_pair() { run_dir_pair "$1" "$2" "$3" bench/torch_seg_bench.py; }
run_det_pair() { run_dir_pair "$1" "$2" "$3" bench/torch_det_bench.py; }
if [[ "$ROWS" == all || "$ROWS" == seg ]]; then
"$BIN" init --arch swin_tiny_patch4_window7_224 --out "$SEGTMP/swin" >/dev/null
"$BIN" init --arch upernet --backbone "$SEGTMP/swin" --num-classes 150 --channels 512 \
    --aux-channels 256 --out "$SEGTMP/upernet-swin" >/dev/null
run_seg_pair "UperNet + Swin-Tiny 224px (mmseg's channels 512/256, 150 classes), batch 2" "$SEGTMP/upernet-swin" 2
# The segmentation study's shape: a 28px-pretrained grey ViT (d96, patch 4) grown to 8
# positions, UperNet of 64/32 channels at 48px.
"$BIN" init --arch vit_tiny_patch16_224 --model-arg img_size=28 --model-arg patch_size=4 \
    --model-arg in_chans=1 --model-arg embed_dim=96 --model-arg depth=4 --model-arg num_heads=3 \
    --model-arg num_classes=10 --out "$SEGTMP/vit" >/dev/null
"$BIN" expand "$SEGTMP/vit" --depth 8 --out "$SEGTMP/vit8" >/dev/null
"$BIN" init --arch upernet --backbone "$SEGTMP/vit8" --img-size 48 --out "$SEGTMP/upernet-vit" >/dev/null
run_seg_pair "UperNet + grown grey ViT (d96, 8 positions) 48px, 64/32 channels, 11 classes, batch 16" "$SEGTMP/upernet-vit" 16
fi

# Detection: the same detector directory timed by `scalenet bench` and by torchvision's
# RetinaNet as the package builds it (bench/torch_det_bench.py), post-processing included.
if [[ "$ROWS" == all || "$ROWS" == det ]]; then
"$BIN" init --arch swin_tiny_patch4_window7_224 --out "$SEGTMP/swin" >/dev/null
"$BIN" init --arch retinanet --backbone "$SEGTMP/swin" --num-classes 80 --fpn-channels 256 \
    --out "$SEGTMP/retina-swin" >/dev/null
run_det_pair "RetinaNet + Swin-Tiny 224px (torchvision's 256-wide FPN and head, 80 classes), batch 2" "$SEGTMP/retina-swin" 2
"$BIN" init --arch vit_tiny_patch16_224 --model-arg img_size=28 --model-arg patch_size=4 \
    --model-arg in_chans=1 --model-arg embed_dim=96 --model-arg depth=4 --model-arg num_heads=3 \
    --model-arg num_classes=10 --out "$SEGTMP/vit" >/dev/null
"$BIN" expand "$SEGTMP/vit" --depth 8 --out "$SEGTMP/vit8" >/dev/null
"$BIN" init --arch retinanet --backbone "$SEGTMP/vit8" --img-size 48 --out "$SEGTMP/retina-vit" >/dev/null
run_det_pair "RetinaNet + grown grey ViT (d96, 8 positions) 48px, 64-wide FPN, 10 classes, batch 16" "$SEGTMP/retina-vit" 16
fi
