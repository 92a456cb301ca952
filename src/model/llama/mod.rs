//! The Llama decoder (`LlamaForCausalLM`), in Hugging Face's structure and key names:
//! RMSNorm, rotary embeddings in the rotate-half layout, grouped-query attention, a SwiGLU MLP,
//! tied or untied embeddings, a causal mask, and a KV cache for generation.
//!
//! A decoder layer is a pre-norm two-branch residual block, as a ViT block is:
//! `x = x + attn(input_layernorm(x))`, then `x = x + mlp(post_attention_layernorm(x))`.

pub mod block;
pub mod config;

use burn::module::{Module, Param};
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor};

pub use block::{AttnContext, DecoderLayer, KvCache, LlamaAttention, RmsNorm, Rotary, SwiGlu};
pub use config::{LlamaConfig, RopeScaling};

use crate::model::layers::Linear;
use crate::model::weights::{param, Init, TensorSink, WeightSource};
use block::causal_mask;
/// Token embeddings, the final norm and the LM head: everything but the layer stack.
#[derive(Module, Debug)]
pub struct LlamaEnds {
    /// `[vocab, dim]` (`model.embed_tokens.weight`).
    pub embed_tokens: Param<Tensor<2>>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to the embeddings.
    pub lm_head: Option<Linear>,
}

impl LlamaEnds {
    pub fn new(src: &mut dyn WeightSource, cfg: &LlamaConfig, device: &Device) -> Self {
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let embed = src.tensor("model.embed_tokens.weight", &[v, d], Init::Normal(0.02));
        Self {
            embed_tokens: param(embed, [v, d], device),
            norm: RmsNorm::new(src, "model.norm", cfg, device),
            lm_head: (!cfg.tie_word_embeddings).then(|| {
                Linear::new(
                    src,
                    "lm_head",
                    d,
                    v,
                    false,
                    (Init::Normal(0.02), Init::ZEROS),
                    device,
                )
            }),
        }
    }

    /// `[batch, tokens]` ids → `[batch, tokens, dim]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        embedding(self.embed_tokens.val(), ids)
    }

    /// `[batch, tokens, dim]` hidden states → `[batch, tokens, vocab]` logits.
    pub fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.norm.forward(x);
        match &self.lm_head {
            Some(head) => head.forward(x),
            // Tied: the same parameter as the embeddings, so both uses add to one gradient.
            None => crate::ops::linear(x, self.embed_tokens.val().transpose(), None),
        }
    }

    pub fn export(&self, out: &mut TensorSink) {
        out.push("model.embed_tokens.weight", self.embed_tokens.val());
        self.norm.export("model.norm", out);
        if let Some(h) = &self.lm_head {
            h.export("lm_head", out);
        }
    }

    pub fn num_params(&self) -> usize {
        let [v, d] = self.embed_tokens.dims();
        v * d + self.norm.num_params() + self.lm_head.as_ref().map_or(0, Linear::num_params)
    }
}

/// A plain Llama model.
#[derive(Module, Debug)]
pub struct Llama {
    pub ends: LlamaEnds,
    pub layers: Vec<DecoderLayer>,
    #[module(skip)]
    pub config: LlamaConfig,
    #[module(skip)]
    pub inv_freq: Vec<f32>,
}

/// The frame of every decoder forward, plain or grown: embed, run `stack` with one attention
/// context per block position (rotary tables, and that position's cache slot), then the final
/// norm and the head.
pub fn decode<F>(
    ends: &LlamaEnds,
    inv_freq: &[f32],
    ids: Tensor<2, Int>,
    mut cache: Option<&mut KvCache>,
    positions: usize,
    logits: Logits,
    stack: F,
) -> Tensor<3>
where
    F: for<'a> FnOnce(Tensor<3>, Vec<AttnContext<'a>>) -> Tensor<3>,
{
    let t = ids.dims()[1];
    let start = cache.as_ref().map_or(0, |c| c.len);
    let rotary = Rotary::new(inv_freq, start, t, &ids.device());
    // Flex's fused attention masks by position; other backends add this mask to the scores.
    let mask = (t > 1 && ids.device() != Device::flex())
        .then(|| causal_mask(start, t, start + t, &ids.device()));
    let mask = mask.as_ref();
    let x = ends.embed(ids);
    let ctxs: Vec<AttnContext<'_>> = match cache.as_mut() {
        Some(c) => {
            assert_eq!(c.slots.len(), positions, "a cache made for this model");
            c.slots
                .iter_mut()
                .map(|slot| AttnContext {
                    rotary: &rotary,
                    mask,
                    cache: Some(slot),
                })
                .collect()
        }
        None => (0..positions)
            .map(|_| AttnContext {
                rotary: &rotary,
                mask,
                cache: None,
            })
            .collect(),
    };
    let x = stack(x, ctxs);
    if let Some(c) = cache {
        c.len += t;
    }
    let x = match logits {
        Logits::All => x,
        Logits::Last => {
            let [b, _, d] = x.dims();
            x.slice([0..b, t - 1..t, 0..d])
        }
    };
    ends.logits(x)
}

/// Which tokens' logits a forward returns. Generation reads the last token's only: the vocabulary
/// projection of every prompt token would be a fifth of a small model's prefill (SmolLM2-135M:
/// 49,152 × 576 per token) and a `[tokens, vocab]` tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    All,
    Last,
}

/// Key prefix of decoder layer `i`.
pub fn layer_key(i: usize) -> String {
    format!("model.layers.{i}")
}

impl Llama {
    /// Builds the model from `src` (a checkpoint or an init); `cfg` must be valid.
    pub fn new(cfg: &LlamaConfig, src: &mut dyn WeightSource, device: &Device) -> Self {
        let ends = LlamaEnds::new(src, cfg, device);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(src, &layer_key(i), cfg, device))
            .collect();
        Self {
            ends,
            layers,
            config: cfg.clone(),
            inv_freq: cfg.inv_freq(),
        }
    }

    /// `[batch, tokens]` ids → `[batch, tokens, vocab]` logits. With a cache, the tokens
    /// continue those already in it, and their keys and values are added to it.
    pub fn forward(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.forward_logits(ids, cache, Logits::All)
    }

    /// [`forward`](Self::forward) with the logits of every token or of the last only.
    pub fn forward_logits(
        &self,
        ids: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
        logits: Logits,
    ) -> Tensor<3> {
        decode(
            &self.ends,
            &self.inv_freq,
            ids,
            cache,
            self.layers.len(),
            logits,
            |x, ctxs| {
                self.layers
                    .iter()
                    .zip(ctxs)
                    .fold(x, |x, (layer, ctx)| layer.forward(x, ctx))
            },
        )
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    pub fn export(&self) -> TensorSink {
        let mut out = TensorSink::default();
        self.ends.export(&mut out);
        for (i, l) in self.layers.iter().enumerate() {
            l.export(&layer_key(i), &mut out);
        }
        out
    }

    pub fn num_params(&self) -> usize {
        self.ends.num_params()
            + self
                .layers
                .iter()
                .map(DecoderLayer::num_params)
                .sum::<usize>()
    }
}
