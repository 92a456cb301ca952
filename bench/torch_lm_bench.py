"""Times the same configuration as `scalenet bench MODEL_DIR --seq-len T` on a language model,
in PyTorch + transformers: training steps (causal-LM loss + backward + AdamW) and a forward
over whole sequences in tokens/s, and generation one token at a time with the KV cache
(batch 1, after a prompt of T/2 tokens); prints JSON with scalenet's field names.

    python bench/torch_lm_bench.py MODEL_DIR --batch-size 4 --seq-len 256 [--precision bf16]
    python bench/torch_lm_bench.py MODEL_DIR --device cuda   # on a GPU (memory: the GPU's)

On a GPU, `*_gpu_used_mib` is the device memory in use as the driver counts it (context and
caching allocator included), as `scalenet bench` reports it.
"""
import argparse
import json
import resource
import statistics
import time

import torch
from transformers import DynamicCache, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
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
    model = LlamaForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.float32,
                                             attn_implementation="sdpa").to(dev)
    vocab = model.config.vocab_size
    ids = lambda b, t: ((torch.arange(b * t, device=dev) * 7919 + 13) % vocab).reshape(b, t)
    x = ids(a.batch_size, a.seq_len)
    tokens = a.batch_size * a.seq_len
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")
    gpu_used = {"infer": 0.0, "train": 0.0}

    def sample_gpu(phase):
        if cuda:
            free, total = torch.cuda.mem_get_info()
            gpu_used[phase] = max(gpu_used[phase], (total - free) / 2**20)

    def timed(items, step, phase):
        rates = []
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            sample_gpu(phase)
            if i >= a.warmup:
                rates.append(items / (time.perf_counter() - t))
        return statistics.median(rates)

    model.eval()
    with torch.no_grad(), autocast:
        infer = timed(tokens, lambda: model(x, use_cache=False).logits[0, 0, 0].item(), "infer")
        cache = DynamicCache()
        out = model(ids(1, max(a.seq_len // 2, 1)), past_key_values=cache, use_cache=True)
        one = ids(1, 1)
        decode = timed(1, lambda: model(one, past_key_values=out.past_key_values,
                                        use_cache=True).logits[0, 0, 0].item(), "infer")
    infer_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast:
            loss = model(x, labels=x, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    train = timed(tokens, step, "train")
    print(json.dumps({
        "batch_size": a.batch_size, "seq_len": a.seq_len, "steps": a.steps,
        "train_tokens_per_s": train, "infer_tokens_per_s": infer, "decode_tokens_per_s": decode,
        "infer_peak_rss_mib": infer_peak,
        "train_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **({"infer_gpu_used_mib": gpu_used["infer"], "train_gpu_used_mib": gpu_used["train"]}
           if cuda else {}),
        "device": (torch.cuda.get_device_name() if cuda
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "precision": a.precision, "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
