"""Segmentors in PyTorch: the directories scalenet writes load here and give scalenet's logits,
and the package writes directories scalenet reads."""
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import scalenet_torch
from scalenet_torch.seg import Segmentor, save_segmentor

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SEGMENTORS = sorted((FIXTURES / "seg" / "models").iterdir())


def binary():
    import os

    b = os.environ.get("SCALENET_BIN") or ROOT / "target" / "release" / "scalenet"
    if not Path(b).is_file():
        pytest.skip("no scalenet binary (set SCALENET_BIN or build target/release)")
    return str(b)


def max_err(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("d", SEGMENTORS, ids=lambda d: d.name)
def test_segmentor_fixtures_load_and_give_their_logits(d):
    seg = scalenet_torch.load(d)
    assert isinstance(seg, Segmentor)
    io = load_file(d / "io.safetensors")
    with torch.no_grad():
        logits, aux = seg.forward_aux(io["input"])
    assert max_err(logits, io["logits"]) < 1e-5
    if "aux_logits" in io:
        assert max_err(aux, io["aux_logits"]) < 1e-5


@pytest.mark.parametrize("backbone,size", [("grown/irregular_full", 48), ("timm/rgb_token_p8", 24),
                                           ("swin/rect_four_stages", None),
                                           ("grown_swin/interleave_full", None)])
def test_scalenet_init_upernet_loads_in_pytorch_with_scalenets_logits(backbone, size, tmp_path):
    out = tmp_path / "seg"
    cmd = [binary(), "init", "--arch", "upernet", "--backbone", str(FIXTURES / backbone),
           "--num-classes", "4", "--out", str(out)]
    if size:
        cmd += ["--img-size", str(size)]
    subprocess.run(cmd, check=True, capture_output=True)
    seg = scalenet_torch.load(out)
    cfg = seg.source_config["backbone"]
    c = load_file(FIXTURES / backbone / "io.safetensors")["input"].shape[1]
    hw = cfg["model_args"]["img_size"]
    hw = [hw, hw] if isinstance(hw, int) else hw
    x = torch.randn(2, c, *hw, generator=torch.Generator().manual_seed(1))
    save_file({"input": x}, tmp_path / "in.safetensors")
    subprocess.run([binary(), "forward", str(out), "--input", str(tmp_path / "in.safetensors"),
                    "--output", str(tmp_path / "out.safetensors")], check=True, capture_output=True)
    ours = load_file(tmp_path / "out.safetensors")
    with torch.no_grad():
        logits, aux = seg.forward_aux(x)
    assert max_err(logits, ours["logits"]) < 1e-4
    assert max_err(aux, ours["aux_logits"]) < 1e-4


def test_save_segmentor_then_load_is_the_same_model(tmp_path):
    d = FIXTURES / "seg" / "models" / "grown_vit_upernet"
    seg = scalenet_torch.load(d)
    save_segmentor(seg, tmp_path / "again")
    again = scalenet_torch.load(tmp_path / "again")
    x = load_file(d / "io.safetensors")["input"]
    with torch.no_grad():
        assert max_err(seg(x), again(x)) == 0
