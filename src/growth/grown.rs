//! The grown model: L base blocks stored once, L' positions that each run base block
//! `layer_map[i]` plus their own adjustment parameters.
//!
//! Position i with j = layer_map[i]:
//! ```text
//! n1 = norm1(x);  a = Attn_j(n1) [+ attn_adapter_i(n1)];  [a = ls1_i ⊙ a];  x = x + a
//! n2 = norm2(x);  f = Mlp_j(n2)  [+ mlp_adapter_i(n2)];   [f = ls2_i ⊙ f];  x = x + f
//! ```
//! `norm1`/`norm2` are the base block's unless the position owns them (`unshared_norms`).
//! When the base itself has LayerScale, `Attn_j` and `Mlp_j` include the base's `ls1`/`ls2`.
//!
//! Sharing is real: `blocks` holds each base block once and positions only hold an index, so
//! each shared tensor is one parameter (one optimizer entry) whose gradient sums over positions.
//! [`Position`] and [`run_positions`] work for any [`PreNormBlock`]; [`GrownVit`] is the ViT
//! assembled around them (the grown Llama is in `growth::llama`).

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::adapter::Adapter;
use super::block::{BlockNorm, PreNormBlock};
use super::plan::{GrowthSpec, Placement};
use crate::config::VitConfig;
use crate::model::block::{gate, prefix, Block};
use crate::model::drop_path::{self, DropPath};
use crate::model::embed::Embeddings;
use crate::model::head::ClassifierHead;
use crate::model::layers::{LayerNorm, LayerScale};
use crate::model::{Init, TensorSink, VisionTransformer, WeightSource};

/// The parameters that belong to one position alone.
#[derive(Module, Debug)]
pub struct Position<N: BlockNorm> {
    pub attn_adapter: Option<Adapter>,
    pub mlp_adapter: Option<Adapter>,
    pub norm1: Option<N>,
    pub norm2: Option<N>,
    pub ls1: Option<LayerScale>,
    pub ls2: Option<LayerScale>,
}

/// Where a single-stack model's positions live in checkpoints.
pub const POSITIONS: &str = "scalenet.layers";

/// Key prefix of position i's tensors in a single-stack model.
pub fn position_key(i: usize) -> String {
    format!("{POSITIONS}.{i}")
}

impl<N: BlockNorm> Position<N> {
    /// The position whose tensors are under `key`; `base` is the block it runs (its norms are
    /// the template for the position's own).
    pub fn new<B: PreNormBlock<Norm = N>>(
        src: &mut dyn WeightSource,
        key: &str,
        spec: &GrowthSpec,
        dim: usize,
        base: &B,
        device: &Device,
    ) -> Self {
        let adapter = |src: &mut dyn WeightSource, p: Placement, name: &str| {
            spec.adapter.as_ref().filter(|a| a.has(p)).map(|a| {
                Adapter::new(
                    src,
                    &format!("{key}.{name}"),
                    dim,
                    a.rank,
                    a.scale,
                    a.activation,
                    device,
                )
            })
        };
        let norm = |src: &mut dyn WeightSource, like: &N, name: &str| {
            spec.unshared_norms
                .then(|| like.fresh(src, &format!("{key}.{name}"), device))
        };
        let ls = |src: &mut dyn WeightSource, name: &str| {
            spec.layer_scale
                .then(|| LayerScale::new(src, &format!("{key}.{name}"), dim, 1.0, device))
        };
        Self {
            attn_adapter: adapter(src, Placement::Attn, "attn_adapter"),
            mlp_adapter: adapter(src, Placement::Mlp, "mlp_adapter"),
            norm1: norm(src, base.norm1(), "norm1"),
            norm2: norm(src, base.norm2(), "norm2"),
            ls1: ls(src, "ls1"),
            ls2: ls(src, "ls2"),
        }
    }

