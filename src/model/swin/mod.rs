//! timm's `SwinTransformer`: patch embedding with its norm → stages of window-attention
//! blocks (shifted windows on odd blocks, patch merging at the start of stages ≥ 1) → final
//! norm → pooling → `head.fc`. Key names are timm 1.0's (`layers.{s}.blocks.{b}.…`); the
//! non-persistent buffers (`relative_position_index`, `attn_mask`) are computed here.
//!
//! Tokens travel as `[batch, h·w, dim]`, row-major over the stage's grid, which is timm's
//! NHWC layout flattened.

pub mod config;

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

pub use config::{StageGeometry, SwinConfig, SWIN_LN_EPS};

use super::drop_path::{self, DropPath};
use super::embed::{export_patch_conv, patch_conv, patch_conv_forward};
use super::layers::{LayerNorm, Linear};
use super::mlp::Mlp;
use super::weights::{param, Init, TensorSink, WeightSource};
use crate::config::GlobalPool;

/// Window multi-head self-attention with the relative-position bias (timm's `WindowAttention`).
#[derive(Module, Debug)]
pub struct WindowAttention {
    pub qkv: Linear,
    pub proj: Linear,
    /// `[(2·wh−1)·(2·ww−1), heads]`
    pub relative_position_bias_table: Param<Tensor<2>>,
    pub num_heads: usize,
    /// Row of the table for each (query, key) pair of a window, `[N·N]`.
    #[module(skip)]
    pub relative_position_index: Vec<i64>,
}

impl WindowAttention {
    fn new(
        src: &mut dyn WeightSource,
        key: &str,
        g: &StageGeometry,
        qkv_bias: bool,
        device: &Device,
    ) -> Self {
        let (d, [wh, ww]) = (g.dim, g.window);
        let rows = (2 * wh - 1) * (2 * ww - 1);
        let table = src.tensor(
            &format!("{key}.relative_position_bias_table"),
            &[rows, g.heads],
            Init::TruncNormal(0.02),
        );
        Self {
            qkv: Linear::new(
                src,
                &format!("{key}.qkv"),
                d,
                3 * d,
                qkv_bias,
                Linear::timm_init(),
                device,
            ),
            proj: Linear::new(
                src,
                &format!("{key}.proj"),
                d,
                d,
                true,
                Linear::timm_init(),
                device,
            ),
            relative_position_bias_table: param(table, [rows, g.heads], device),
            num_heads: g.heads,
            relative_position_index: relative_position_index(wh, ww),
        }
    }

    /// `[windows·batch, N, dim]` → same; `mask` is `[windows, N, N]` (0 or −100).
    fn forward(&self, x: Tensor<3>, mask: Option<Tensor<3>>) -> Tensor<3> {
        let n = x.dims()[1];
        let qkv = self.qkv.forward(x);
        // [groups, heads, N, N]: one group per window when shifted, else one for all.
        let bias = match mask {
            Some(m) => self.bias(n) + m.unsqueeze_dim::<4>(1),
            None => self.bias(n),
        };
        self.proj.forward(window_attend(qkv, bias, self.num_heads))
    }

