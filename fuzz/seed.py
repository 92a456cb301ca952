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
print("seeds under", corpus)
