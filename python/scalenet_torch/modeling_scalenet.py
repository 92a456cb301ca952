"""A grown Llama as a transformers model: `LlamaForCausalLM` of the base depth whose decoder
layers run along `layer_map`, each position with its own adapters, norms, gates or LoRA. The
state dict is scalenet's format as it is: the base under transformers' names, each base tensor
once, and position i's tensors under `scalenet.layers.{i}.…`; `generate` works, with one cache
slot per position.

Position i runs base decoder layer j = layer_map[i]:
    n1 = norm1(x); a = SelfAttn_j(n1) [+ attn_adapter_i(n1)]; [a = ls1_i * a]; x = x + a
    n2 = norm2(x); f = Mlp_j(n2)      [+ mlp_adapter_i(n2)];  [f = ls2_i * f]; x = x + f
with the position's LoRA on the seven projections when the spec has "lora".

Self-contained but for `scalenet_parts.py` beside it (`scalenet export --torch` copies both).
"""
import torch
from torch import nn
from transformers import LlamaForCausalLM
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from .configuration_scalenet import ScaleNetLlamaConfig
from .scalenet_parts import Gate, Lora, adapters, maybe_relaxed

LORA_TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


class LlamaPosition(nn.Module):
    def __init__(self, dim: int, eps: float, spec: dict, layer=None):
        super().__init__()
        self.attn_adapter, self.mlp_adapter = adapters(dim, spec)
        norm = lambda: LlamaRMSNorm(dim, eps=eps)
        self.norm1 = norm() if spec["unshared_norms"] else None
        self.norm2 = norm() if spec["unshared_norms"] else None
        self.ls1 = Gate(dim) if spec["layer_scale"] else None
        self.ls2 = Gate(dim) if spec["layer_scale"] else None
        l = spec.get("lora")
        self.lora = Lora(layer, LORA_TARGETS, l["rank"], l["scale"]) if l else None

    def forward(self, layer, x, position_embeddings, mask, cache=None, slot=None):
        with maybe_relaxed(self.lora, layer) as layer:
            attn = layer.self_attn
            # The shared attention writes the cache slot of this position, not of its block.
            saved, attn.layer_idx = attn.layer_idx, slot if slot is not None else attn.layer_idx
            try:
                n1 = (self.norm1 or layer.input_layernorm)(x)
                a, _ = attn(hidden_states=n1, position_embeddings=position_embeddings,
                            attention_mask=mask, cache=cache)
            finally:
                attn.layer_idx = saved
            if self.attn_adapter is not None:
                a = a + self.attn_adapter(n1)
            if self.ls1 is not None:
                a = self.ls1(a)
            x = x + a
            n2 = (self.norm2 or layer.post_attention_layernorm)(x)
            f = layer.mlp(n2)
            if self.mlp_adapter is not None:
                f = f + self.mlp_adapter(n2)
            if self.ls2 is not None:
                f = self.ls2(f)
            return x + f


class ScaleNetPositions(nn.Module):
    def __init__(self, config, spec: dict, layers):
        super().__init__()
        self.layers = nn.ModuleList(
            LlamaPosition(config.hidden_size, config.rms_norm_eps, spec, layers[j])
            for j in spec["layer_map"])


class ScaleNetLlamaForCausalLM(LlamaForCausalLM):
    config_class = ScaleNetLlamaConfig

    def __init__(self, config):
        super().__init__(config)
        spec = config.scalenet
        self.layer_map = list(spec["layer_map"])
        self.scalenet = ScaleNetPositions(config, spec, self.model.layers)
        self.post_init()

    def decode(self, x, position_ids, attention_mask=None, cache=None):
        """Hidden states through the positions (no final norm)."""
        m = self.model
        if cache is not None:
            # A cache made for the base's depth gets one slot per position.
            while len(cache.layers) < len(self.layer_map):
                cache.layers.append(DynamicLayer())
        mask = create_causal_mask(config=self.config, inputs_embeds=x, attention_mask=attention_mask,
                                  cache=cache, position_ids=position_ids)
        pe = m.rotary_emb(x, position_ids=position_ids)
        for i, (p, j) in enumerate(zip(self.scalenet.layers, self.layer_map)):
            x = p(m.layers[j], x, pe, mask, cache, slot=i)
        return x

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0,
                past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        x = inputs_embeds if inputs_embeds is not None else self.model.embed_tokens(input_ids)
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(x.shape[1], device=x.device) + past).unsqueeze(0)
        h = self.model.norm(self.decode(x, position_ids, attention_mask, cache))
        logits = self.lm_head(slice_logits_to_keep(h, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size,
                                      **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)


# `save_pretrained` then writes `auto_map` and copies these files (and their relative imports)
# beside the weights, so that the saved directory loads with `trust_remote_code=True` too.
ScaleNetLlamaConfig.register_for_auto_class()
ScaleNetLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")
