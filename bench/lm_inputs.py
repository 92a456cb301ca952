"""Language-model inputs for a machine that has PyTorch but not the model: bench/gpu_check.sh
uses them to time a real model's shapes and to train a small model there.

    python3 bench/lm_inputs.py random-model CONFIG_JSON OUT_DIR [--seed S]
        a transformers directory with CONFIG_JSON's shapes and random weights (normal, std
        `initializer_range` or 0.02; norms at 1), f32, written without the safetensors package
    python3 bench/lm_inputs.py char-tokenizer MODEL_DIR
        a character-level tokenizer.json (printable ASCII, one id each, then <unk>) for a model
        of at least 96 tokens, such as the fixtures under tests/fixtures/llama
"""
import argparse
import ctypes
import json
import pathlib
import struct

LAYER = {
    "self_attn.q_proj.weight": lambda c: (c["num_attention_heads"] * c["head_dim"], c["hidden_size"]),
    "self_attn.k_proj.weight": lambda c: (c["num_key_value_heads"] * c["head_dim"], c["hidden_size"]),
    "self_attn.v_proj.weight": lambda c: (c["num_key_value_heads"] * c["head_dim"], c["hidden_size"]),
    "self_attn.o_proj.weight": lambda c: (c["hidden_size"], c["num_attention_heads"] * c["head_dim"]),
    "mlp.gate_proj.weight": lambda c: (c["intermediate_size"], c["hidden_size"]),
    "mlp.up_proj.weight": lambda c: (c["intermediate_size"], c["hidden_size"]),
    "mlp.down_proj.weight": lambda c: (c["hidden_size"], c["intermediate_size"]),
    "input_layernorm.weight": lambda c: (c["hidden_size"],),
    "post_attention_layernorm.weight": lambda c: (c["hidden_size"],),
}


def random_model(config_path, out, seed):
    import torch

    cfg = json.loads(pathlib.Path(config_path).read_text())
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    std = cfg.get("initializer_range", 0.02)
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], cfg["hidden_size"]),
              "model.norm.weight": (cfg["hidden_size"],)}
    for i in range(cfg["num_hidden_layers"]):
        shapes.update({f"model.layers.{i}.{k}": f(cfg) for k, f in LAYER.items()})
    if not cfg.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (cfg["vocab_size"], cfg["hidden_size"])
    gen = torch.Generator().manual_seed(seed)
    header, blobs, offset = {}, [], 0
    for name, shape in sorted(shapes.items()):
        t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * std
        t = t.contiguous()
        blob = ctypes.string_at(t.data_ptr(), t.numel() * 4)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for blob in blobs:
            f.write(blob)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    print(f"{out}: {sum(len(b) for b in blobs) // 4:,} random parameters")


def char_tokenizer(model_dir):
    vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
    vocab["<unk>"] = len(vocab)
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
           "normalizer": None,
           "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated",
                             "invert": False},
           "post_processor": None, "decoder": {"type": "Fuse"},
           "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}
    (pathlib.Path(model_dir) / "tokenizer.json").write_text(json.dumps(tok))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("random-model")
    r.add_argument("config")
    r.add_argument("out")
    r.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("char-tokenizer")
    c.add_argument("model_dir")
    a = ap.parse_args()
    if a.cmd == "random-model":
        random_model(a.config, a.out, a.seed)
    else:
        char_tokenizer(a.model_dir)


if __name__ == "__main__":
    main()
