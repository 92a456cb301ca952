"""Reading and writing scalenet's directories: timm hub directories (ViT, Swin; plain or grown)
and transformers directories (Llama; plain or grown), in the same format as the Rust code.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .scalenet_parts import FORMAT_VERSION, FormatError, check_spec, load_positions, strict_load

HERE = Path(__file__).parent
# What a grown Llama's directory carries so that transformers loads it without this package.
REMOTE_CODE = ["configuration_scalenet.py", "modeling_scalenet.py", "scalenet_parts.py"]
AUTO_MAP = {"AutoConfig": "configuration_scalenet.ScaleNetLlamaConfig",
            "AutoModelForCausalLM": "modeling_scalenet.ScaleNetLlamaForCausalLM"}


def _config(path: Path) -> dict:
    f = path / "config.json"
    try:
        return json.loads(f.read_text())
    except FileNotFoundError:
        raise FormatError(f"{f}: not found (is {path} a model directory?)") from None
    except json.JSONDecodeError as e:
        raise FormatError(f"{f}: not JSON ({e})") from None


def _tensors(path: Path) -> dict:
    f = path / "model.safetensors"
    try:
        return load_file(f)
    except FileNotFoundError:
        raise FormatError(f"{f}: not found") from None
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise FormatError(f"{f}: not a safetensors file ({e})") from None


def load(path, dtype=torch.float32):
    """The model in a scalenet (or timm, or transformers) directory, in eval mode: a grown ViT
    (`ScaleNetViT`), Swin (`ScaleNetSwin`) or Llama (`ScaleNetLlamaForCausalLM`), or the plain
    timm / transformers model. Each base tensor is one parameter, however many positions use
    it. Raises FormatError naming the file and the tensor when the directory does not fit."""
    path = Path(path)
    cfg = _config(path)
    if isinstance(cfg.get("backbone"), dict) and cfg.get("architecture") == "retinanet":
        from .detect import load_detector

        return load_detector(path, dtype)
    if isinstance(cfg.get("backbone"), dict):
        from .seg import load_segmentor

        return load_segmentor(path, dtype)
    if "model_type" in cfg:
        model = _load_llama(path, cfg)
    elif "architecture" in cfg:
        model = _load_timm(path, cfg)
    else:
        raise FormatError(f"{path / 'config.json'}: neither a timm config (architecture) nor a "
                          "transformers one (model_type)")
    model.source_config = cfg
    return model.to(dtype).eval()


def _load_timm(path: Path, cfg: dict, sd=None):
    """`sd`: the model's tensors when they are not `path`'s own (a segmentor's backbone)."""
    import timm

    args = cfg.get("model_args", {})
    base = timm.create_model(cfg["architecture"], pretrained=False, **args)
    sd = _tensors(path) if sd is None else sd
    where = str(path / "model.safetensors")
    strict_load(base, {k: v for k, v in sd.items() if not k.startswith("scalenet.")}, where)
    spec = cfg.get("scalenet")
    if spec is None:
        return base
    if "layer_maps" in spec:
        from .swin import ScaleNetSwin

        check_spec(spec, str(path / "config.json"), [len(l.blocks) for l in base.layers])
        model = ScaleNetSwin(base, spec, args.get("window_size", 7))
        prefix = [(s, i) for s, st in enumerate(model.stages) for i in range(len(st))]
        positions = [model.stages[s][i] for s, i in prefix]
        load_positions(positions, sd, lambda n: "scalenet.stages.{}.layers.{}.".format(*prefix[n]), where)
    else:
        from .vit import ScaleNetViT

        check_spec(spec, str(path / "config.json"), [len(base.blocks)])
        model = ScaleNetViT(base, spec)
        load_positions(model.layers, sd, lambda i: f"scalenet.layers.{i}.", where)
    extra = [k for k in sd if k.startswith("scalenet.") and k not in model.grown_state_dict()]
    if extra:
        raise FormatError(f"{where}: unexpected tensor {extra[0]}")
    return model


def _load_llama(path: Path, cfg: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.get("model_type") != "llama":
        raise FormatError(f"{path / 'config.json'}: model_type {cfg.get('model_type')!r} is not llama")
    spec = cfg.get("scalenet")
    fields = {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures")}
    if spec is None:
        config = LlamaConfig(**fields)
        model = LlamaForCausalLM(config)
    else:
        from .configuration_scalenet import ScaleNetLlamaConfig
        from .modeling_scalenet import ScaleNetLlamaForCausalLM

        check_spec(spec, str(path / "config.json"), [cfg["num_hidden_layers"]])
        config = ScaleNetLlamaConfig(**fields)
        model = ScaleNetLlamaForCausalLM(config)
    sd = _tensors(path)
    if config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
        strict_load(_Without(model, "lm_head.weight"), sd, str(path / "model.safetensors"))
        model.tie_weights()
    else:
        strict_load(model, sd, str(path / "model.safetensors"))
    return model


class _Without:
    """`module` seen without one state-dict entry (a tied head, which is not stored)."""

    def __init__(self, module, key):
        self.module, self.key = module, key

    def state_dict(self):
        return {k: v for k, v in self.module.state_dict().items() if k != self.key}

    def load_state_dict(self, sd, strict=True):
        missing, unexpected = self.module.load_state_dict(sd, strict=False)
        assert not unexpected and set(missing) <= {self.key}, (missing, unexpected)


def save(model, path, model_args=None):
    """Writes `model` as scalenet's directory at `path` (config.json, model.safetensors; for a
    grown Llama also the remote code and `auto_map`, so that transformers loads it with
    `trust_remote_code=True`). Each file is written under a temporary name and then renamed:
    a failure leaves what was there before. `model_args` (a timm model's, when it did not come
    from `load`) are recorded as timm records them."""
    cfg, tensors, extra = _to_save(model, model_args)
    write_dir(path, cfg, tensors, extra)


def write_dir(path, cfg, tensors, extra=()):
    """config.json, model.safetensors and the package's files `extra` into `path`, each
    written under a temporary name and then renamed (config.json last)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path, prefix=".tmp-save-") as tmp:
        tmp = Path(tmp)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for name in extra:
            shutil.copyfile(HERE / name, tmp / name)
        for f in ["model.safetensors", *extra, "config.json"]:
            os.replace(tmp / f, path / f)


def _to_save(model, model_args):
    from .vit import ScaleNetViT
    from .swin import ScaleNetSwin

    src = getattr(model, "source_config", None)
    if hasattr(model, "config") and getattr(model.config, "model_type", None) == "llama":
        # What save_pretrained writes: the fields that differ from the defaults.
        cfg = {"model_type": "llama", **model.config.to_diff_dict()}
        cfg.pop("_name_or_path", None)
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        if getattr(model.config, "scalenet", None) is None:
            cfg.pop("scalenet", None)
            cfg["architectures"] = ["LlamaForCausalLM"]
            return cfg, sd, []
        cfg["architectures"] = ["ScaleNetLlamaForCausalLM"]
        cfg["auto_map"] = AUTO_MAP
        return cfg, sd, REMOTE_CODE
    grown = isinstance(model, (ScaleNetViT, ScaleNetSwin))
    base = model.base if grown else model
    if src is not None:
        cfg = dict(src)
    else:
        # timm's own config writer: what `timm.create_model` and scalenet read back.
        from timm.models._hub import save_config_for_hf

        with tempfile.TemporaryDirectory() as t:
            save_config_for_hf(base, os.path.join(t, "config.json"), model_args=model_args)
            cfg = json.loads(Path(t, "config.json").read_text())
    if grown:
        spec = {"format_version": FORMAT_VERSION}
        if isinstance(model, ScaleNetViT):
            spec.update(base_depth=len(base.blocks), layer_map=model.layer_map)
        else:
            spec.update(base_depths=[len(l.blocks) for l in base.layers], layer_maps=model.maps)
        spec.update({k: model.spec[k] for k in ("adapter", "unshared_norms", "layer_scale")})
        if model.spec.get("lora"):
            spec["lora"] = model.spec["lora"]
        cfg["scalenet"] = spec
        sd = model.grown_state_dict()
    else:
        cfg.pop("scalenet", None)
        sd = {k: v.contiguous() for k, v in base.state_dict().items()}
    return cfg, sd, []
