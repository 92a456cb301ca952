"""What the PyTorch side of `bench/compare.sh` shares: the command line, the timer (median
images/s over timed steps after warm-ups), peak memory, and the JSON in scalenet's names."""
import argparse
import json
import resource
import statistics
import time

import torch


def args(doc):
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("model_dir")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="bf16: torch.autocast(device, bfloat16), PyTorch's mixed precision")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.dev = torch.device(a.device)
    a.cuda = a.dev.type == "cuda"
    a.autocast = lambda: torch.autocast(a.dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")
    return a


def peak_mib(a):
    if a.cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(a, step):
    rates = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        step()
        if a.cuda:
            torch.cuda.synchronize()
        if i >= a.warmup:
            rates.append(a.batch_size / (time.perf_counter() - t))
    return statistics.median(rates)


def report(a, train, infer, infer_peak):
    print(json.dumps({
        "batch_size": a.batch_size, "steps": a.steps,
        "train_img_per_s": train, "infer_img_per_s": infer,
        "infer_peak_rss_mib": infer_peak, "train_peak_rss_mib": peak_mib(a),
        "device": f"torch {torch.__version__} "
                  + (torch.cuda.get_device_name() if a.cuda else f"cpu threads={torch.get_num_threads()}")
                  + (" bf16 autocast" if a.precision == "bf16" else ""),
    }, indent=2))
