#!/usr/bin/env bash
# Builds scalenet with `--features cuda` on a machine that reaches only package registries.
#
# burn's CUDA backend compiles kernels through LLVM (cubecl-llvm), and its build normally
# downloads a prebuilt LLVM 23.1 from GitHub (tracel-llvm-bundler). The same static LLVM SDK
# ships on PyPI as two wheels; this script fetches them with pip, checks their hashes, unpacks
# them where the bundler looks (so it skips its download), and then builds.
#
#   scripts/setup-cuda.sh            set up the SDK, then `cargo build --release --features cuda`
#   scripts/setup-cuda.sh --sdk      set up the SDK only (then any cargo command with --features cuda works)
#   scripts/setup-cuda.sh --check    set up the SDK, then clippy the cuda feature (what CI runs)
#
# Running it again is cheap: a verified SDK is kept. CUDARC_CUDA_VERSION (default 13000, i.e.
# CUDA 13.0) picks the driver API version that the binary is built against; set it to your
# driver's version (`nvidia-smi` shows it; 12080 for 12.8) where that is older.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
case "${1:-}" in
    "") ;;
    --sdk) mode=sdk ;;
    --check) mode=check ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-cuda: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

die() { echo "setup-cuda: $*" >&2; exit 1; }

# What tracel-llvm-bundler 23.1.0-4 (burn 0.22.1 -> cubecl 0.11.3) expects, and the PyPI wheels
# that hold the same LLVM (23.1.1; NVPTX comes in the extra-targets wheel).
BUNDLE=tracel-llvm-23.1.0-4
WHEELS=(
    "mlc-llvm-static==23.1.1.post0 dcfec888abfaa418be77d41af585805f31463584cf9c90582992c00f392c1ac5"
    "mlc-llvm-static-extra-targets==23.1.1.post0 c36e834d9a4e9cf9759f27fece65711ece7a2fc2b5a96dbb15d66f5e9e787929"
)
# The bundler's own location: dirs::data_local_dir() on Linux.
SDK="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/$BUNDLE"
STAMP="$SDK/.scalenet-wheels"
SENTINEL="$SDK/.tracel-llvm-installed"
want_stamp="$(printf '%s\n' "${WHEELS[@]}")"

command -v python3 >/dev/null || die "python3 is needed (pip downloads the LLVM wheels; llvm-config is a Python script)"
command -v cargo >/dev/null || die "cargo is needed"

if [[ -f "$SENTINEL" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" && -x "$SDK/bin/llvm-config" ]]; then
    echo "setup-cuda: LLVM SDK already in place at $SDK"
else
    echo "setup-cuda: fetching the LLVM 23.1 static SDK from PyPI (about 92 MB)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    reqs="$work/requirements.txt"
    for w in "${WHEELS[@]}"; do
        printf '%s --hash=sha256:%s\n' "${w% *}" "${w#* }" >>"$reqs"
    done
    # --require-hashes makes pip refuse any file whose sha256 differs from the pinned one.
    if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation py \
        -r "$reqs" -d "$work/wheels" >"$work/pip.log" 2>&1; then
        tail -5 "$work/pip.log" >&2
        die "pip could not fetch the LLVM wheels (${WHEELS[*]%% *}); check that PyPI is reachable"
    fi
    for w in "${WHEELS[@]}"; do
        name="${w%%==*}"
        file="$(ls "$work"/wheels/"${name//-/_}"-*.whl 2>/dev/null | head -1)"
        [[ -n "$file" ]] || die "pip reported success but no wheel for $name was saved"
        echo "${w#* }  $file" | sha256sum --quiet -c - || die "$file: sha256 does not match the pinned hash"
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$file" "$work/unpacked"
    done
    # Unpack beside the destination, then rename: an interrupted run never leaves a
    # half-written SDK that the bundler would take as installed.
    mkdir -p "$(dirname "$SDK")"
    rm -rf "$SDK.partial"
    mv "$work/unpacked/mlc_llvm_static/static" "$SDK.partial"
    chmod +x "$SDK.partial/bin/llvm-config"
    "$SDK.partial/bin/llvm-config" --link-static --targets-built | grep -qw NVPTX \
        || die "the unpacked SDK has no NVPTX target"
    printf '%s\n' "$want_stamp" >"$SDK.partial/.scalenet-wheels"
    touch "$SDK.partial/.tracel-llvm-installed"
    rm -rf "$SDK"
    mv "$SDK.partial" "$SDK"
    echo "setup-cuda: LLVM $("$SDK/bin/llvm-config" --version) SDK installed at $SDK"
fi

export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
case "$mode" in
    sdk)
        echo "setup-cuda: now build with: CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION cargo build --release --features cuda"
        ;;
    check)
        cargo clippy --features cuda --all-targets -- -D warnings
        ;;
    build)
        cargo build --release --features cuda
        echo "setup-cuda: built target/release/scalenet with CUDA (driver API $CUDARC_CUDA_VERSION); try:"
        echo "  target/release/scalenet bench --arch deit_small_patch16_224 --device cuda:0"
        ;;
esac