    /// The relative-position bias gathered from the table: `[1, heads, N, N]`.
    fn bias(&self, n: usize) -> Tensor<4> {
        let table = self.relative_position_bias_table.val();
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(self.relative_position_index.clone(), [n * n]),
            &table.device(),
        );
        table
            .select(0, index)
            .reshape([n, n, self.num_heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }

    fn export(&self, key: &str, out: &mut TensorSink) {
        out.push(
            format!("{key}.relative_position_bias_table"),
            self.relative_position_bias_table.val(),
        );
        self.qkv.export(&format!("{key}.qkv"), out);
        self.proj.export(&format!("{key}.proj"), out);
    }

    fn num_params(&self) -> usize {
        self.qkv.num_params()
            + self.proj.num_params()
            + self
                .relative_position_bias_table
                .dims()
                .iter()
                .product::<usize>()
    }
}

/// Attention with an additive score bias: `qkv [windows·batch, N, 3·dim]` and
/// `bias [groups, heads, N, N]` (item i takes group i mod groups) → `[windows·batch, N, dim]`.
pub fn window_attend(qkv: Tensor<3>, bias: Tensor<4>, heads: usize) -> Tensor<3> {
    // On flex our fused kernel reads q, k and v where the qkv product left them and adds the
    // bias inside (as `model::attention` does for the ViT, without the bias).
    if qkv.device() == Device::flex() {
        return crate::ops::window_attention(qkv, bias, heads);
    }
    attend_biased(qkv, bias, heads)
}

/// [`crate::ops::window_attention`] composed from tensor ops, for backends without the kernel.
fn attend_biased(qkv: Tensor<3>, bias: Tensor<4>, h: usize) -> Tensor<3> {
    let [bw, n, d3] = qkv.dims();
    let (d, groups) = (d3 / 3, bias.dims()[0]);
    let hd = d / h;
    // [3, windows·batch, heads, N, head_dim]
    let qkv = qkv.reshape([bw, n, 3, h, hd]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().slice(i..i + 1).reshape([bw, h, n, hd]);
    let q = part(0) * (hd as f64).powf(-0.5);
    let scores =
        crate::ops::matmul(q, part(1).swap_dims(2, 3)).reshape([bw / groups, groups, h, n, n])
            + bias.unsqueeze::<5>();
    let out = crate::ops::matmul(softmax(scores.reshape([bw, h, n, n]), 3), part(2));
    out.swap_dims(1, 2).reshape([bw, n, d])
}

/// timm's `get_relative_position_index`, flattened: for tokens i, j of a `wh × ww` window
/// (row-major), `(hᵢ−hⱼ+wh−1)·(2·ww−1) + (wᵢ−wⱼ+ww−1)`.
pub fn relative_position_index(wh: usize, ww: usize) -> Vec<i64> {
    let n = wh * ww;
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dh = (i / ww) as i64 - (j / ww) as i64 + wh as i64 - 1;
            let dw = (i % ww) as i64 - (j % ww) as i64 + ww as i64 - 1;
            out.push(dh * (2 * ww as i64 - 1) + dw);
        }
    }
    out
}

/// timm's `attn_mask` for shifted windows, `[windows, N·N]` flattened: −100 between tokens
/// that the cyclic shift brought together from different regions, 0 elsewhere. `None` when
/// the stage does not shift.
pub fn shifted_window_mask(g: &StageGeometry) -> Option<Vec<f32>> {
    if g.shift == [0, 0] {
        return None;
    }
    let [wh, ww] = g.window;
    let [hp, wp] = [0, 1].map(|i| g.resolution[i].div_ceil(g.window[i]) * g.window[i]);
    // Python slices with negative bounds, as timm writes them: (0, -w), (-w, -s), (-s, None).
    let regions = |len: usize, w: usize, s: usize| {
        let at = |v: i64| {
            if v < 0 {
                (len as i64 + v).max(0) as usize
            } else {
                v as usize
            }
        };
        [
            (0, at(-(w as i64))),
            (at(-(w as i64)), at(-(s as i64))),
            (at(-(s as i64)), len),
        ]
        .map(|(a, b)| a..b.max(a))
    };
    let mut img = vec![0.0f32; hp * wp];
    let mut cnt = 0.0;
    // `-0` in Python is 0: a side without shift gets an empty middle and a full last region,
    // and later regions overwrite earlier ones, as in timm.
    for r in regions(hp, wh, g.shift[0]) {
        for c in regions(wp, ww, g.shift[1]) {
            for y in r.clone() {
                for x in c.clone() {
                    img[y * wp + x] = cnt;
                }
            }
            cnt += 1.0;
        }
    }
    let n = wh * ww;
    let mut out = Vec::with_capacity((hp / wh) * (wp / ww) * n * n);
    for by in 0..hp / wh {
        for bx in 0..wp / ww {
            let id = |t: usize| img[(by * wh + t / ww) * wp + bx * ww + t % ww];
            for i in 0..n {
                for j in 0..n {
                    out.push(if id(i) == id(j) { 0.0 } else { -100.0 });
                }
            }
        }
    }
    Some(out)
}

