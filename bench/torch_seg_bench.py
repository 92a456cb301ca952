"""Times the same configuration as `scalenet bench SEG_DIR` on a segmentation model, in
PyTorch with the package's reference segmentor (python/scalenet_torch/seg.py: mmsegmentation's
UPerHead/FCNHead on a timm or grown backbone, loaded from the same directory): inference in
eval mode, and training steps in train mode (BatchNorm on the batch, dropout) with
mmsegmentation's loss on fixed random labels (auxiliary head at its weight), backward and
AdamW; prints JSON with scalenet's field names.

    python bench/torch_seg_bench.py SEG_DIR --batch-size 8 [--precision bf16] [--device cuda]
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from scalenet_torch.seg import load_segmentor  # noqa: E402
from torch_timing import args, peak_mib, report, timed  # noqa: E402


def main():
    a = args(__doc__)
    dev = a.dev
    seg = load_segmentor(a.model_dir).to(dev)
    cfg = json.loads((Path(a.model_dir) / "config.json").read_text())
    c, h, w = cfg["backbone"]["pretrained_cfg"]["input_size"]
    x = torch.randn(a.batch_size, c, h, w, device=dev)
    k = cfg["num_classes"]
    aux_weight = (cfg.get("auxiliary_head") or {}).get("loss_weight", 0.4)
    labels = torch.randint(0, k, (a.batch_size, h, w), generator=torch.Generator().manual_seed(0)).to(dev)
    autocast = a.autocast()

    seg.eval()
    with torch.no_grad(), autocast:
        infer = timed(a, lambda: seg(x))
    infer_peak = peak_mib(a)

    def ce(logits):
        logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, labels, ignore_index=255)

    seg.train()
    opt = torch.optim.AdamW(seg.parameters(), lr=1e-4, weight_decay=0.01)

    def train_step():
        with autocast:
            logits, aux = seg.forward_aux(x)
        loss = ce(logits) + (aux_weight * ce(aux) if aux is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train = timed(a, train_step)
    report(a, train, infer, infer_peak)


if __name__ == "__main__":
    main()
