//! The grown Llama: the base's decoder layers stored once (`model.layers.{j}`), positions with
//! their own adapters, gates and norms (`scalenet.layers.{i}`), the same `"scalenet"` block in
//! `config.json` as a grown ViT.

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use super::options::new_tensors;
use super::plan::{identity_gates, GrowthSpec};
use super::position::{
    fixed_position_values, new_positions, position_key, run_positions, GrownCounts, Position,
    POSITIONS,
};
use crate::model::llama::block::{DecoderLayer, KvCache, RmsNorm};
use crate::model::llama::config::LlamaConfig;
use crate::model::llama::{decode, layer_key, Llama, LlamaEnds, Logits};
use crate::model::weights::{Init, TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct GrownLlama {
    pub ends: LlamaEnds,
    /// The L base layers, each stored once.
    pub layers: Vec<DecoderLayer>,
    pub positions: Vec<Position<RmsNorm>>,
    pub layer_map: Vec<usize>,
    /// The base architecture (`num_hidden_layers` = base depth).
    #[module(skip)]
    pub config: LlamaConfig,
    #[module(skip)]
    pub spec: GrowthSpec,
    #[module(skip)]
    inv_freq: Vec<f32>,
}

impl GrownLlama {
    /// Builds the model from `src` (a grown checkpoint); `spec` must be valid for `cfg`.
    pub fn new(
        cfg: &LlamaConfig,
        spec: &GrowthSpec,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Self {
        let base = Llama::new(cfg, src, device);
        let positions = new_positions(src, POSITIONS, spec, cfg.hidden_size, &base.layers, device);
        Self::assemble(base, spec, positions)
    }

    /// Grows `base` as `spec` says: its tensors move in unchanged; adapter down-projections
    /// are drawn from `seed`, norms and gates start as `fixed_position_values` says.
    pub fn grow(base: Llama, spec: &GrowthSpec, seed: u64) -> Self {
        let device = base.ends.embed_tokens.val().device();
        let d = base.config.hidden_size;
        let fixed = fixed_position_values(
            &base.layers,
            POSITIONS,
            spec,
            d,
            &identity_gates(&spec.layer_map),
        );
        let mut src = new_tensors(fixed, seed);
        let positions = new_positions(&mut src, POSITIONS, spec, d, &base.layers, &device);
        Self::assemble(base, spec, positions)
    }

    fn assemble(base: Llama, spec: &GrowthSpec, positions: Vec<Position<RmsNorm>>) -> Self {
        Self {
            ends: base.ends,
            layers: base.layers,
            positions,
            layer_map: spec.layer_map.clone(),
            inv_freq: base.inv_freq,
            config: base.config,
            spec: spec.clone(),
        }
    }

    // The same thin forwards as `Llama`'s; the forward itself is `llama::decode`.
    /// `[batch, tokens]` ids → `[batch, tokens, vocab]` logits, through every position.
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
            self.positions.len(),
            logits,
            |x, ctxs| {
                run_positions(
                    &self.layers,
                    &self.positions,
                    &self.layer_map,
                    x,
                    ctxs,
                    &mut None,
                )
            },
        )
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.positions.len())
    }

    pub fn export(&self) -> TensorSink {
        let mut out = TensorSink::default();
        self.ends.export(&mut out);
        for (j, l) in self.layers.iter().enumerate() {
            l.export(&layer_key(j), &mut out);
        }
        for (i, p) in self.positions.iter().enumerate() {
            p.export(&position_key(i), &mut out);
        }
        out
    }

    pub fn param_counts(&self) -> GrownCounts {
        let layer = self.layers.first().map_or(0, DecoderLayer::num_params);
        let head = self.ends.lm_head.as_ref().map_or(0, |h| h.num_params());
        GrownCounts {
            embeddings: self.ends.num_params() - self.ends.norm.num_params() - head,
            shared_blocks: self.layers.iter().map(DecoderLayer::num_params).sum(),
            adapters: self.positions.iter().map(|p| p.adapter_params()).sum(),
            position_norms: self.positions.iter().map(|p| p.norm_params()).sum(),
            gates: self.positions.iter().map(|p| p.gate_params()).sum(),
            norm: self.ends.norm.num_params(),
            head,
            unshared_blocks: layer * self.positions.len(),
        }
    }

    /// A plain Llama of depth L' whose layers are independent copies (the stacking baseline,
    /// and with identity gates LLaMA-Pro's start): per-position norms replace the copy's, and
    /// a position's gates scale the rows of its copy's `o_proj` and `down_proj` (transformers
    /// has no gates). Adapters are left out, which is exact while their up-projections are
    /// zero, as after `expand`.
    pub fn unshared(&self, device: &Device) -> Llama {
        let tensors: HashMap<String, Vec<f32>> = self.export().into_map();
        let mut config = self.config.clone();
        config.num_hidden_layers = self.layer_map.len();
        let map = &self.layer_map;
        let mut src = |key: &str, _shape: &[usize], _: Init| -> Vec<f32> {
            let Some((i, tail)) = key
                .strip_prefix("model.layers.")
                .and_then(|r| r.split_once('.'))
            else {
                return tensors[key].clone();
            };
            let i: usize = i.parse().expect("layer keys are numbered");
            let own = position_key(i);
            let base = &tensors[&format!("{}.{tail}", layer_key(map[i]))];
            let norm = match tail {
                "input_layernorm.weight" => Some("norm1.weight"),
                "post_attention_layernorm.weight" => Some("norm2.weight"),
                _ => None,
            };
            if let Some(own_norm) = norm.and_then(|n| tensors.get(&format!("{own}.{n}"))) {
                return own_norm.clone();
            }
            let gate = match tail {
                "self_attn.o_proj.weight" => tensors.get(&format!("{own}.ls1.gamma")),
                "mlp.down_proj.weight" => tensors.get(&format!("{own}.ls2.gamma")),
                _ => None,
            };
            match gate {
                // torch layout [d_out, d_in]: output row r is scaled by gamma[r].
                Some(g) => {
                    let cols = base.len() / g.len();
                    base.iter()
                        .enumerate()
                        .map(|(k, w)| w * g[k / cols])
                        .collect()
                }
                None => base.clone(),
            }
        };
        Llama::new(&config, &mut src, device)
    }
}