    /// Runs base block `b` at this position. `[batch, tokens, dim]` → same. With `dp`, the
    /// residual branches drop out by `position` (stochastic depth).
    pub fn forward<B: PreNormBlock<Norm = N>>(
        &self,
        b: &B,
        x: Tensor<3>,
        ctx: B::Ctx<'_>,
        position: usize,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        self.forward_rows(b, x, ctx, None, position, dp)
    }

    /// [`forward`](Self::forward) for the first `keep` tokens only (every token is still
    /// attended to): `[batch, tokens, dim]` → `[batch, keep, dim]`.
    pub fn forward_queries<B: PreNormBlock<Norm = N>>(
        &self,
        b: &B,
        x: Tensor<3>,
        ctx: B::Ctx<'_>,
        keep: usize,
        position: usize,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        self.forward_rows(b, x, ctx, Some(keep), position, dp)
    }

    fn forward_rows<B: PreNormBlock<Norm = N>>(
        &self,
        b: &B,
        x: Tensor<3>,
        ctx: B::Ctx<'_>,
        keep: Option<usize>,
        position: usize,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        let n1 = self.norm1.as_ref().unwrap_or(b.norm1()).forward(x.clone());
        let (mut a, n1, x) = match keep {
            None => (b.attn(n1.clone(), ctx), n1, x),
            Some(k) => (
                b.attn_queries(n1.clone(), ctx, k),
                prefix(n1, k),
                prefix(x, k),
            ),
        };
        if let Some(ad) = &self.attn_adapter {
            a = a + ad.forward(n1);
        }
        let x = x + drop_path::maybe(dp, position, gate(&self.ls1, a));
        let n2 = self.norm2.as_ref().unwrap_or(b.norm2()).forward(x.clone());
        let mut f = b.mlp(n2.clone());
        if let Some(ad) = &self.mlp_adapter {
            f = f + ad.forward(n2);
        }
        x + drop_path::maybe(dp, position, gate(&self.ls2, f))
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        if let Some(a) = &self.attn_adapter {
            a.export(&format!("{key}.attn_adapter"), out);
        }
        if let Some(a) = &self.mlp_adapter {
            a.export(&format!("{key}.mlp_adapter"), out);
        }
        if let Some(n) = &self.norm1 {
            n.export(&format!("{key}.norm1"), out);
        }
        if let Some(n) = &self.norm2 {
            n.export(&format!("{key}.norm2"), out);
        }
        if let Some(l) = &self.ls1 {
            l.export(&format!("{key}.ls1"), out);
        }
        if let Some(l) = &self.ls2 {
            l.export(&format!("{key}.ls2"), out);
        }
    }

    pub fn adapter_params(&self) -> usize {
        [&self.attn_adapter, &self.mlp_adapter]
            .into_iter()
            .flatten()
            .map(Adapter::num_params)
            .sum()
    }

    pub fn norm_params(&self) -> usize {
        [&self.norm1, &self.norm2]
            .into_iter()
            .flatten()
            .map(BlockNorm::num_params)
            .sum()
    }

