//! timm's `SwinTransformer`: patch embedding with its norm → stages of window-attention
//! blocks (shifted windows on odd blocks, patch merging at the start of stages ≥ 1) → final
//! norm → pooling → `head.fc`. Key names are timm 1.0's (`layers.{s}.blocks.{b}.…`); the
//! non-persistent buffers (`relative_position_index`, `attn_mask`) are computed here.
//!
//! Tokens travel as `[batch, h·w, dim]`, row-major over the stage's grid, which is timm's
//! NHWC layout flattened.

pub mod block;
pub mod config;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

pub use block::{BlockGeometry, SwinBlock, WindowAttention};
pub use config::{StageGeometry, SwinConfig, SWIN_LN_EPS};

use crate::model::drop_path::DropPath;
use crate::model::image::GlobalPool;
use crate::model::layers::{LayerNorm, Linear};
use crate::model::patch::{export_patch_conv, patch_conv, patch_conv_forward};
use crate::model::prenorm::PreNormBlock;
use crate::model::weights::{TensorSink, WeightSource};
/// 2×2 neighbouring tokens concatenated, normalised and projected to twice the width
/// (timm's `PatchMerging`); an odd side is padded with zeros first.
#[derive(Module, Debug)]
pub struct PatchMerging {
    pub norm: LayerNorm,
    /// `[4·dim, 2·dim]`, no bias.
    pub reduction: Linear,
    /// The grid it merges.
    pub resolution: [usize; 2],
}

impl PatchMerging {
    fn new(
        src: &mut dyn WeightSource,
        key: &str,
        dim: usize,
        resolution: [usize; 2],
        device: &Device,
    ) -> Self {
        Self {
            norm: LayerNorm::with_eps(src, &format!("{key}.norm"), 4 * dim, SWIN_LN_EPS, device),
            reduction: Linear::new(
                src,
                &format!("{key}.reduction"),
                4 * dim,
                2 * dim,
                false,
                Linear::timm_init(),
                device,
            ),
            resolution,
        }
    }

    /// `[batch, h·w, dim]` → `[batch, ⌈h/2⌉·⌈w/2⌉, 2·dim]`
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, _, c] = x.dims();
        let [h, w] = self.resolution;
        let device = x.device();
        let mut x = x.reshape([b, h, w, c]);
        if h % 2 == 1 {
            x = Tensor::cat(vec![x, Tensor::zeros([b, 1, w, c], &device)], 1);
        }
        let hp = h + h % 2;
        if w % 2 == 1 {
            x = Tensor::cat(vec![x, Tensor::zeros([b, hp, 1, c], &device)], 2);
        }
        let (h2, w2) = (hp / 2, w.div_ceil(2));
        // timm: reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5): the column offset is
        // the slower of the two in the 4·C channels.
        let x = x
            .reshape([b, h2, 2, w2, 2, c])
            .permute([0, 1, 3, 4, 2, 5])
            .reshape([b, h2 * w2, 4 * c]);
        self.reduction.forward(self.norm.forward(x))
    }

    fn export(&self, key: &str, out: &mut TensorSink) {
        self.norm.export(&format!("{key}.norm"), out);
        self.reduction.export(&format!("{key}.reduction"), out);
    }

    fn num_params(&self) -> usize {
        self.norm.num_params() + self.reduction.num_params()
    }
}

/// The parts of a Swin around its blocks: patch embedding, merges, final norm, classifier.
/// A plain and a grown Swin share them; only what runs between them differs.
#[derive(Module, Debug)]
pub struct SwinEnds {
    /// `patch_embed.proj` as a matrix `[chans·p·p, dim]`.
    pub proj_weight: Param<Tensor<2>>,
    pub proj_bias: Param<Tensor<1>>,
    /// `patch_embed.norm`
    pub embed_norm: LayerNorm,
    /// `layers.{s}.downsample` for s ≥ 1 (entry s−1).
    pub merges: Vec<PatchMerging>,
    /// `norm`
    pub norm: LayerNorm,
    /// `head.fc`; absent when `num_classes` is 0.
    pub fc: Option<Linear>,
    #[module(skip)]
    pub config: SwinConfig,
}

