"""Times the same configuration as `scalenet bench SEG_DIR` on a segmentation model, in
PyTorch with the package's reference segmentor (python/scalenet_torch/seg.py: mmsegmentation's
UPerHead/FCNHead on a timm or grown backbone, loaded from the same directory): inference in
eval mode, and training steps in train mode (BatchNorm on the batch, dropout) with
mmsegmentation's loss on fixed random labels (auxiliary head at its weight), backward and
AdamW; prints JSON with scalenet's field names.

    python bench/torch_seg_bench.py SEG_DIR --batch-size 8 [--precision bf16] [--device cuda]
"""
import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from scalenet_torch.seg import load_segmentor  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="bf16: torch.autocast(device, bfloat16), PyTorch's mixed precision")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    seg = load_segmentor(a.model_dir).to(dev)
    cfg = json.loads((Path(a.model_dir) / "config.json").read_text())
    c, h, w = cfg["backbone"]["pretrained_cfg"]["input_size"]
    x = torch.randn(a.batch_size, c, h, w, device=dev)
    k = cfg["num_classes"]
    aux_weight = (cfg.get("auxiliary_head") or {}).get("loss_weight", 0.4)
    labels = torch.randint(0, k, (a.batch_size, h, w), generator=torch.Generator().manual_seed(0)).to(dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def peak_mib():
        if cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def timed(step):
        rates = []
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            step()
            sync()
            if i >= a.warmup:
                rates.append(a.batch_size / (time.perf_counter() - t))
        return statistics.median(rates)

    seg.eval()
    with torch.no_grad(), autocast:
        infer = timed(lambda: seg(x))
    infer_peak = peak_mib()

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

    train = timed(train_step)
    print(json.dumps({
        "batch_size": a.batch_size, "steps": a.steps,
        "train_img_per_s": train, "infer_img_per_s": infer,
        "infer_peak_rss_mib": infer_peak, "train_peak_rss_mib": peak_mib(),
        "device": f"torch {torch.__version__} "
                  + (torch.cuda.get_device_name() if cuda else f"cpu threads={torch.get_num_threads()}")
                  + (" bf16 autocast" if a.precision == "bf16" else ""),
    }, indent=2))


if __name__ == "__main__":
    main()
