"""Writes the fuzz targets' seed corpora under fuzz/corpus/ from the repository's own files
(the committed fixtures and the built-in Fashion-MNIST subset) plus a few made here.

    python3 fuzz/seed.py        # needs Pillow for the image seeds (pip install pillow)
"""
import glob
import gzip
import io
import os
import struct

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
corpus = os.path.join(root, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


fixtures = os.path.join(root, "tests", "fixtures")
for i, p in enumerate(sorted(glob.glob(f"{fixtures}/*/*/model.safetensors"))):
    put("safetensors", f"model{i}", open(p, "rb").read())
for i, p in enumerate(sorted(glob.glob(f"{fixtures}/*/*/config.json"))):
    put("config", f"config{i}", open(p, "rb").read())

# IDX: a 4-byte little-endian length of the image file, the image file, the label file.
subset = os.path.join(root, "data", "fashion-mnist-subset")
images = gzip.decompress(open(f"{subset}/t10k-images-idx3-ubyte.gz", "rb").read())
labels = gzip.decompress(open(f"{subset}/t10k-labels-idx1-ubyte.gz", "rb").read())
for n in (1, 3):
    img = struct.pack(">IIII", 0x803, n, 28, 28) + images[16:16 + n * 784]
    lab = struct.pack(">II", 0x801, n) + labels[8:8 + n]
    put("idx", f"raw{n}", struct.pack("<I", len(img)) + img + lab)
    gz_img, gz_lab = gzip.compress(img), gzip.compress(lab)
    put("idx", f"gz{n}", struct.pack("<I", len(gz_img)) + gz_img + gz_lab)

# CIFAR: a first byte picking the record layout, then records.
rec = bytes([3]) + bytes(range(256)) * 12
put("cifar", "cifar10", b"\x00" + rec * 2)
put("cifar", "cifar100", b"\x01" + (b"\x01" + rec) * 2)

try:
    from PIL import Image

    im = Image.new("RGB", (5, 3), (200, 30, 90))
    for fmt, kw in [("PNG", {}), ("JPEG", {"quality": 80})]:
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        put("image", fmt.lower(), b.getvalue())
    b = io.BytesIO()
    Image.new("L", (4, 4), 128).save(b, "PNG")
    put("image", "grey.png", b.getvalue())
except ImportError:
    print("no Pillow: image seeds skipped")
# GGUF: a one-layer llama with a 64-token byte-level vocabulary, tensors in F32, F16, Q8_0,
# Q4_0 and Q4_1 (block contents arbitrary), as llama.cpp lays a version 3 file out.
import json


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def byte_chars():
    out, n = [], 0
    for b in range(256):
        if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255:
            out.append(chr(b))
        else:
            n += 1
            out.append(chr(255 + n))
    return out


vocab = byte_chars()[:63]
vocab.append(vocab[1] + vocab[2])  # the one merge's result
meta = [("general.architecture", 8, "llama"), ("llama.block_count", 4, 1),
        ("llama.embedding_length", 4, 32), ("llama.feed_forward_length", 4, 32),
        ("llama.attention.head_count", 4, 2), ("llama.attention.head_count_kv", 4, 1),
        ("llama.rope.freq_base", 6, 10000.0), ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5),
        ("tokenizer.ggml.model", 8, "gpt2"), ("tokenizer.ggml.pre", 8, "smollm"),
        ("tokenizer.ggml.tokens", 9, vocab), ("tokenizer.ggml.merges", 9, [vocab[1] + " " + vocab[2]]),
        ("tokenizer.ggml.eos_token_id", 4, 0)]
kv = b""
for k, t, v in meta:
    kv += gstr(k) + struct.pack("<I", t)
    if t == 4:
        kv += struct.pack("<I", v)
    elif t == 6:
        kv += struct.pack("<f", v)
    elif t == 8:
        kv += gstr(v)
    else:
        kv += struct.pack("<IQ", 8, len(v)) + b"".join(gstr(x) for x in v)
# (name, dims fastest first, type, bytes per 32 elements)
tensors = [("token_embd.weight", (32, 64), 1), ("output_norm.weight", (32,), 0),
           ("blk.0.attn_norm.weight", (32,), 0), ("blk.0.attn_q.weight", (32, 32), 2),
           ("blk.0.attn_k.weight", (32, 16), 3), ("blk.0.attn_v.weight", (32, 16), 8),
           ("blk.0.attn_output.weight", (32, 32), 30), ("blk.0.ffn_norm.weight", (32,), 0),
           ("blk.0.ffn_gate.weight", (32, 32), 8), ("blk.0.ffn_up.weight", (32, 32), 2),
           ("blk.0.ffn_down.weight", (32, 32), 1)]
size = {0: 128, 1: 64, 30: 64, 2: 18, 3: 20, 8: 34}
infos, data = b"", b""
for name, dims, t in tensors:
    n = 1
    for d in dims:
        n *= d
    data += b"\0" * (-len(data) % 32)
    infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    infos += struct.pack("<IQ", t, len(data))
    blob = bytes((i * 37 + 11) % 251 for i in range(n // 32 * size[t]))
    if t in (0, 1, 30):  # small finite floats
        blob = struct.pack(f"<{n}f", *[((i % 13) - 6) / 8 for i in range(n)]) if t == 0 else \
            b"".join(struct.pack("<H", 0x3c00 if t == 1 else 0x3f80) for _ in range(n))
    data += blob
head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + kv + infos
head += b"\0" * (-len(head) % 32)
put("gguf", "tiny_llama.gguf", head + data)

# tokenizer.json: byte-level BPE as the GGUF reader builds it, and a WordLevel one.
bpe = {"version": "1.0", "truncation": None, "padding": None,
       "added_tokens": [{"id": 0, "content": vocab[0], "single_word": False, "lstrip": False,
                         "rstrip": False, "normalized": False, "special": True}],
       "normalizer": None,
       "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
           {"type": "Digits", "individual_digits": True},
           {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
       "post_processor": None,
       "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
       "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                 "ignore_merges": False, "vocab": {t: i for i, t in enumerate(vocab)},
                 "merges": [vocab[1] + " " + vocab[2]]}}
put("tokenizer", "bpe.json", json.dumps(bpe).encode())
put("tokenizer", "wordlevel.json", json.dumps({
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
    "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
    "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "the": 1, "fox": 2}, "unk_token": "[UNK]"}}).encode())
print("seeds under", corpus)