impl SwinEnds {
    pub fn new(src: &mut dyn WeightSource, cfg: &SwinConfig, device: &Device) -> Self {
        let (proj_weight, proj_bias) =
            patch_conv(src, cfg.in_chans, cfg.patch_size, cfg.embed_dim, device);
        let stages = cfg.stages();
        let embed_norm =
            LayerNorm::with_eps(src, "patch_embed.norm", cfg.embed_dim, SWIN_LN_EPS, device);
        let merges = (1..stages.len())
            .map(|s| {
                let prev = &stages[s - 1];
                PatchMerging::new(
                    src,
                    &format!("layers.{s}.downsample"),
                    prev.dim,
                    prev.resolution,
                    device,
                )
            })
            .collect();
        let f = cfg.num_features();
        Self {
            proj_weight,
            proj_bias,
            embed_norm,
            merges,
            norm: LayerNorm::with_eps(src, "norm", f, SWIN_LN_EPS, device),
            fc: (cfg.num_classes > 0).then(|| {
                Linear::new(
                    src,
                    "head.fc",
                    f,
                    cfg.num_classes,
                    true,
                    Linear::timm_init(),
                    device,
                )
            }),
            config: cfg.clone(),
        }
    }

    /// `[batch, chans, h, w]` → stage-0 tokens `[batch, gh·gw, dim]`.
    pub fn embed(&self, x: Tensor<4>) -> Tensor<3> {
        let [_, _, h, w] = x.dims();
        let want = self.config.img_size;
        // timm's PatchEmbed (strict_img_size) asserts the same; the masks and merges are
        // built for this grid.
        assert_eq!(
            [h, w],
            want,
            "input {h}x{w} does not match this Swin's img_size {want:?}"
        );
        let x = patch_conv_forward(
            x,
            &self.proj_weight,
            &self.proj_bias,
            self.config.patch_size,
            self.config.grid(),
        );
        self.embed_norm.forward(x)
    }

    /// Before stage `s`: its patch merging (none before stage 0).
    pub fn enter_stage(&self, s: usize, x: Tensor<3>) -> Tensor<3> {
        match s.checked_sub(1) {
            Some(m) => self.merges[m].forward(x),
            None => x,
        }
    }

    /// Final norm, pooling and classifier: `[batch, tokens, f]` → `[batch, num_classes]`
    /// (`[batch, f]` with `pre_logits` or without a head).
    pub fn head(&self, x: Tensor<3>, pre_logits: bool) -> Tensor<2> {
        let x = self.norm.forward(x);
        let [b, _, f] = x.dims();
        let pooled = match self.config.global_pool {
            GlobalPool::Max => x.max_dim(1),
            GlobalPool::Avgmax => (x.clone().mean_dim(1) + x.max_dim(1)) * 0.5,
            _ => x.mean_dim(1),
        }
        .reshape([b, f]);
        match (&self.fc, pre_logits) {
            (Some(fc), false) => fc.forward(pooled),
            _ => pooled,
        }
    }

    pub fn export(&self, out: &mut TensorSink) {
        export_patch_conv(
            &self.proj_weight,
            &self.proj_bias,
            self.config.patch_size,
            out,
        );
        self.embed_norm.export("patch_embed.norm", out);
        for (m, merge) in self.merges.iter().enumerate() {
            merge.export(&format!("layers.{}.downsample", m + 1), out);
        }
        self.norm.export("norm", out);
        if let Some(fc) = &self.fc {
            fc.export("head.fc", out);
        }
    }

    /// (patch embedding, merges, final norm, head)
    pub fn num_params(&self) -> [usize; 4] {
        let [k, d] = self.proj_weight.dims();
        [
            k * d + d + self.embed_norm.num_params(),
            self.merges.iter().map(PatchMerging::num_params).sum(),
            self.norm.num_params(),
            self.fc.as_ref().map_or(0, Linear::num_params),
        ]
    }
}

/// Blocks of every stage, as timm numbers them (`layers.{s}.blocks.{b}`).
pub fn new_stage_blocks(
    src: &mut dyn WeightSource,
    cfg: &SwinConfig,
    device: &Device,
) -> Vec<Vec<SwinBlock>> {
    cfg.stages()
        .iter()
        .enumerate()
        .map(|(s, g)| {
            (0..cfg.depths[s])
                .map(|b| {
                    let key = format!("layers.{s}.blocks.{b}");
                    SwinBlock::new(src, &key, g, b % 2 == 1, cfg, s, device)
                })
                .collect()
        })
        .collect()
}

/// Every stage's blocks under timm's names (`layers.{s}.blocks.{b}`).
pub fn export_stage_blocks(stages: &[Vec<SwinBlock>], out: &mut TensorSink) {
    for (s, blocks) in stages.iter().enumerate() {
        for (b, block) in blocks.iter().enumerate() {
            block.export(&format!("layers.{s}.blocks.{b}"), out);
        }
    }
}

