"""The pieces every grown family shares: the parallel adapter, the per-position gate, the
per-position LoRA (relaxed-recursive), and the `scalenet` block's checks.

This file is self-contained (torch only): `scalenet export --torch` copies it beside
`modeling_scalenet.py` into a transformers directory, which then loads without this package.
"""
from contextlib import contextmanager

import torch
from torch import nn

FORMAT_VERSION = 1


class FormatError(ValueError):
    """A directory or tensor that does not fit scalenet's format; the message names the file."""


class Adapter(nn.Module):
    """`s * up(act(down(z)))`; `up` starts at zero."""

    def __init__(self, dim: int, rank: int, scale: float, activation: str):
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        self.scale = scale
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z):
        return self.scale * self.up(self.act(self.down(z)))


class Gate(nn.Module):
    """A per-position LayerScale (`gamma`), as timm's."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Lora(nn.Module):
    """A position's LoRA on the linear layers `targets` (names under the block) of its block:
    each runs as `W + scale * lora_B @ lora_A` at this position alone (Relaxed Recursive
    Transformers). `lora_B` starts at zero."""

    def __init__(self, block: nn.Module, targets, rank: int, scale: float):
        super().__init__()
        self.targets = list(targets)
        self.scale = scale
        for name in self.targets:
            lin = block.get_submodule(name)
            parent = self
            for part in name.split("."):
                if not hasattr(parent, part):
                    parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            parent.lora_A = nn.Linear(lin.in_features, rank, bias=False)
            parent.lora_B = nn.Linear(rank, lin.out_features, bias=False)
            nn.init.zeros_(parent.lora_B.weight)

    @contextmanager
    def relaxed(self, block: nn.Module):
        """`block` with each target's weight W + s * B A while inside; the shared W stays one
        parameter, so its gradient sums over the positions that run it."""
        saved = {}
        try:
            for name in self.targets:
                lin, mine = block.get_submodule(name), self.get_submodule(name)
                w = lin._parameters.pop("weight")
                saved[name] = w
                lin.weight = w + self.scale * mine.lora_B.weight @ mine.lora_A.weight
            yield block
        finally:
            for name, w in saved.items():
                lin = block.get_submodule(name)
                del lin.weight
                lin._parameters["weight"] = w


@contextmanager
def maybe_relaxed(lora, block):
    if lora is None:
        yield block
    else:
        with lora.relaxed(block) as b:
            yield b


def adapters(dim: int, spec: dict):
    """The (attn, mlp) adapters `spec` asks for."""
    a = spec.get("adapter")
    places = a["placement"] if a else []
    make = lambda: Adapter(dim, a["rank"], a["scale"], a["activation"])
    return (make() if "attn" in places else None, make() if "mlp" in places else None)


def check_spec(spec: dict, where: str, depths) -> None:
    """The `scalenet` block's version and maps, against the base's depth(s)."""
    if spec.get("format_version") != FORMAT_VERSION:
        raise FormatError(f"{where}: scalenet.format_version {spec.get('format_version')} is not "
                          f"supported (this package reads version {FORMAT_VERSION})")
    maps = spec["layer_maps"] if "layer_maps" in spec else [spec.get("layer_map")]
    for s, (m, d) in enumerate(zip(maps, depths)):
        if not m or any((not isinstance(j, int)) or j < 0 or j >= d for j in m):
            raise FormatError(f"{where}: scalenet layer map {m} (stage {s}) must name blocks 0..{d - 1}")
        if sorted(set(m)) != list(range(d)):
            raise FormatError(f"{where}: scalenet layer map {m} (stage {s}) leaves a base block unused")


def load_positions(positions, sd: dict, prefix_of, where: str) -> None:
    """Loads each position's tensors (`prefix_of(i)` + name) strictly: a missing, unexpected or
    misshapen tensor is one FormatError naming it."""
    for i, p in enumerate(positions):
        prefix = prefix_of(i)
        mine = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        strict_load(p, mine, where, prefix)


def strict_load(module: nn.Module, sd: dict, where: str, prefix: str = "") -> None:
    want = module.state_dict()
    missing = [k for k in want if k not in sd]
    if missing:
        raise FormatError(f"{where}: tensor {prefix}{missing[0]} is missing")
    extra = [k for k in sd if k not in want]
    if extra:
        raise FormatError(f"{where}: unexpected tensor {prefix}{extra[0]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise FormatError(f"{where}: tensor {prefix}{k} has shape {list(v.shape)}, the config "
                              f"says {list(want[k].shape)}")
    module.load_state_dict(sd, strict=True)
