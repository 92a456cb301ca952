"""Grown timm ViTs (DeiT and friends): a timm model of the base depth whose blocks are reused
along `layer_map`, each position with its own adapters, norms, gates or LoRA.

Position i runs base block j = layer_map[i]:
    n1 = norm1(x); a = Attn_j(n1) [+ attn_adapter_i(n1)]; [a = ls1_i * a]; x = x + a
    n2 = norm2(x); f = Mlp_j(n2)  [+ mlp_adapter_i(n2)];  [f = ls2_i * f]; x = x + f
where Attn_j / Mlp_j include the base block's own LayerScale when the base has one, and run
with the position's LoRA on qkv, proj, fc1 and fc2 when the spec has "lora".
"""
from timm.layers import LayerScale
from torch import nn

from .scalenet_parts import Lora, adapters, maybe_relaxed

LORA_TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]


class Position(nn.Module):
    def __init__(self, dim: int, spec: dict, block=None, eps: float = 1e-6):
        super().__init__()
        self.attn_adapter, self.mlp_adapter = adapters(dim, spec)
        ln = lambda: nn.LayerNorm(dim, eps=eps)
        self.norm1 = ln() if spec["unshared_norms"] else None
        self.norm2 = ln() if spec["unshared_norms"] else None
        self.ls1 = LayerScale(dim, 1.0) if spec["layer_scale"] else None
        self.ls2 = LayerScale(dim, 1.0) if spec["layer_scale"] else None
        l = spec.get("lora")
        self.lora = Lora(block, LORA_TARGETS, l["rank"], l["scale"]) if l else None

    def forward(self, blk, x):
        with maybe_relaxed(self.lora, blk) as blk:
            n1 = (self.norm1 or blk.norm1)(x)
            a = blk.ls1(blk.attn(n1))
            if self.attn_adapter is not None:
                a = a + self.attn_adapter(n1)
            if self.ls1 is not None:
                a = self.ls1(a)
            x = x + a
            n2 = (self.norm2 or blk.norm2)(x)
            f = blk.ls2(blk.mlp(n2))
            if self.mlp_adapter is not None:
                f = f + self.mlp_adapter(n2)
            if self.ls2 is not None:
                f = self.ls2(f)
            return x + f


class ScaleNetViT(nn.Module):
    """A timm ViT of the base depth whose blocks are reused along `layer_map`: each base
    tensor is one parameter however many positions run it."""

    def __init__(self, base: nn.Module, spec: dict):
        super().__init__()
        self.base = base
        self.spec = spec
        self.layer_map = list(spec["layer_map"])
        self.layers = nn.ModuleList(Position(base.embed_dim, spec, base.blocks[j])
                                    for j in self.layer_map)

    def forward_features(self, x):
        b = self.base
        x = b.patch_embed(x)
        x = b._pos_embed(x)
        x = b.patch_drop(x)
        x = b.norm_pre(x)
        for pos, j in zip(self.layers, self.layer_map):
            x = pos(b.blocks[j], x)
        return b.norm(x)

    def forward(self, x):
        return self.base.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices):
        """The outputs of positions `indices` as NCHW patch grids, prefix tokens dropped and
        no norm: what timm's `forward_intermediates(..., norm=False, output_fmt='NCHW',
        intermediates_only=True)` gives for a plain ViT, a grown model's positions counting
        as blocks."""
        b = self.base
        n, _, h, w = x.shape
        gh, gw = b.patch_embed.dynamic_feat_size((h, w)) if b.dynamic_img_size else b.patch_embed.grid_size
        x = b.norm_pre(b.patch_drop(b._pos_embed(b.patch_embed(x))))
        outs = []
        for i, (pos, j) in enumerate(zip(self.layers, self.layer_map)):
            if i > max(indices):
                break
            x = pos(b.blocks[j], x)
            for _ in range(list(indices).count(i)):
                patches = x[:, b.num_prefix_tokens:]
                outs.append(patches.reshape(n, gh, gw, -1).permute(0, 3, 1, 2).contiguous())
        return outs

    def grown_state_dict(self):
        sd = dict(self.base.state_dict())
        for i, pos in enumerate(self.layers):
            for k, v in pos.state_dict().items():
                sd[f"scalenet.layers.{i}.{k}"] = v
        return {k: v.contiguous() for k, v in sd.items()}