/// Runs block `i` of stage `s` (a plain model's block, or a grown model's position), the
/// `position`-th in the whole network (for stochastic depth).
pub type StageLayer<'a> =
    dyn Fn(usize, usize, Tensor<3>, usize, &mut Option<&mut DropPath>) -> Tensor<3> + 'a;

/// The patch embedding, then each stage (its merge, then `depths[s]` layers):
/// `[batch, chans, h, w]` → last-stage tokens before the final norm. The one forward of a plain
/// and of a grown Swin.
pub fn features(
    ends: &SwinEnds,
    depths: &[usize],
    x: Tensor<4>,
    dp: &mut Option<&mut DropPath>,
    layer: &StageLayer,
) -> Tensor<3> {
    let mut outs = stage_outputs(ends, depths, x, dp, layer);
    outs.pop().expect("a Swin has at least one stage")
}

/// [`features`], keeping each stage's output tokens (before any norm) for dense heads.
pub fn stage_outputs(
    ends: &SwinEnds,
    depths: &[usize],
    x: Tensor<4>,
    dp: &mut Option<&mut DropPath>,
    layer: &StageLayer,
) -> Vec<Tensor<3>> {
    let mut x = ends.embed(x);
    let mut outs = Vec::with_capacity(depths.len());
    let mut position = 0;
    for (s, &depth) in depths.iter().enumerate() {
        x = ends.enter_stage(s, x);
        for i in 0..depth {
            x = layer(s, i, x, position, dp);
            position += 1;
        }
        outs.push(x.clone());
    }
    outs
}

/// Stage tokens `[batch, h·w, c]` as feature maps `[batch, c, h, w]` on each stage's grid
/// (timm's `forward_intermediates` with NCHW output).
pub fn stage_maps(cfg: &SwinConfig, outs: Vec<Tensor<3>>) -> Vec<Tensor<4>> {
    outs.into_iter()
        .zip(cfg.stages())
        .map(|(x, g)| {
            let [b, _, c] = x.dims();
            let [h, w] = g.resolution;
            x.reshape([b, h, w, c]).permute([0, 3, 1, 2])
        })
        .collect()
}

#[derive(Module, Debug)]
pub struct SwinTransformer {
    pub ends: SwinEnds,
    /// `layers.{s}.blocks.{b}`: stage s, block b.
    pub stages: Vec<Vec<SwinBlock>>,
}

impl SwinTransformer {
    /// Builds the model, taking every tensor from `src` under its timm key. The config must
    /// already be valid (`SwinConfig::validate`).
    pub fn new(cfg: &SwinConfig, src: &mut dyn WeightSource, device: &Device) -> Self {
        let ends = SwinEnds::new(src, cfg, device);
        let stages = new_stage_blocks(src, cfg, device);
        Self { ends, stages }
    }

    pub fn config(&self) -> &SwinConfig {
        &self.ends.config
    }

    /// `[batch, chans, h, w]` → `[batch, tokens, f]` before the final norm; stochastic depth
    /// by block position in the whole network when `dp` is given.
    pub fn forward_features_train(
        &self,
        x: Tensor<4>,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        let depths: Vec<usize> = self.stages.iter().map(Vec::len).collect();
        features(&self.ends, &depths, x, dp, &|s, i, x, position, dp| {
            let block = &self.stages[s][i];
            block.forward_block(x, &block.geometry, None, position, dp)
        })
    }

    /// `[batch, chans, h, w]` → `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.ends
            .head(self.forward_features_train(x, &mut None), false)
    }

    /// Each stage's output as `[batch, c, h, w]` (strides 4, 8, 16, 32 for a patch of 4).
    pub fn forward_stages(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> Vec<Tensor<4>> {
        let depths: Vec<usize> = self.stages.iter().map(Vec::len).collect();
        let outs = stage_outputs(&self.ends, &depths, x, dp, &|s, i, x, position, dp| {
            let block = &self.stages[s][i];
            block.forward_block(x, &block.geometry, None, position, dp)
        });
        stage_maps(self.config(), outs)
    }

    pub fn depth(&self) -> usize {
        self.stages.iter().map(Vec::len).sum()
    }

    /// All tensors under timm's names, in torch layout.
    pub fn export(&self) -> TensorSink {
        let mut out = TensorSink::default();
        self.ends.export(&mut out);
        export_stage_blocks(&self.stages, &mut out);
        out
    }

    pub fn num_params(&self) -> usize {
        self.ends.num_params().iter().sum::<usize>()
            + self
                .stages
                .iter()
                .flatten()
                .map(SwinBlock::num_params)
                .sum::<usize>()
    }
}
