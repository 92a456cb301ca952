"""Times the same configuration as `scalenet bench DET_DIR` on a detection model, in PyTorch
with torchvision's RetinaNet as the package builds it (python/scalenet_torch/detect.py, loaded
from the same directory): inference is the eval-mode forward with torchvision's
post-processing; a training step is the train-mode forward with its loss on the same fixed
targets as scalenet's (three boxes an image), backward and AdamW; prints JSON with scalenet's
field names. The input is already at the model's size, so torchvision's transform only
normalises.

    python bench/torch_det_bench.py DET_DIR --batch-size 8 [--precision bf16] [--device cuda]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from scalenet_torch.detect import load_detector  # noqa: E402
from torch_timing import args, peak_mib, report, timed  # noqa: E402


def targets(cfg, n, h, w, dev):
    """scalenet's `bench::run_det` targets."""
    out = []
    for i in range(n):
        boxes = []
        for j in range(3):
            f = (i + j) / (n + 3)
            boxes.append([f * w * 0.5, f * h * 0.4, w * (0.5 + 0.4 * f), h * (0.6 + 0.3 * f)])
        labels = [(i + j) % cfg["num_classes"] for j in range(3)]
        out.append({"boxes": torch.tensor(boxes, device=dev), "labels": torch.tensor(labels, device=dev)})
    return out


def main():
    a = args(__doc__)
    det = load_detector(a.model_dir).to(a.dev)
    cfg = det.source_config
    c, h, w = cfg["backbone"]["pretrained_cfg"]["input_size"]
    images = list(torch.rand(a.batch_size, c, h, w, device=a.dev))
    rn = det.retinanet
    rn.eval()
    with torch.no_grad(), a.autocast():
        infer = timed(a, lambda: rn(images))
    infer_peak = peak_mib(a)

    rn.train()
    tgts = targets(cfg, a.batch_size, h, w, a.dev)
    opt = torch.optim.AdamW(det.parameters(), lr=1e-4, weight_decay=0.01)

    def train_step():
        with a.autocast():
            losses = rn(images, tgts)
        loss = losses["classification"] + losses["bbox_regression"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    report(a, timed(a, train_step), infer, infer_peak)


if __name__ == "__main__":
    main()
