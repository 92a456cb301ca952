#!/usr/bin/env bash
# Builds the `scalenet` wheel: the binary alone (maturin, `bindings = "bin"`), so that
# `pip install scalenet-*.whl` puts `scalenet` on the PATH with no Rust toolchain.
#
#   scripts/build-wheel.sh           the CPU wheel, in dist/
#   scripts/build-wheel.sh --cuda    the same package with --features cuda, in dist/cuda/ (run
#                                    scripts/setup-cuda.sh --sdk once first; install one or the
#                                    other: both are the package `scalenet`)
#
# It needs python3 with pip (maturin comes from PyPI into a build venv) and cargo. The wheel is
# tagged manylinux when the binary's glibc symbols allow (maturin checks them).
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
features=()
case "${1:-}" in
    "") ;;
    --cuda) out=dist/cuda; features=(--features cuda); export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}" ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-wheel: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

venv="${SCALENET_WHEEL_VENV:-target/wheel-venv}"
if [[ ! -x "$venv/bin/maturin" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "maturin>=1.5,<2"
fi
"$venv/bin/maturin" build --release --strip --out "$out" "${features[@]}"
ls -1 "$out"/scalenet-*.whl
