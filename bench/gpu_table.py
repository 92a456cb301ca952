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
