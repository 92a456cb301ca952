"""Semantic segmentation on a timm (or grown) backbone, as mmsegmentation builds it, in plain
torch: no mmcv. The modules and their state-dict names follow mmsegmentation 1.x:
`ConvModule` (conv without bias → BatchNorm → ReLU, keys `conv.*`, `bn.*`), `UPerHead`
(`psp_modules`, `bottleneck`, `lateral_convs`, `fpn_convs`, `fpn_bottleneck`, `conv_seg`),
`FCNHead` (`convs`, `conv_seg`), the neck `Feature2Pyramid` that brings a ViT's single scale to
strides 4, 8, 16, 32 (`upsample_4x`, `upsample_2x`, identity, max-pool), and mmsegmentation's
Swin `norm{i}` after each stage. Resizing is bilinear with `align_corners=False` throughout.

A segmentor's `forward(x)` returns the decode head's logits at the first level's resolution
(stride 4), as mmsegmentation's `EncoderDecoder.encode_decode` does before resizing."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .swin import ScaleNetSwin
from .vit import ScaleNetViT


def is_swin(b):
    """Whether `b` (timm's or scalenet's model) is a Swin: stages rather than blocks."""
    return isinstance(b, ScaleNetSwin) or (not isinstance(b, ScaleNetViT) and hasattr(b, "layers"))


def level_dims(b, vit_levels):
    """The channels of each map `backbone_maps` returns: a Swin's stages, or `vit_levels`
    copies of a ViT's width."""
    if isinstance(b, ScaleNetSwin):
        return [s.blocks[0].dim for s in b.base.layers]
    if is_swin(b):
        return [s.blocks[0].dim for s in b.layers]
    dim = b.base.embed_dim if isinstance(b, ScaleNetViT) else b.embed_dim
    return [dim] * vit_levels


def backbone_maps(b, x, vit_indices):
    """A backbone's feature maps [N, C, H, W] before any stage norm: a Swin's every stage, a
    ViT's (a grown ViT's positions count as blocks) after the blocks `vit_indices` names."""
    if isinstance(b, ScaleNetSwin):
        return b.forward_stages(x)[0]
    if is_swin(b):
        return b.forward_intermediates(x, norm=False, output_fmt="NCHW", intermediates_only=True)
    if isinstance(b, ScaleNetViT):
        return b.forward_intermediates(x, vit_indices)
    # timm returns one map per distinct block; repeats (shallow models) are re-expanded.
    distinct = sorted(set(vit_indices))
    maps = b.forward_intermediates(x, indices=distinct, norm=False, output_fmt="NCHW",
                                   intermediates_only=True)
    return [maps[distinct.index(i)] for i in vit_indices]


def resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    def __init__(self, cin, cout, k, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class UPerHead(nn.Module):
    def __init__(self, in_channels, channels, num_classes, pool_scales=(1, 2, 3, 6),
                 dropout_ratio=0.1):
        super().__init__()
        self.pool_scales = pool_scales
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels[-1], channels, 1))
            for s in pool_scales)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, 1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, 1)
                                       for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, 1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def psp_forward(self, x):
        outs = [x] + [resize(m(x), x.shape[2:]) for m in self.psp_modules]
        return self.bottleneck(torch.cat(outs, 1))

    def forward(self, inputs):
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs[-1]))
        n = len(laterals)
        for i in range(n - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n - 1)] + [laterals[-1]]
        for i in range(n - 1, 0, -1):
            outs[i] = resize(outs[i], outs[0].shape[2:])
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, 1))))


class FCNHead(nn.Module):
    """mmsegmentation's FCNHead with `num_convs=1, concat_input=False` (the UperNet configs'
    auxiliary head), reading level `in_index`."""

    def __init__(self, in_channels, channels, num_classes, in_index=2, dropout_ratio=0.1):
        super().__init__()
        self.in_index = in_index
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, 1))
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs):
        return self.conv_seg(self.dropout(self.convs(inputs[self.in_index])))


class LinearHead(nn.Module):
    """The cheapest probe: BatchNorm, then a 1×1 conv, on the last level."""

    def __init__(self, in_channels, num_classes, dropout_ratio=0.1):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, inputs):
        return self.conv_seg(self.dropout(self.bn(inputs[-1])))


class Feature2Pyramid(nn.Module):
    """mmsegmentation's neck for one-scale backbones (BEiT, MAE, ViT): four maps of one stride
    become strides ×4 up, ×2 up, same, ×2 down."""

    def __init__(self, embed_dim):
        super().__init__()
        self.upsample_4x = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2), nn.BatchNorm2d(embed_dim), nn.GELU(),
            nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2))
        self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2))
        self.identity = nn.Identity()
        self.maxpool = nn.MaxPool2d(2, 2)

    def forward(self, inputs):
        ops = [self.upsample_4x, self.upsample_2x, self.identity, self.maxpool]
        return [op(x) for op, x in zip(ops, inputs)]


