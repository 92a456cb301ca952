"""Times the same configuration as `scalenet bench` in PyTorch + timm: training steps
(forward + backward + AdamW) and inference on random data, after warm-up; prints JSON with the
median img/s and peak RSS, in the same fields as scalenet.

    python bench/torch_bench.py --arch deit_tiny_patch16_224 --batch-size 16
    python bench/torch_bench.py --arch vit_tiny_patch16_224 --model-arg img_size=28 \
        --model-arg patch_size=4 --model-arg in_chans=1 --batch-size 128 [--precision bf16]
    python bench/torch_bench.py ... --device cuda      # on a GPU (peak memory: the GPU's)
    python bench/torch_bench.py ... --device cuda --compile   # torch.compile'd model

On a GPU, `*_gpu_used_mib` is the device memory in use as the driver counts it (context and
caching allocator included), sampled after every step: the number `scalenet bench` reports.
"""
import argparse
import json
import resource
import statistics
import time

import timm
import torch


def parse_value(v):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--model-arg", action="append", default=[])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="bf16: torch.autocast(device, bfloat16), PyTorch's mixed precision")
    ap.add_argument("--bf16", action="store_true", help="same as --precision bf16")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model first")
    a = ap.parse_args()
    a.bf16 = a.bf16 or a.precision == "bf16"
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    gpu_used = {"infer": 0.0, "train": 0.0}

    def sample_gpu(phase):
        if cuda:
            free, total = torch.cuda.mem_get_info()
            gpu_used[phase] = max(gpu_used[phase], (total - free) / 2**20)

    def peak_mib():
        if cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if a.threads:
        torch.set_num_threads(a.threads)
    kwargs = {k: parse_value(v) for k, v in (s.split("=", 1) for s in a.model_arg)}
    model = timm.create_model(a.arch, pretrained=False, **kwargs).to(dev)
    c, num_classes = model.pretrained_cfg, model.num_classes
    params = list(model.parameters())
    if a.compile:
        model = torch.compile(model)
    chans = kwargs.get("in_chans", 3)
    size = kwargs.get("img_size", c["input_size"][1])
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(a.batch_size, chans, h, w, device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16)

    model.eval()
    infer = []
    with torch.no_grad(), autocast:
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            model(x)
            sync()
            sample_gpu("infer")
            if i >= a.warmup:
                infer.append(a.batch_size / (time.perf_counter() - t))
    infer_peak = peak_mib()

    model.train()
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    target = torch.softmax(torch.rand(a.batch_size, num_classes, device=dev), dim=1)
    train = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        with autocast:
            logits = model(x)
        loss = torch.sum(-target * torch.log_softmax(logits.float(), dim=1), dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        sample_gpu("train")
        if i >= a.warmup:
            train.append(a.batch_size / (time.perf_counter() - t))
    print(json.dumps({
        "batch_size": a.batch_size, "steps": a.steps,
        "train_img_per_s": statistics.median(train), "infer_img_per_s": statistics.median(infer),
        "infer_peak_rss_mib": infer_peak,
        "train_peak_rss_mib": peak_mib(),
        **({"infer_gpu_used_mib": gpu_used["infer"], "train_gpu_used_mib": gpu_used["train"],
            "train_peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20} if cuda else {}),
        "device": (f"torch {torch.__version__} "
                   + (torch.cuda.get_device_name() if cuda else f"cpu threads={torch.get_num_threads()}")
                   + (" bf16 autocast" if a.bf16 else "") + (" compiled" if a.compile else "")),
    }, indent=2))


if __name__ == "__main__":
    main()
