"""scalenet's models in PyTorch: read and write scalenet's directories (grown ViT, Swin and
Llama, every growth option), train them with PyTorch's tools (DDP, FSDP, accelerate, Trainer),
and bring them back to scalenet with no conversion.

    import scalenet_torch
    model = scalenet_torch.load("grown_dir")     # an nn.Module; shared blocks are shared
    ...                                          # train it as any PyTorch model
    scalenet_torch.save(model, "trained_dir")    # scalenet info/eval/train read it
"""
from .io import load, save
from .scalenet_parts import FORMAT_VERSION, FormatError

__all__ = ["load", "save", "FormatError", "FORMAT_VERSION"]
__version__ = "0.1.0"