/// One Swin block (timm's `SwinTransformerBlock`): pre-norm window attention and MLP, each
/// a residual branch. Whether it shifts is part of the block.
#[derive(Module, Debug)]
pub struct SwinBlock {
    pub norm1: LayerNorm,
    pub attn: WindowAttention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    #[module(skip)]
    pub geometry: BlockGeometry,
}

/// Where a block runs: its stage's grid and window, and its own shift.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockGeometry {
    pub resolution: [usize; 2],
    pub window: [usize; 2],
    pub shift: [usize; 2],
    /// `[windows, N·N]`, present when the block shifts.
    pub mask: Option<Vec<f32>>,
}

impl BlockGeometry {
    /// Stage `g`'s windows, shifted (odd blocks) or not (even blocks).
    pub fn new(g: &StageGeometry, shifted: bool) -> Self {
        let g = StageGeometry {
            shift: if shifted { g.shift } else { [0, 0] },
            ..*g
        };
        Self {
            resolution: g.resolution,
            window: g.window,
            shift: g.shift,
            mask: shifted_window_mask(&g),
        }
    }
}

impl SwinBlock {
    /// Builds `layers.{s}.blocks.{b}` (or any other `key`); `shifted` for odd blocks.
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        g: &StageGeometry,
        shifted: bool,
        cfg: &SwinConfig,
        stage: usize,
        device: &Device,
    ) -> Self {
        let ln = |src: &mut dyn WeightSource, name: &str| {
            LayerNorm::with_eps(src, &format!("{key}.{name}"), g.dim, SWIN_LN_EPS, device)
        };
        Self {
            norm1: ln(src, "norm1"),
            attn: WindowAttention::new(src, &format!("{key}.attn"), g, cfg.qkv_bias, device),
            norm2: ln(src, "norm2"),
            mlp: Mlp::new(
                src,
                &format!("{key}.mlp"),
                g.dim,
                cfg.mlp_hidden(stage),
                device,
            ),
            geometry: BlockGeometry::new(g, shifted),
        }
    }

    /// The attention branch on normalised tokens `[batch, h·w, dim]`, windowed as `g` says
    /// (the block's own geometry, or a grown position's): shift, pad to whole windows, attend
    /// within each window, and undo all three.
    pub fn attend(&self, x: Tensor<3>, g: &BlockGeometry) -> Tensor<3> {
        let BlockGeometry {
            resolution: [h, w],
            window: [wh, ww],
            shift: [sh, sw],
            ..
        } = *g;
        let [b, _, c] = x.dims();
        let device = x.device();
        let mut x = x.reshape([b, h, w, c]);
        let shifted = sh > 0 || sw > 0;
        if shifted {
            x = x.roll(&[-(sh as i64), -(sw as i64)], &[1, 2]);
        }
        let (hp, wp) = (h.div_ceil(wh) * wh, w.div_ceil(ww) * ww);
        if hp > h {
            x = Tensor::cat(vec![x, Tensor::zeros([b, hp - h, w, c], &device)], 1);
        }
        if wp > w {
            x = Tensor::cat(vec![x, Tensor::zeros([b, hp, wp - w, c], &device)], 2);
        }
        let (nh, nw) = (hp / wh, wp / ww);
        let windows = x
            .reshape([b, nh, wh, nw, ww, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([b * nh * nw, wh * ww, c]);
        let mask = g.mask.as_ref().map(|m| {
            Tensor::<3>::from_data(
                TensorData::new(m.clone(), [nh * nw, wh * ww, wh * ww]),
                &device,
            )
        });
        let mut x = self
            .attn
            .forward(windows, mask)
            .reshape([b, nh, nw, wh, ww, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([b, hp, wp, c]);
        if hp > h || wp > w {
            x = x.slice([0..b, 0..h, 0..w, 0..c]);
        }
        if shifted {
            x = x.roll(&[sh as i64, sw as i64], &[1, 2]);
        }
        x.reshape([b, h * w, c])
    }

    pub fn forward_train(
        &self,
        x: Tensor<3>,
        position: usize,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        let a = self.attend(self.norm1.forward(x.clone()), &self.geometry);
        let x = x + drop_path::maybe(dp, position, a);
        let f = self.mlp.forward(self.norm2.forward(x.clone()));
        x + drop_path::maybe(dp, position, f)
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.norm1.export(&format!("{key}.norm1"), out);
        self.attn.export(&format!("{key}.attn"), out);
        self.norm2.export(&format!("{key}.norm2"), out);
        self.mlp.export(&format!("{key}.mlp"), out);
    }

    pub fn num_params(&self) -> usize {
        self.norm1.num_params()
            + self.attn.num_params()
            + self.norm2.num_params()
            + self.mlp.num_params()
    }
}

impl crate::growth::PreNormBlock for SwinBlock {
    type Norm = LayerNorm;
    /// The windowing to run with: a position runs its shared block with its own parity's.
    type Ctx<'a> = &'a BlockGeometry;

    fn norm1(&self) -> &LayerNorm {
        &self.norm1
    }

    fn norm2(&self) -> &LayerNorm {
        &self.norm2
    }

    fn attn(&self, x: Tensor<3>, g: &BlockGeometry) -> Tensor<3> {
        self.attend(x, g)
    }

    fn mlp(&self, x: Tensor<3>) -> Tensor<3> {
        self.mlp.forward(x)
    }

    fn export(&self, key: &str, out: &mut TensorSink) {
        SwinBlock::export(self, key, out)
    }

    fn num_params(&self) -> usize {
        SwinBlock::num_params(self)
    }
}

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
        let mut x = self.ends.embed(x);
        let mut position = 0;
        for (s, blocks) in self.stages.iter().enumerate() {
            x = self.ends.enter_stage(s, x);
            for block in blocks {
                x = block.forward_train(x, position, dp);
                position += 1;
            }
        }
        x
    }

    /// `[batch, chans, h, w]` → `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.ends
            .head(self.forward_features_train(x, &mut None), false)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::to_vec;

    /// The fused window attention on flex and the composed path other backends take agree,
    /// forward and backward, for qkv and for the bias (per-window groups and one shared group).
    #[test]
    fn fused_window_attention_matches_the_composed_path() {
        let device = Device::flex().autodiff();
        let (bw, n, d, h) = (6, 9, 12, 3);
        for groups in [3, 1] {
            let v = |len: usize, salt: usize| -> Vec<f32> {
                (0..len)
                    .map(|i| (((i * 7919 + salt * 131) % 997) as f32 / 498.0 - 1.0) * 1.5)
                    .collect()
            };
            let run = |fused: bool| {
                let qkv = Tensor::<3>::from_data(
                    TensorData::new(v(bw * n * 3 * d, 1), [bw, n, 3 * d]),
                    &device,
                )
                .require_grad();
                let bias = Tensor::<4>::from_data(
                    TensorData::new(v(groups * h * n * n, 2), [groups, h, n, n]),
                    &device,
                )
                .require_grad();
                let y = if fused {
                    crate::ops::window_attention(qkv.clone(), bias.clone(), h)
                } else {
                    attend_biased(qkv.clone(), bias.clone(), h)
                };
                let w =
                    Tensor::<3>::from_data(TensorData::new(v(bw * n * d, 3), [bw, n, d]), &device);
                let g = (y.clone() * w).sum().backward();
                (
                    to_vec(y),
                    to_vec(qkv.grad(&g).unwrap()),
                    to_vec(bias.grad(&g).unwrap()),
                )
            };
            let (a, b) = (run(true), run(false));
            let err = |x: &[f32], y: &[f32]| {
                x.iter()
                    .zip(y)
                    .map(|(p, q)| (p - q).abs() / q.abs().max(1.0))
                    .fold(0.0f32, f32::max)
            };
            assert!(err(&a.0, &b.0) < 1e-5, "forward {}", err(&a.0, &b.0));
            assert!(err(&a.1, &b.1) < 1e-4, "d qkv {}", err(&a.1, &b.1));
            assert!(err(&a.2, &b.2) < 1e-4, "d bias {}", err(&a.2, &b.2));
        }
    }

    /// timm's index for a 2×2 window (from `get_relative_position_index(2, 2)`).
    #[test]
    fn relative_index_matches_timm() {
        assert_eq!(
            relative_position_index(2, 2),
            vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }
}
