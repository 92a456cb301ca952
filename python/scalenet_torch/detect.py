"""Object detection on a timm (or grown) backbone: torchvision's RetinaNet, unchanged, over a
feature pyramid built from the backbone.

- A Swin gives its last three stages (strides 8, 16, 32 for a patch of 4), each through a
  LayerNorm `backbone.norm{i}` as mmdetection's Swin adds them.
- A ViT gives its last block's map (a grown ViT's last position) at the patch stride, brought
  to three strides as ViTDet's simple feature pyramid does: ×2 up by a 2×2 transposed conv
  (`neck.upsample_2x.0`), the map itself, ×2 down by 2×2 max-pooling.
- torchvision's `FeaturePyramidNetwork` on those three (`neck.fpn.*`), with `LastLevelP6P7`
  taken from P5 as `retinanet_resnet50_fpn` does: five levels.
- torchvision's `RetinaNetHead` (`head.*`), anchors from its `AnchorGenerator`, its matcher,
  box coder, focal loss and post-processing.

`Detector.features(x)` returns the five levels for an already normalised batch; the RetinaNet
itself (`Detector.retinanet`) is torchvision's class with this backbone inside."""

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from .seg import backbone_maps, is_swin, level_dims
from .vit import ScaleNetViT

DEFAULTS = {
    "fpn_channels": 256,
    "anchor_sizes": [32, 64, 128, 256, 512],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "score_thresh": 0.05,
    "nms_thresh": 0.5,
    "detections_per_img": 300,
    "topk_candidates": 1000,
    "fg_iou_thresh": 0.5,
    "bg_iou_thresh": 0.4,
}


def anchor_generator(sizes, ratios):
    """torchvision's RetinaNet anchors: three scales per level (x, x·2^⅓, x·2^⅔, truncated to
    integers as `_default_anchorgen` does) times the aspect ratios."""
    scales = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in sizes)
    return AnchorGenerator(scales, (tuple(ratios),) * len(scales))


def vit_depth(b):
    return len(b.layer_map) if isinstance(b, ScaleNetViT) else len(b.blocks)


class DetBackbone(nn.Module):
    """The backbone, its three levels and the FPN: an OrderedDict of five maps."""

    def __init__(self, backbone, fpn_channels):
        super().__init__()
        self.backbone = backbone
        self.is_swin = is_swin(backbone)
        if self.is_swin:
            dims = level_dims(backbone, 0)
            self.levels = list(range(max(0, len(dims) - 3), len(dims)))
            for i in self.levels:
                self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))
            in_list = [dims[i] for i in self.levels]
        else:
            dim = level_dims(backbone, 1)[0]
            self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2))
            in_list = [dim] * 3
        self.fpn = FeaturePyramidNetwork(in_list, fpn_channels,
                                         extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
        self.out_channels = fpn_channels

    def levels_of(self, x):
        if self.is_swin:
            maps = backbone_maps(self.backbone, x, None)
            return [getattr(self, f"norm{i}")(maps[i].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                    for i in self.levels]
        last = backbone_maps(self.backbone, x, [vit_depth(self.backbone) - 1])[0]
        return [self.upsample_2x(last), last, F.max_pool2d(last, 2)]

    def forward(self, x):
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(self.levels_of(x))))


class Detector(nn.Module):
    """torchvision's RetinaNet over `DetBackbone`, configured from a scalenet detection
    config (`cfg`: the keys of `DEFAULTS`, `num_classes`, `mean`, `std`)."""

    def __init__(self, backbone, cfg):
        super().__init__()
        c = {**DEFAULTS, **cfg}
        body = DetBackbone(backbone, c["fpn_channels"])
        h, w = c.get("image_size") or _input_size(backbone)
        self.retinanet = RetinaNet(
            body, c["num_classes"], min_size=min(h, w), max_size=max(h, w),
            image_mean=c["mean"], image_std=c["std"],
            anchor_generator=anchor_generator(c["anchor_sizes"], c["aspect_ratios"]),
            score_thresh=c["score_thresh"], nms_thresh=c["nms_thresh"],
            detections_per_img=c["detections_per_img"], fg_iou_thresh=c["fg_iou_thresh"],
            bg_iou_thresh=c["bg_iou_thresh"], topk_candidates=c["topk_candidates"],
            size_divisible=1)
        self.source_config = cfg

    @property
    def backbone(self):
        return self.retinanet.backbone.backbone

    def features(self, x):
        return list(self.retinanet.backbone(x).values())

    def det_state_dict(self):
        """scalenet's names: `backbone.` + the backbone's own format (a grown one's
        `scalenet.*` included) and its stage norms, `neck.` the pyramid, `head.` torchvision's."""
        b = self.backbone
        own = b.grown_state_dict() if hasattr(b, "grown_state_dict") else b.state_dict()
        sd = {f"backbone.{k}": v for k, v in own.items()}
        for k, v in self.retinanet.state_dict().items():
            if k.startswith("backbone.backbone."):
                continue
            if k.startswith("backbone.norm"):
                sd[k] = v
            elif k.startswith("backbone."):
                sd["neck." + k[len("backbone."):]] = v
            else:
                sd[k] = v
        return {k: v.contiguous() for k, v in sd.items()}

    def load_det_state_dict(self, sd, where):
        from .scalenet_parts import FormatError

        import re

        stage_norm = re.compile(r"^backbone\.norm\d+\.")
        rest = {}
        for k, v in sd.items():
            if stage_norm.match(k):
                rest[k] = v
            elif k.startswith("neck."):
                rest["backbone." + k[len("neck."):]] = v
            elif k.startswith("head."):
                rest[k] = v
        missing, unexpected = self.retinanet.load_state_dict(rest, strict=False)
        missing = [k for k in missing if not k.startswith("backbone.backbone.")]
        if missing or unexpected:
            what = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}"
            raise FormatError(f"{where}: {what}")


def _input_size(backbone):
    cfg = getattr(backbone, "source_config", {}) or {}
    size = (cfg.get("model_args") or {}).get("img_size") or cfg.get("pretrained_cfg", {}).get("input_size", [0, 224, 224])[1:]
    return (size, size) if isinstance(size, int) else tuple(size)


def load_detector(path, dtype=torch.float32):
    """A detection directory (`scalenet init --arch retinanet`, or one `save_detector` wrote),
    in eval mode; `scalenet_torch.load` comes here for such a directory."""
    import re

    from .io import _config, _load_timm, _tensors

    path = Path(path)
    cfg = _config(path)
    sd = _tensors(path)
    stage_norm = re.compile(r"^backbone\.norm\d+\.")
    inner = {k[len("backbone."):]: v for k, v in sd.items()
             if k.startswith("backbone.") and not stage_norm.match(k)}
    backbone = _load_timm(path, cfg["backbone"], inner)
    backbone.source_config = cfg["backbone"]
    det = Detector(backbone, cfg)
    det.load_det_state_dict(sd, path / "model.safetensors")
    return det.to(dtype).eval()


def save_detector(det, path):
    """Writes `det` as scalenet's detection directory (config.json, model.safetensors), each
    file to a temporary name first."""
    from .io import write_dir

    write_dir(path, det.source_config, det.det_state_dict())