class Segmentor(nn.Module):
    """Backbone (a timm ViT or Swin, or scalenet's grown one) → neck (ViT only) → UPerHead or
    the linear head, with the FCN auxiliary head beside it. `out_indices` picks a ViT's blocks."""

    def __init__(self, backbone, num_classes, head="upernet", channels=64, aux_channels=32,
                 out_indices=None, dropout_ratio=0.1):
        super().__init__()
        self.backbone = backbone
        self.out_indices = out_indices
        self.is_swin = is_swin(backbone)
        dims = level_dims(backbone, 4)
        if self.is_swin:
            for i, d in enumerate(dims):
                self.add_module(f"norm{i}", nn.LayerNorm(d))
        # The linear probe reads the last map as the backbone gives it (a ViT's at its patch
        # stride); UperNet needs four strides, which a ViT gets from the neck.
        self.neck = Feature2Pyramid(dims[0]) if head == "upernet" and not self.is_swin else None
        if head == "upernet":
            self.decode_head = UPerHead(dims, channels, num_classes, dropout_ratio=dropout_ratio)
            # mmsegmentation reads level 2 of 4; a backbone with fewer levels, its last.
            aux_index = min(2, len(dims) - 1)
            self.auxiliary_head = FCNHead(dims[aux_index], aux_channels, num_classes,
                                          in_index=aux_index, dropout_ratio=dropout_ratio)
        else:
            self.decode_head = LinearHead(dims[-1], num_classes, dropout_ratio=dropout_ratio)
            self.auxiliary_head = None

    def features(self, x):
        outs = backbone_maps(self.backbone, x, self.out_indices)
        if self.is_swin:
            return [getattr(self, f"norm{i}")(o.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                    for i, o in enumerate(outs)]
        return self.neck(outs) if self.neck is not None else outs

    def forward(self, x):
        return self.decode_head(self.features(x))

    def seg_state_dict(self):
        """The state dict in scalenet's (and mmsegmentation's) names: `backbone.` + the
        backbone's own format (a grown one's `scalenet.*` included), BatchNorm's
        `num_batches_tracked` left out."""
        b = self.backbone
        own = b.grown_state_dict() if hasattr(b, "grown_state_dict") else b.state_dict()
        sd = {f"backbone.{k}": v for k, v in own.items()}
        for k, v in self.state_dict().items():
            if not k.startswith("backbone.") and not k.endswith("num_batches_tracked"):
                # mmsegmentation's Swin holds its stage norms: `backbone.norm{i}`.
                sd["backbone." + k if k.startswith("norm") else k] = v
        return {k: v.contiguous() for k, v in sd.items()}

    def forward_aux(self, x):
        feats = self.features(x)
        aux = self.auxiliary_head(feats) if self.auxiliary_head is not None else None
        return self.decode_head(feats), aux


def slide_inference(seg, x, crop, stride):
    """mmsegmentation's `EncoderDecoder.slide_inference`: windows of `crop` (h, w) every
    `stride` (h, w), the last one of a row or column moved back to end at the image's edge,
    each window's logits resized to the window, summed where windows overlap and divided by
    how many covered each pixel. `x` is [n, c, h, w] at any size ≥ 1; the result is
    [n, classes, h, w]. A window is the whole side where the image is smaller than `crop`."""
    (hc, wc), (hs, ws) = crop, stride
    n, _, h, w = x.shape
    h_grids = max(h - hc + hs - 1, 0) // hs + 1
    w_grids = max(w - wc + ws - 1, 0) // ws + 1
    preds, count = None, x.new_zeros((n, 1, h, w))
    for hi in range(h_grids):
        for wi in range(w_grids):
            y2, x2 = min(hi * hs + hc, h), min(wi * ws + wc, w)
            y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
            logits = resize(seg(x[:, :, y1:y2, x1:x2]), (y2 - y1, x2 - x1))
            if preds is None:
                preds = x.new_zeros((n, logits.shape[1], h, w))
            preds += F.pad(logits, (x1, w - x2, y1, h - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


def load_segmentor(path, dtype=torch.float32):
    """A segmentation directory (`scalenet init --arch upernet`, or one `save_segmentor`
    wrote), in eval mode; `scalenet_torch.load` comes here for such a directory."""
    import re
    from pathlib import Path

    from .io import _config, _load_timm, _tensors
    from .scalenet_parts import FormatError

    path = Path(path)
    cfg = _config(path)
    sd = _tensors(path)
    stage_norm = re.compile(r"^backbone\.norm\d+\.")
    inner = {k[len("backbone."):]: v for k, v in sd.items()
             if k.startswith("backbone.") and not stage_norm.match(k)}
    backbone = _load_timm(path, cfg["backbone"], inner)
    decode = cfg.get("decode_head", {})
    aux = cfg.get("auxiliary_head") or {}
    seg = Segmentor(backbone, cfg["num_classes"], head="upernet" if cfg["architecture"] == "upernet" else "linear",
                    channels=decode.get("channels", 512), aux_channels=aux.get("channels", 256),
                    out_indices=cfg.get("out_indices"), dropout_ratio=decode.get("dropout_ratio", 0.1))
    rest = {k[len("backbone."):] if stage_norm.match(k) else k: v
            for k, v in sd.items() if not k.startswith("backbone.") or stage_norm.match(k)}
    missing, unexpected = seg.load_state_dict(rest, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        what = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}"
        raise FormatError(f"{path / 'model.safetensors'}: {what}")
    seg.source_config = cfg
    return seg.to(dtype).eval()


def save_segmentor(seg, path):
    """Writes `seg` as scalenet's segmentation directory (config.json, model.safetensors),
    each file to a temporary name first. The config is the one it was loaded with."""
    from .io import write_dir

    write_dir(path, seg.source_config, seg.seg_state_dict())
