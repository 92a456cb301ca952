"""Train a scalenet model (grown or plain ViT, Swin or Llama) with PyTorch's distributed stack,
then save it where scalenet reads it. The shared blocks stay single parameters under DDP and
FSDP, so each is one gradient (summed over its positions, then over processes) and one
optimizer entry.

    # one process
    python examples/torch/train_ddp.py MODEL_DIR --out OUT
    # two processes on this machine's CPUs (gloo); DDP, or FSDP with use_orig_params
    torchrun --nproc_per_node 2 examples/torch/train_ddp.py MODEL_DIR --out OUT
    torchrun --nproc_per_node 2 examples/torch/train_ddp.py MODEL_DIR --out OUT --fsdp   # FSDP2
    # a GPU node
    torchrun --nproc_per_node 8 examples/torch/train_ddp.py MODEL_DIR --out OUT --backend nccl

The data are deterministic synthetic batches (images and labels, or token ids) of --batch
samples in all, each process taking its share, so that any number of processes computes the
same steps: replace `batch()` with your data loader.
"""
import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
import scalenet_torch  # noqa: E402


def is_language_model(model):
    return hasattr(model, "config") and getattr(model.config, "model_type", None) == "llama"


def batch(model, step, size, seq_len=16):
    """The global batch of `step`: the same on every process."""
    g = torch.Generator().manual_seed(1000 + step)
    if is_language_model(model):
        return torch.randint(0, model.config.vocab_size, (size, seq_len), generator=g), None
    args = model.source_config.get("model_args", {})
    size_hw = args.get("img_size", 224)
    h, w = (size_hw, size_hw) if isinstance(size_hw, int) else size_hw
    x = torch.randn(size, args.get("in_chans", 3), h, w, generator=g)
    y = torch.randint(0, model.source_config.get("num_classes", 1000), (size,), generator=g)
    return x, y


def loss_of(model, x, y):
    if y is None:
        return model(input_ids=x, labels=x, use_cache=False).loss
    return torch.nn.functional.cross_entropy(model(x), y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="the global batch, all processes together")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--fsdp", action="store_true",
                    help="FSDP (fully_shard: per-parameter sharding of the original parameters) instead of DDP")
    ap.add_argument("--optim", choices=["adamw", "sgd"], default="adamw")
    ap.add_argument("--backend", default="gloo", help="gloo (CPUs) or nccl (GPUs)")
    a = ap.parse_args()
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group(a.backend)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if a.backend == "nccl" else torch.device("cpu")
    if a.batch % world:
        raise SystemExit(f"--batch {a.batch} must divide among {world} processes")
    torch.manual_seed(0)
    model = scalenet_torch.load(a.model_dir).to(device).train()
    plain = model
    params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(f"{type(model).__name__}: {params} parameters (shared blocks once), {world} process(es)")
    if distributed and a.fsdp:
        # FSDP2: torch's FSDP1 needs an accelerator; fully_shard runs on CPUs (gloo) and GPUs
        # alike and keeps the original parameters (FSDP1's use_orig_params=True).
        from torch.distributed.fsdp import fully_shard
        fully_shard(model)
    elif distributed:
        # A grown model with per-position norms never runs its base blocks' own norms.
        model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    make = torch.optim.AdamW if a.optim == "adamw" else torch.optim.SGD
    opt = make(model.parameters(), lr=a.lr)
    share = a.batch // world
    for step in range(a.steps):
        x, y = batch(plain, step, a.batch)
        x = x[rank * share:(rank + 1) * share].to(device)
        y = None if y is None else y[rank * share:(rank + 1) * share].to(device)
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
        if rank == 0:
            print(f"step {step + 1}: loss {loss.item():.5f}")
    if distributed and a.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            plain = scalenet_torch.load(a.model_dir)
            plain.load_state_dict(full)
            scalenet_torch.save(plain, a.out)
    elif rank == 0:
        scalenet_torch.save(plain.eval(), a.out)
    if rank == 0:
        print(f"saved to {a.out}: scalenet info/eval/train read it")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
