"""The package against scalenet's committed fixtures, round trips, bad input, and (where the
`scalenet` binary is built: target/release or $SCALENET_BIN) the way back into scalenet.

    pytest python/
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import scalenet_torch
from scalenet_torch import FormatError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
GROWN = sorted(p for kind in ("grown", "grown_swin", "grown_llama") for p in (FIXTURES / kind).iterdir()
               if p.is_dir())


def binary():
    b = os.environ.get("SCALENET_BIN") or ROOT / "target" / "release" / "scalenet"
    return Path(b) if Path(b).exists() else None


def logits(model, io):
    with torch.no_grad():
        if "input_ids" in io:
            return model(io["input_ids"]).logits
        return model(io["input"])


@pytest.mark.parametrize("d", GROWN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_grown_fixtures_give_scalenets_logits(d):
    io = load_file(d / "io.safetensors")
    model = scalenet_torch.load(d)
    assert (logits(model, io) - io["logits"]).abs().max() < 1e-4


@pytest.mark.parametrize("d", GROWN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shared_blocks_are_single_parameters(d):
    model = scalenet_torch.load(d)
    stored = load_file(d / "model.safetensors")
    # One parameter per stored tensor (a tied head is stored once, as the embedding).
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in stored.values())


def test_shared_gradient_is_the_sum_over_positions():
    model = scalenet_torch.load(FIXTURES / "grown" / "shared_only_distilled")
    io = load_file(FIXTURES / "grown" / "shared_only_distilled" / "io.safetensors")
    w = model.base.blocks[0].mlp.fc1.weight
    model(io["input"]).sum().backward()
    total = w.grad.clone()
    # Each position's share: the same forward with the other positions' copy detached.
    shares = []
    for keep in [i for i, j in enumerate(model.layer_map) if j == 0]:
        model.zero_grad()
        saved = model.layers
        handles = []
        for i, (pos, j) in enumerate(zip(model.layers, model.layer_map)):
            if j == 0 and i != keep:
                handles.append(pos.register_forward_pre_hook(
                    lambda m, args: (_detached_block(args[0]), *args[1:])))
        model(io["input"]).sum().backward()
        for h in handles:
            h.remove()
        shares.append(w.grad.clone())
        model.layers = saved
    assert torch.allclose(total, sum(shares), atol=1e-5)


def _detached_block(blk):
    import copy
    c = copy.deepcopy(blk)
    for p in c.parameters():
        p.requires_grad_(False)
    return c


@pytest.mark.parametrize("d", GROWN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_save_then_load_is_the_same_model(d, tmp_path):
    io = load_file(d / "io.safetensors")
    model = scalenet_torch.load(d)
    scalenet_torch.save(model, tmp_path / "out")
    again = scalenet_torch.load(tmp_path / "out")
    assert torch.equal(logits(model, io), logits(again, io))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp")]


def copy_fixture(name, tmp_path):
    dst = tmp_path / name.replace("/", "_")
    shutil.copytree(FIXTURES / name, dst)
    return dst


def test_a_newer_format_is_one_clear_error(tmp_path):
    d = copy_fixture("grown/irregular_full", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["scalenet"]["format_version"] = 2
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match=r"config.json: scalenet.format_version 2"):
        scalenet_torch.load(d)


@pytest.mark.parametrize("edit,message", [
    (lambda sd: sd.pop("scalenet.layers.3.attn_adapter.up.weight"), "scalenet.layers.3.attn_adapter.up.weight is missing"),
    (lambda sd: sd.update({"scalenet.layers.9.ls1.gamma": torch.ones(32)}), "unexpected tensor scalenet.layers.9.ls1.gamma"),
    (lambda sd: sd.update({"blocks.0.mlp.fc1.weight": torch.ones(3, 3)}), "blocks.0.mlp.fc1.weight has shape"),
])
def test_bad_tensors_are_one_clear_error(tmp_path, edit, message):
    d = copy_fixture("grown/irregular_full", tmp_path)
    sd = load_file(d / "model.safetensors")
    edit(sd)
    save_file(sd, d / "model.safetensors")
    with pytest.raises(FormatError, match=message):
        scalenet_torch.load(d)


def test_a_truncated_weights_file_is_one_clear_error(tmp_path):
    d = copy_fixture("grown_llama/gqa_lora", tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="model.safetensors"):
        scalenet_torch.load(d)


@pytest.mark.skipif(binary() is None, reason="the scalenet binary is not built")
def test_export_loads_in_transformers_with_its_remote_code(tmp_path):
    from transformers import AutoModelForCausalLM

    d = FIXTURES / "grown_llama" / "gqa_tied_full"
    subprocess.run([binary(), "export", "--torch", d, "--out", tmp_path / "x"], check=True,
                   capture_output=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "x", trust_remote_code=True,
                                                 dtype=torch.float32)
    io = load_file(d / "io.safetensors")
    assert (logits(model.eval(), io) - io["logits"]).abs().max() < 1e-4
    # generate with the cache continues as the full forward does, token by token.
    ids = io["input_ids"][:1, :5]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                         min_new_tokens=6, do_sample=False)
    seq = ids
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(seq, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    assert out.tolist() == seq.tolist()


@pytest.mark.skipif(binary() is None, reason="the scalenet binary is not built")
@pytest.mark.parametrize("name", ["grown/lora_relaxed", "grown_swin/interleave_full"])
def test_trained_in_pytorch_loads_back_in_scalenet(name, tmp_path):
    d = FIXTURES / name
    io = load_file(d / "io.safetensors")
    model = scalenet_torch.load(d).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(io["input"]).logsumexp(-1).mean().backward()
    opt.step()
    model.eval()
    scalenet_torch.save(model, tmp_path / "trained")
    subprocess.run([binary(), "forward", tmp_path / "trained", "--input", d / "io.safetensors",
                    "--output", tmp_path / "out.safetensors"], check=True, capture_output=True,
                   env={**os.environ, "SCALENET_BLAS": "none"})
    theirs = load_file(tmp_path / "out.safetensors")["logits"]
    assert (logits(model, io) - theirs).abs().max() < 1e-4


@pytest.mark.skipif(binary() is None, reason="the scalenet binary is not built")
def test_transformers_generate_continues_as_scalenet_generate(tmp_path):
    """A new grown Llama with a tokenizer, exported: transformers' greedy `generate` gives the
    text `scalenet generate` prints."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    b = str(binary())
    env = {**os.environ, "SCALENET_BLAS": "none", "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([b, *map(str, a)], check=True, capture_output=True, text=True, env=env)
    words = "in the beginning god created the heaven and the earth and the earth was without form".split()
    (tmp_path / "t.txt").write_text(" ".join(words[(i * 7) % len(words)] for i in range(4000)))
    run("tokenizer", "train", "--data", f"text:{tmp_path / 't.txt'}", "--vocab-size", "300",
        "--out", tmp_path / "base" / "tokenizer.json")
    run("init", "--arch", "llama", "--out", tmp_path / "base", "--force", "--seed", "3",
        *[x for kv in ["vocab_size=300", "hidden_size=32", "intermediate_size=64",
                       "num_hidden_layers=2", "num_attention_heads=4", "num_key_value_heads=2"]
          for x in ("--model-arg", kv)])
    # A few epochs, so that greedy decoding continues in words (a random model's byte tokens
    # decode differently streamed and whole).
    run("train", tmp_path / "base", "--data", f"text:{tmp_path / 't.txt'}", "--seq-len", "16",
        "--batch-size", "8", "--epochs", "4", "--lr", "3e-3", "--val-split", "0", "--precision",
        "f32", "--out", tmp_path / "run")
    run("expand", tmp_path / "run" / "model", "--depth", "4", "--init", "identity", "--out",
        tmp_path / "grown")
    run("export", "--torch", tmp_path / "grown", "--out", tmp_path / "hf")
    prompt = "in the beginning"
    ours = run("generate", tmp_path / "grown", "--prompt", prompt, "--max-new-tokens", "12").stdout
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True,
                                                 dtype=torch.float32)
    tok = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    ids = torch.tensor([tok.encode(prompt).ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                         min_new_tokens=12, do_sample=False)
    theirs = prompt + tok.decode(out[0, ids.shape[1]:].tolist())
    assert ours.rstrip("\n") == theirs