    pub fn gate_params(&self) -> usize {
        [&self.ls1, &self.ls2]
            .into_iter()
            .flatten()
            .map(LayerScale::num_params)
            .sum()
    }
}

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

    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<3> {
        self.forward_features_train(x, &mut None)
    }

    /// `forward_features` with stochastic depth (by position) when `dp` is given.
    pub fn forward_features_train(
        &self,
        x: Tensor<4>,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        let x = self.embed.forward(x);
        let ctxs = std::iter::repeat_n((), self.positions.len());
        run_positions(&self.blocks, &self.positions, &self.layer_map, x, ctxs, dp)
    }

    /// `[batch, chans, h, w]` → `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_train(x, &mut None)
    }

    /// [`forward`](Self::forward) with stochastic depth (by position) when `dp` is given.
    pub fn forward_train(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> Tensor<2> {
        let (Some(keep), Some((last, rest))) =
            (self.head.reads_prefix(), self.positions.split_last())
        else {
            return self.head.forward(self.forward_features_train(x, dp), false);
        };
        // As in `VisionTransformer::forward_train`: the last position for the class token only.
        let n = rest.len();
        let ctxs = std::iter::repeat_n((), n);
        let x = self.embed.forward(x);
        let x = run_positions(&self.blocks, rest, &self.layer_map[..n], x, ctxs, dp);
        let last_block = &self.blocks[self.layer_map[n]];
        let x = last.forward_queries(last_block, x, (), keep, n, dp);
        self.head.forward(x, false)
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

/// Positions 0..spec.depth() (keys `{prefix}.{i}`), each built against the base block it runs.
pub fn new_positions<B: PreNormBlock>(
    src: &mut dyn WeightSource,
    prefix: &str,
    spec: &GrowthSpec,
    dim: usize,
    blocks: &[B],
    device: &Device,
) -> Vec<Position<B::Norm>> {
    (0..spec.depth())
        .map(|i| {
            let key = format!("{prefix}.{i}");
            Position::new(src, &key, spec, dim, &blocks[spec.layer_map[i]], device)
        })
        .collect()
}

/// Runs `x` through every position in order: position i runs `blocks[map[i]]` with the i-th
/// context of `ctxs`.
pub fn run_positions<'a, B: PreNormBlock + 'a>(
    blocks: &[B],
    positions: &[Position<B::Norm>],
    map: &[usize],
    mut x: Tensor<3>,
    ctxs: impl IntoIterator<Item = B::Ctx<'a>>,
    dp: &mut Option<&mut DropPath>,
) -> Tensor<3> {
    for (i, ((pos, &j), ctx)) in positions.iter().zip(map).zip(ctxs).enumerate() {
        x = pos.forward(&blocks[j], x, ctx, i, dp);
    }
    x
}

/// Per-position tensors that do not start random: norms as their base block's, and gates as
/// `gates` says (the identity schedule: 1 where a base block runs as it did, 0 elsewhere).
/// They are copied through the host, so that each position's tensor is a parameter of its own.
pub fn fixed_position_values<B: PreNormBlock>(
    blocks: &[B],
    prefix: &str,
    spec: &GrowthSpec,
    dim: usize,
    gates: &[f32],
) -> HashMap<String, Vec<f32>> {
    let mut fixed = HashMap::new();
    for (i, &j) in spec.layer_map.iter().enumerate() {
        let key = format!("{prefix}.{i}");
        if spec.unshared_norms {
            let mut sink = TensorSink::default();
            blocks[j].norm1().export(&format!("{key}.norm1"), &mut sink);
            blocks[j].norm2().export(&format!("{key}.norm2"), &mut sink);
            fixed.extend(sink.tensors.into_iter().map(|t| (t.name, t.values)));
        }
        if spec.layer_scale {
            fixed.insert(format!("{key}.ls1.gamma"), vec![gates[i]; dim]);
            fixed.insert(format!("{key}.ls2.gamma"), vec![gates[i]; dim]);
        }
    }
    fixed
}

/// Parameter counts of a grown model, with the cost of the same depth without sharing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GrownCounts {
    pub embeddings: usize,
    pub shared_blocks: usize,
    pub adapters: usize,
    pub position_norms: usize,
    pub gates: usize,
    pub norm: usize,
    pub head: usize,
    /// What L' independent blocks would hold.
    pub unshared_blocks: usize,
}

impl GrownCounts {
    pub fn total(&self) -> usize {
        self.embeddings
            + self.shared_blocks
            + self.adapters
            + self.position_norms
            + self.gates
            + self.norm
            + self.head
    }

    /// Parameters of a plain model of the same depth (the `--no-share` baseline).
    pub fn unshared_total(&self) -> usize {
        self.embeddings + self.unshared_blocks + self.norm + self.head
    }

    pub fn adjustments(&self) -> usize {
        self.adapters + self.position_norms + self.gates
    }
}
