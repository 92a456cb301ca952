"""Detectors in PyTorch: the detection directories scalenet reads load here as torchvision's
RetinaNet and give the fixtures' outputs, and the package writes directories that load back."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import scalenet_torch
from scalenet_torch.detect import Detector, save_detector

ROOT = Path(__file__).resolve().parents[2]
DETECTORS = sorted((ROOT / "tests" / "fixtures" / "det" / "models").iterdir())


@pytest.mark.parametrize("d", DETECTORS, ids=lambda d: d.name)
def test_detector_fixtures_load_and_give_their_outputs(d):
    det = scalenet_torch.load(d)
    assert isinstance(det, Detector)
    io = load_file(d / "io.safetensors")
    with torch.no_grad():
        head = det.retinanet.head(det.features(io["input"]))
    assert (head["cls_logits"] - io["cls_logits"]).abs().max() < 1e-5
    assert (head["bbox_regression"] - io["bbox_regression"]).abs().max() < 1e-5


def test_save_detector_then_load_is_the_same_model(tmp_path):
    d = DETECTORS[0]
    det = scalenet_torch.load(d)
    save_detector(det, tmp_path)
    again = scalenet_torch.load(tmp_path)
    x = load_file(d / "io.safetensors")["input"]
    with torch.no_grad():
        a = det.retinanet.head(det.features(x))["cls_logits"]
        b = again.retinanet.head(again.features(x))["cls_logits"]
    assert torch.equal(a, b)
    assert sorted(load_file(tmp_path / "model.safetensors")) == sorted(load_file(d / "model.safetensors"))
