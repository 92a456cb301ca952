//! The grown ViT: timm's embeddings and head around L shared blocks run at L' positions.

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::options::{new_tensors, plan, ExpandOptions};
use super::plan::{identity_gates, GrowthSpec};
use super::position::{
    fixed_position_values, new_positions, position_key, GrownCounts, Position, POSITIONS,
};
use crate::error::Result;
use crate::model::drop_path::DropPath;
use crate::model::layers::LayerNorm;
use crate::model::vit::block::Block;
use crate::model::vit::config::VitConfig;
use crate::model::vit::embed::Embeddings;
use crate::model::vit::head::ClassifierHead;
use crate::model::vit::{self, VisionTransformer};
use crate::model::weights::{Init, TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct GrownVit {
    pub embed: Embeddings,
    /// The L base blocks, each stored once (`blocks.{j}` in checkpoints).
    pub blocks: Vec<Block>,
    /// One per position (`scalenet.layers.{i}` in checkpoints).
    pub positions: Vec<Position<LayerNorm>>,
    pub head: ClassifierHead,
    pub layer_map: Vec<usize>,
    /// The base architecture (depth = base depth).
    #[module(skip)]
    pub config: VitConfig,
    #[module(skip)]
    pub spec: GrowthSpec,
}

impl GrownVit {
    /// Builds the model from `src` (a grown checkpoint, or an init). `spec` must be valid.
    pub fn new(
        cfg: &VitConfig,
        spec: &GrowthSpec,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Self {
        let embed = Embeddings::new(src, cfg, device);
        let blocks: Vec<Block> = (0..cfg.depth)
            .map(|j| Block::new(src, &format!("blocks.{j}"), cfg, device))
            .collect();
        let positions = new_positions(src, POSITIONS, spec, cfg.embed_dim, &blocks, device);
        let head = ClassifierHead::new(src, cfg, device);
        Self {
            embed,
            blocks,
            positions,
            head,
            layer_map: spec.layer_map.clone(),
            config: cfg.clone(),
            spec: spec.clone(),
        }
    }

    /// Grows `base` as `opts` say: its tensors move in unchanged; norms and gates start as
    /// [`fixed_position_values`] says, adapters are drawn from `opts.seed`.
    pub fn grow(base: VisionTransformer, opts: &ExpandOptions) -> Result<Self> {
        let cfg = &base.config;
        let spec = plan(opts, cfg.depth, cfg.embed_dim)?;
        let gates = identity_gates(&spec.layer_map);
        let fixed = fixed_position_values(&base.blocks, POSITIONS, &spec, cfg.embed_dim, &gates);
        let device = base.embed.pos_embed.val().device();
        Ok(Self::from_base(
            base,
            &spec,
            &mut new_tensors(fixed, opts.seed),
            &device,
        ))
    }

    /// Grows a base model: its tensors move in unchanged; positions come from `src`.
    pub fn from_base(
        base: VisionTransformer,
        spec: &GrowthSpec,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Self {
        let dim = base.config.embed_dim;
        let positions = new_positions(src, POSITIONS, spec, dim, &base.blocks, device);
        Self {
            embed: base.embed,
            blocks: base.blocks,
            positions,
            head: base.head,
            layer_map: spec.layer_map.clone(),
            config: base.config,
            spec: spec.clone(),
        }
    }

    // The same thin forwards as `VisionTransformer`'s, so callers need no trait in scope; the
    // forward itself is written once, in `vit::features` and `vit::logits`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<3> {
        self.forward_features_train(x, &mut None)
    }

    /// `forward_features` with stochastic depth (by position) when `dp` is given.
    pub fn forward_features_train(
        &self,
        x: Tensor<4>,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        vit::features(
            &self.embed,
            self.positions.len(),
            x,
            dp,
            &|i, x, keep, dp| self.run_position(i, x, keep, dp),
        )
    }

    /// The outputs of positions `indices` as `[batch, dim, grid_h, grid_w]` (a grown model's
    /// positions count as blocks).
    pub fn forward_intermediates(
        &self,
        x: Tensor<4>,
        indices: &[usize],
        dp: &mut Option<&mut DropPath>,
    ) -> Vec<Tensor<4>> {
        vit::intermediates(&self.embed, indices, x, dp, &|i, x, keep, dp| {
            self.run_position(i, x, keep, dp)
        })
    }

    /// `[batch, chans, h, w]` → `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_train(x, &mut None)
    }

    /// [`forward`](Self::forward) with stochastic depth (by position) when `dp` is given.
    pub fn forward_train(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> Tensor<2> {
        let depth = self.positions.len();
        vit::logits(&self.embed, &self.head, depth, x, dp, &|i, x, keep, dp| {
            self.run_position(i, x, keep, dp)
        })
    }

    fn run_position(
        &self,
        i: usize,
        x: Tensor<3>,
        keep: Option<usize>,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        let block = &self.blocks[self.layer_map[i]];
        self.positions[i].forward_rows(block, x, (), keep, i, dp)
    }

    pub fn export(&self) -> TensorSink {
        let mut out = TensorSink::default();
        self.embed.export(&mut out);
        for (j, block) in self.blocks.iter().enumerate() {
            block.export(&format!("blocks.{j}"), &mut out);
        }
        self.head.export(&mut out);
        for (i, p) in self.positions.iter().enumerate() {
            p.export(&position_key(i), &mut out);
        }
        out
    }

    /// A plain timm model of depth L' whose blocks are independent copies of the base blocks
    /// (the stacking baseline). Per-position norms replace the copy's norms; gates become the
    /// copy's LayerScale (times the base's, if any). Adapters have no timm equivalent and are
    /// left out, which is exact while their up-projections are zero, as after `expand`.
    pub fn unshared(&self, device: &Device) -> VisionTransformer {
        let tensors: HashMap<String, Vec<f32>> = self.export().into_map();
        let has_gates = self.spec.layer_scale || self.config.init_values.is_some();
        let mut config = self.config.clone();
        config.depth = self.layer_map.len();
        if has_gates && config.init_values.is_none() {
            config.init_values = Some(1.0);
        }
        let map = &self.layer_map;
        let mut src = |key: &str, shape: &[usize], _: Init| -> Vec<f32> {
            let Some((i, tail)) = key.strip_prefix("blocks.").and_then(|r| r.split_once('.'))
            else {
                return tensors[key].clone();
            };
            let i: usize = i.parse().expect("block keys are numbered");
            let own = tensors.get(&format!("{}.{tail}", position_key(i)));
            let base = tensors.get(&format!("blocks.{}.{tail}", map[i]));
            if tail.ends_with("gamma") {
                let ones = vec![1.0; shape.iter().product()];
                let (b, o) = (base.unwrap_or(&ones), own.unwrap_or(&ones));
                return b.iter().zip(o).map(|(x, y)| x * y).collect();
            }
            own.or(base)
                .expect("every block tensor exists in the base")
                .clone()
        };
        VisionTransformer::new(&config, &mut src, device)
    }

    /// Parameter counts by group.
    pub fn param_counts(&self) -> GrownCounts {
        let block = self.blocks.first().map_or(0, Block::num_params);
        GrownCounts {
            embeddings: self.embed.num_params(),
            shared_blocks: self.blocks.iter().map(Block::num_params).sum(),
            adapters: self.positions.iter().map(|p| p.adapter_params()).sum(),
            position_norms: self.positions.iter().map(|p| p.norm_params()).sum(),
            gates: self.positions.iter().map(|p| p.gate_params()).sum(),
            norm: self.head.norm_params(),
            head: self.head.head_params(),
            unshared_blocks: block * self.positions.len(),
        }
    }
}
