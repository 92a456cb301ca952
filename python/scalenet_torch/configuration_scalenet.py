"""The config of a grown Llama: transformers' `LlamaConfig` of the *base* (num_hidden_layers = L)
plus the `scalenet` block (layer_map, adapter, unshared_norms, layer_scale, lora).

Self-contained (transformers only): `scalenet export --torch` copies it into a directory that
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads.
"""
from transformers import LlamaConfig


class ScaleNetLlamaConfig(LlamaConfig):
    # The base's type: scalenet and this package read the directory as a grown Llama.
    model_type = "llama"

    def __init__(self, scalenet=None, **kwargs):
        self.scalenet = scalenet
        super().__init__(**kwargs)
