//! What every family's block is: a pre-norm two-branch residual block,
//! `x = x + attn(norm1(x))` then `x = x + mlp(norm2(x))`. A ViT block, a Swin block and a Llama
//! decoder layer are all this; each family implements the trait in its own `block.rs`, and
//! everything in `growth/` (positions, their adapters, gates and norms, expansion) is written
//! once over it. The trait lives here, below both, so that no family imports `growth/`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::drop_path::{self, DropPath};
use super::layers::{LayerNorm, LayerScale, Linear};
use super::weights::{TensorSink, WeightSource};

/// A normalisation layer a position may own instead of sharing its base block's.
pub trait BlockNorm: Module + core::fmt::Debug {
    fn forward(&self, x: Tensor<3>) -> Tensor<3>;
    /// A norm of the same kind and settings as `self`, read from `src` under `key`.
    fn fresh(&self, src: &mut dyn WeightSource, key: &str, device: &Device) -> Self;
    fn export(&self, key: &str, out: &mut TensorSink);
    fn num_params(&self) -> usize;
}

/// A pre-norm two-branch residual block.
pub trait PreNormBlock: Module + core::fmt::Debug {
    type Norm: BlockNorm;
    /// What an attention call needs besides its input: nothing for a ViT; rotary tables, the
    /// start position and a KV-cache slot for a decoder.
    type Ctx<'a>;
    fn norm1(&self) -> &Self::Norm;
    fn norm2(&self) -> &Self::Norm;
    /// The attention branch on the normalised input, including the block's own gate if any.
    fn attn(&self, x: Tensor<3>, ctx: Self::Ctx<'_>) -> Tensor<3>;
    /// [`attn`](Self::attn) for the first `keep` tokens' queries only (every token is still a
    /// key and a value): `[batch, keep, dim]`. Families with a cheaper way override it.
    fn attn_queries(&self, x: Tensor<3>, ctx: Self::Ctx<'_>, keep: usize) -> Tensor<3> {
        prefix(self.attn(x, ctx), keep)
    }
    /// The MLP branch on the normalised input, including the block's own gate if any.
    fn mlp(&self, x: Tensor<3>) -> Tensor<3>;
    /// The block on its own: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, each branch
    /// dropped by `position` when `dp` is given (stochastic depth); with `keep`, only the first
    /// `keep` tokens' rows come out (every token is still attended to).
    fn forward_block(
        &self,
        x: Tensor<3>,
        ctx: Self::Ctx<'_>,
        keep: Option<usize>,
        position: usize,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        let n1 = self.norm1().forward(x.clone());
        let (a, x) = match keep {
            None => (self.attn(n1, ctx), x),
            Some(k) => (self.attn_queries(n1, ctx, k), prefix(x, k)),
        };
        let x = x + drop_path::maybe(dp, position, a);
        let f = self.mlp(self.norm2().forward(x.clone()));
        x + drop_path::maybe(dp, position, f)
    }
    fn export(&self, key: &str, out: &mut TensorSink);
    fn num_params(&self) -> usize;
    /// Every linear layer of the block with its name under the block's key, in a fixed order
    /// (for per-position LoRA, which relaxes each of them).
    fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)>;
}

/// The first `keep` tokens of `[batch, tokens, dim]`.
pub fn prefix(x: Tensor<3>, keep: usize) -> Tensor<3> {
    let [b, _, d] = x.dims();
    x.slice([0..b, 0..keep, 0..d])
}

/// Applies an optional LayerScale; absent means identity, as timm's `nn.Identity`.
pub fn gate(ls: &Option<LayerScale>, x: Tensor<3>) -> Tensor<3> {
    match ls {
        Some(ls) => ls.forward(x),
        None => x,
    }
}

impl BlockNorm for LayerNorm {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        LayerNorm::forward(self, x)
    }

    fn fresh(&self, src: &mut dyn WeightSource, key: &str, device: &Device) -> Self {
        LayerNorm::with_eps(src, key, self.weight.dims()[0], self.eps, device)
    }

    fn export(&self, key: &str, out: &mut TensorSink) {
        LayerNorm::export(self, key, out)
    }

    fn num_params(&self) -> usize {
        LayerNorm::num_params(self)
    }
}
