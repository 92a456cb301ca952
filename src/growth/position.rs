//! A position of a grown model: L base blocks stored once, L' positions that each run base
//! block `layer_map[i]` plus their own adjustment parameters.
//!
//! Position i with j = layer_map[i]:
//! ```text
//! n1 = norm1(x);  a = Attn_j(n1) [+ attn_adapter_i(n1)];  [a = ls1_i ⊙ a];  x = x + a
//! n2 = norm2(x);  f = Mlp_j(n2)  [+ mlp_adapter_i(n2)];   [f = ls2_i ⊙ f];  x = x + f
//! ```
//! `norm1`/`norm2` are the base block's unless the position owns them (`unshared_norms`).
//! With `lora`, `Attn_j` and `Mlp_j` run with the position's LoRA added to each linear layer.
//! When the base itself has LayerScale, `Attn_j` and `Mlp_j` include the base's `ls1`/`ls2`.
//!
//! Sharing is real: `blocks` holds each base block once and positions only hold an index, so
//! each shared tensor is one parameter (one optimizer entry) whose gradient sums over positions.
//! [`Position`] and [`run_positions`] work for any [`PreNormBlock`]; each family's grown model
//! assembles them in its own file (`growth/vit.rs`, `growth/swin.rs`, `growth/llama.rs`).

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::adapter::Adapter;
use super::lora::PositionLora;
use super::plan::{GrowthSpec, Placement};
use crate::model::drop_path::{self, DropPath};
use crate::model::layers::LayerScale;
use crate::model::prenorm::{gate, prefix, BlockNorm, PreNormBlock};
use crate::model::weights::{TensorSink, WeightSource};

/// The parameters that belong to one position alone.
#[derive(Module, Debug)]
pub struct Position<N: BlockNorm> {
    pub attn_adapter: Option<Adapter>,
    pub mlp_adapter: Option<Adapter>,
    pub norm1: Option<N>,
    pub norm2: Option<N>,
    pub ls1: Option<LayerScale>,
    pub ls2: Option<LayerScale>,
    pub lora: Option<PositionLora>,
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
            lora: spec
                .lora
                .as_ref()
                .map(|l| PositionLora::new(src, key, l, base, device)),
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

    /// [`forward`](Self::forward); with `keep`, only the first `keep` tokens' rows come out
    /// (every token is still attended to): `[batch, tokens, dim]` → `[batch, keep, dim]`.
    pub fn forward_rows<B: PreNormBlock<Norm = N>>(
        &self,
        b: &B,
        x: Tensor<3>,
        ctx: B::Ctx<'_>,
        keep: Option<usize>,
        position: usize,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        let relaxed = self.lora.as_ref().map(|l| l.relax(b));
        let b = relaxed.as_ref().unwrap_or(b);
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
        if let Some(l) = &self.lora {
            l.export(key, out);
        }
    }

    /// The position's low-rank parameters: its parallel adapters, or its LoRA.
    pub fn adapter_params(&self) -> usize {
        let lora = self.lora.as_ref().map_or(0, PositionLora::num_params);
        [&self.attn_adapter, &self.mlp_adapter]
            .into_iter()
            .flatten()
            .map(Adapter::num_params)
            .sum::<usize>()
            + lora
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
