"""Checks that training a grown model with PyTorch's distributed stack is what one process
does, and that the result comes back to scalenet: for a grown ViT and a grown Llama (the
committed fixtures), N steps of 1 process with the global batch B against 2 processes (gloo,
this machine's CPUs) with B/2 each, under DDP and under FSDP, with SGD and AdamW; then
`scalenet forward` on each result against PyTorch's logits.

    python examples/torch/check_scale_out.py [--bin target/release/scalenet]
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import scalenet_torch  # noqa: E402

TRAIN = ROOT / "examples" / "torch" / "train_ddp.py"
MODELS = {"grown ViT": ROOT / "tests/fixtures/grown/irregular_full",
          "grown Llama": ROOT / "tests/fixtures/grown_llama/gqa_tied_full"}


def train(model, out, procs, *flags):
    cmd = ([sys.executable, TRAIN] if procs == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), TRAIN])
    subprocess.run([*map(str, cmd), model, "--out", out, "--steps", "3", "--batch", "8", *flags],
                   check=True, capture_output=True)


def logits_in_scalenet(bin_, model_dir, tmp):
    m = scalenet_torch.load(model_dir)
    if hasattr(m, "config"):
        x = {"input_ids": torch.randint(0, m.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))}
        with torch.no_grad():
            theirs = m(x["input_ids"]).logits
    else:
        x = {"input": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
        with torch.no_grad():
            theirs = m(x["input"])
    save_file(x, tmp / "in.safetensors")
    subprocess.run([bin_, "forward", model_dir, "--input", tmp / "in.safetensors", "--output",
                    tmp / "out.safetensors"], check=True, capture_output=True,
                   env={**os.environ, "SCALENET_BLAS": "none"})
    return (load_file(tmp / "out.safetensors")["logits"] - theirs).abs().max().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "scalenet"))
    a = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name, model in MODELS.items():
            stored = sum(v.numel() for v in load_file(model / "model.safetensors").values())
            params = sum(p.numel() for p in scalenet_torch.load(model).parameters())
            print(f"{name}: {params} parameters in PyTorch, {stored} stored values "
                  f"({'shared blocks counted once' if params == stored else 'MISMATCH'})")
            ok &= params == stored
            for optim in ["sgd", "adamw"]:
                one = tmp / f"{name}-{optim}-1"
                train(model, one, 1, "--optim", optim)
                ref = load_file(one / "model.safetensors")
                for mode in ["ddp", "fsdp"]:
                    out = tmp / f"{name}-{optim}-{mode}"
                    train(model, out, 2, "--optim", optim, *(["--fsdp"] if mode == "fsdp" else []))
                    got = load_file(out / "model.safetensors")
                    diff = {k: (ref[k] - got[k]).abs().max().item() for k in ref}
                    worst = max(diff, key=diff.get)
                    # SGD: the same weights to float rounding. AdamW divides each gradient by its
                    # own scale, so an element whose true gradient is 0 (a key bias: softmax
                    # ignores it) moves by ±lr on rounding noise alone: bounded by steps × lr.
                    tol = 1e-6 if optim == "sgd" else 3e-3
                    good = set(ref) == set(got) and diff[worst] <= tol
                    ok &= good
                    print(f"  {optim:5} 2 processes {mode:4} vs 1: max |Δw| {diff[worst]:.2e} "
                          f"({worst}) {'ok' if good else 'FAILED'}")
                err = logits_in_scalenet(a.bin, one, tmp)
                ok &= err < 1e-4
                print(f"  {optim:5} trained model in scalenet: logits within {err:.1e} of PyTorch's")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
