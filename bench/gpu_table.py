"""Turns the JSON that bench/gpu_check.sh wrote into the markdown table of docs/PERFORMANCE.md.

    python3 bench/gpu_table.py gpu-out
"""
import json
import pathlib
import sys


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def jsonl(path):
    try:
        return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    except (OSError, ValueError):
        return []


def lm_section(d):
    """The small language model on the CPU and the GPU, and SmolLM2-135M's shapes timed."""
    cpu, gpu = jsonl(d / "lm-train-flex.jsonl"), jsonl(d / "lm-train-cuda.jsonl")
    if cpu or gpu:
        print("| epoch | train loss: flex / cuda | val perplexity: flex / cuda |")
        print("|---|---|---|")
        for a, b in zip(cpu, gpu):
            print(f"| {a['epoch']} | {a['train_loss']:.6f} / {b['train_loss']:.6f} "
                  f"| {a['val_perplexity']:.5f} / {b['val_perplexity']:.5f} |")
        if cpu and gpu:
            worst = max(abs(a[k] - b[k]) for a, b in zip(cpu, gpu) for k in ("train_loss", "val_loss"))
            print(f"\nlargest loss difference, flex vs cuda: {worst:.2e} over {min(len(cpu), len(gpu))} epoch(s)")
        for tag in ("flex", "cuda"):
            out = d / f"lm-generate-{tag}.out"
            if out.exists():
                print(f"generate on {tag}: {out.read_text().strip()!r}")
        print()
    rows = [(p, load(d / f"ours-lm-{p}.out"), load(d / f"eager-lm-{p}.out")) for p in ("f32", "bf16")]
    if any(o or e for _, o, e in rows):
        print("| SmolLM2-135M shapes | precision | train tokens/s: scalenet / eager | ratio "
              "| forward tokens/s | ratio | decode tokens/s | ratio | GPU MiB, training |")
        print("|---|---|---|---|---|---|---|---|---|")
        fmt = lambda r, k: f"{r[k]:.0f}" if r and r.get(k) is not None else "–"
        for p, ours, eager in rows:
            ratio = lambda k: f"{ours[k] / eager[k]:.2f}×" if ours and eager else "–"
            shape = ours or eager
            cells = " | ".join(f"{fmt(ours, k)} / {fmt(eager, k)} | {ratio(k)}" for k in
                               ("train_tokens_per_s", "infer_tokens_per_s", "decode_tokens_per_s"))
            print(f"| b{shape['batch_size']} × {shape['seq_len']} | {p} | {cells} "
                  f"| {fmt(ours, 'train_gpu_used_mib')} / {fmt(eager, 'train_gpu_used_mib')} |")
        print()


def main():
    d = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-out")
    env = (d / "env.txt").read_text().strip() if (d / "env.txt").exists() else "?"
    print("```\n" + env + "\n```\n")
    sc = load(d / "selfcheck.json")
    if sc:
        checks = sc["checks"]
        bad = [c for c in checks if not c["max_err"] <= c["tolerance"]]
        worst = max((c for c in checks if c["group"] == "fixtures"), key=lambda c: c["max_err"], default=None)
        print(f"selfcheck on {sc['device']}: {len(checks) - len(bad)} passed, {len(bad)} failed"
              + (f"; largest fixture error {worst['max_err']:.1e} ({worst['name']})" if worst else ""))
        for c in bad:
            print(f"  FAIL {c['group']} {c['name']}: {c['max_err']:.3g} > {c['tolerance']:.0e}")
        print()
    lm_section(d)
    print("| model, batch | precision | train img/s: scalenet / eager / compile | scalenet ÷ eager "
          "| inference img/s: scalenet / eager / compile | scalenet ÷ eager "
          "| GPU MiB in use, training: scalenet / eager / compile |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda r, k: f"{r[k]:.0f}" if r and r.get(k) is not None else "–"
    for arch in ["deit_tiny", "deit_small", "deit_base"]:
        for p in ["f32", "bf16"]:
            ours, eager, comp = (load(d / f"{w}-{arch}-{p}.out") for w in ["ours", "eager", "compile"])
            if not (ours or eager):
                continue
            ratio = lambda k: f"{ours[k] / eager[k]:.2f}×" if ours and eager else "–"
            batch = (ours or eager)["batch_size"]
            print(f"| {arch.replace('_', '-')} 224, b{batch} | {p} "
                  f"| {fmt(ours, 'train_img_per_s')} / {fmt(eager, 'train_img_per_s')} / {fmt(comp, 'train_img_per_s')} "
                  f"| {ratio('train_img_per_s')} "
                  f"| {fmt(ours, 'infer_img_per_s')} / {fmt(eager, 'infer_img_per_s')} / {fmt(comp, 'infer_img_per_s')} "
                  f"| {ratio('infer_img_per_s')} "
                  f"| {fmt(ours, 'train_gpu_used_mib')} / {fmt(eager, 'train_gpu_used_mib')} / {fmt(comp, 'train_gpu_used_mib')} |")
    print()
    for p in ["f32", "bf16"]:
        path = d / f"train-{p}.jsonl"
        if path.exists():
            rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
            if rows:
                last = rows[-1]
                keys = {k: last[k] for k in last if any(s in k for s in ("top1", "loss", "img_per_s", "epoch"))}
                print(f"train {p}: " + json.dumps(keys))
    steps = d / "steps.txt"
    if steps.exists():
        print("\nsteps:\n" + steps.read_text())


if __name__ == "__main__":
    main()
