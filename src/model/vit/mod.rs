//! timm's `VisionTransformer` (and DeiT's distilled variant): embeddings → blocks → head.
//! `forward_features` and `forward_head` split the forward where timm splits it.

pub mod attention;
pub mod block;
pub mod config;
pub mod embed;
pub mod head;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use block::Block;
use config::VitConfig;
use embed::Embeddings;
use head::ClassifierHead;

use crate::model::drop_path::DropPath;
use crate::model::prenorm::PreNormBlock;
use crate::model::weights::{TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct VisionTransformer {
    /// `patch_embed.*`, `cls_token`, `dist_token`, `pos_embed` (top-level keys in timm).
    pub embed: Embeddings,
    /// `blocks.{i}.*`
    pub blocks: Vec<Block>,
    /// `norm`, `fc_norm`, `head`, `head_dist` (top-level keys in timm).
    pub head: ClassifierHead,
    #[module(skip)]
    pub config: VitConfig,
}

impl VisionTransformer {
    /// Builds the model, taking every tensor from `src` under its timm key.
    /// The config must already be valid (`VitConfig::validate`).
    pub fn new(cfg: &VitConfig, src: &mut dyn WeightSource, device: &Device) -> Self {
        let embed = Embeddings::new(src, cfg, device);
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(src, &format!("blocks.{i}"), cfg, device))
            .collect();
        let head = ClassifierHead::new(src, cfg, device);
        Self {
            embed,
            blocks,
            head,
            config: cfg.clone(),
        }
    }

    /// `[batch, chans, h, w]` → `[batch, tokens, dim]` (after the final norm).
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<3> {
        self.forward_features_train(x, &mut None)
    }

    /// `forward_features` with stochastic depth when `dp` is given.
    pub fn forward_features_train(
        &self,
        x: Tensor<4>,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        features(&self.embed, self.blocks.len(), x, dp, &|i, x, keep, dp| {
            self.blocks[i].forward_block(x, (), keep, i, dp)
        })
    }

    /// The outputs of blocks `indices` as `[batch, dim, grid_h, grid_w]` ([`intermediates`]).
    pub fn forward_intermediates(
        &self,
        x: Tensor<4>,
        indices: &[usize],
        dp: &mut Option<&mut DropPath>,
    ) -> Vec<Tensor<4>> {
        intermediates(&self.embed, indices, x, dp, &|i, x, keep, dp| {
            self.blocks[i].forward_block(x, (), keep, i, dp)
        })
    }

    pub fn forward_head(&self, x: Tensor<3>, pre_logits: bool) -> Tensor<2> {
        self.head.forward(x, pre_logits)
    }

    /// `[batch, chans, h, w]` → `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_train(x, &mut None)
    }

    /// [`forward`](Self::forward) with stochastic depth when `dp` is given.
    pub fn forward_train(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> Tensor<2> {
        logits(
            &self.embed,
            &self.head,
            self.blocks.len(),
            x,
            dp,
            &|i, x, keep, dp| self.blocks[i].forward_block(x, (), keep, i, dp),
        )
    }

    /// All tensors under timm's names, in torch layout.
    pub fn export(&self) -> TensorSink {
        let mut out = TensorSink::default();
        self.embed.export(&mut out);
        for (i, block) in self.blocks.iter().enumerate() {
            block.export(&format!("blocks.{i}"), &mut out);
        }
        self.head.export(&mut out);
        out
    }

    pub fn param_counts(&self) -> ParamCounts {
        ParamCounts {
            embeddings: self.embed.num_params(),
            blocks: self.blocks.iter().map(Block::num_params).sum(),
            norm: self.head.norm_params(),
            head: self.head.head_params(),
        }
    }
}

/// Runs layer `i` of a stack (a plain model's block, or a grown model's position) on
/// `[batch, tokens, dim]`; with `keep`, only the first `keep` tokens' rows come out (every token
/// is still attended to).
pub type Layer<'a> =
    dyn Fn(usize, Tensor<3>, Option<usize>, &mut Option<&mut DropPath>) -> Tensor<3> + 'a;

/// Embeddings, then `depth` layers: `[batch, chans, h, w]` → `[batch, tokens, dim]`. The one
/// forward of a plain and of a grown ViT.
pub fn features(
    embed: &Embeddings,
    depth: usize,
    x: Tensor<4>,
    dp: &mut Option<&mut DropPath>,
    layer: &Layer,
) -> Tensor<3> {
    (0..depth).fold(embed.forward(x), |x, i| layer(i, x, None, dp))
}

/// Embeddings, then layers through the last of `indices`: each listed layer's output with the
/// prefix tokens dropped, as a patch grid `[batch, dim, grid_h, grid_w]` (timm's
/// `forward_intermediates` with NCHW output and no norm). `indices` ascending, repeats allowed.
pub fn intermediates(
    embed: &Embeddings,
    indices: &[usize],
    x: Tensor<4>,
    dp: &mut Option<&mut DropPath>,
    layer: &Layer,
) -> Vec<Tensor<4>> {
    let prefix = embed.num_prefix_tokens();
    let [gh, gw] = [embed.grid_h, embed.grid_w];
    let mut outs = Vec::with_capacity(indices.len());
    let mut x = embed.forward(x);
    for i in 0..=indices.last().copied().unwrap_or(0) {
        x = layer(i, x, None, dp);
        // A repeated index (a shallow model asked for four levels) repeats its map.
        for _ in indices.iter().filter(|&&k| k == i) {
            let [b, n, d] = x.dims();
            let patches = x.clone().slice([0..b, prefix..n, 0..d]);
            outs.push(patches.reshape([b, gh, gw, d]).permute([0, 3, 1, 2]));
        }
    }
    outs
}

/// `n` blocks of `depth` for a dense head, evenly spaced with the last included: block
/// ⌈k·depth/n⌉ − 1 for k = 1..n, mmsegmentation's (2, 5, 8, 11) for a 12-block ViT.
pub fn default_out_indices(depth: usize, n: usize) -> Vec<usize> {
    (1..=n)
        .map(|k| (k * depth).div_ceil(n).max(1) - 1)
        .collect()
}

/// [`features`], then the head: `[batch, chans, h, w]` → `[batch, num_classes]`.
pub fn logits(
    embed: &Embeddings,
    head: &ClassifierHead,
    depth: usize,
    x: Tensor<4>,
    dp: &mut Option<&mut DropPath>,
    layer: &Layer,
) -> Tensor<2> {
    // A head that reads the class token alone needs the last layer's output for that token
    // only: its MLP, projection and attention queries run for one token instead of all.
    // The other tokens' rows there cannot reach the loss, so their gradients are zero
    // anyway; leaving them out changes no result.
    let Some(keep) = head.reads_prefix().filter(|_| depth > 0) else {
        return head.forward(features(embed, depth, x, dp, layer), false);
    };
    let x = (0..depth - 1).fold(embed.forward(x), |x, i| layer(i, x, None, dp));
    head.forward(layer(depth - 1, x, Some(keep), dp), false)
}

/// Parameter counts by group, as `scalenet info` prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ParamCounts {
    pub embeddings: usize,
    pub blocks: usize,
    pub norm: usize,
    pub head: usize,
}

impl ParamCounts {
    pub fn total(&self) -> usize {
        self.embeddings + self.blocks + self.norm + self.head
    }
}
