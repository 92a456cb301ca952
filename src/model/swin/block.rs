//! The Swin block (timm's `SwinTransformerBlock`): window attention with the relative-position
//! bias, shifted windows on odd blocks with the region mask, and the MLP, as a pre-norm block.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::{StageGeometry, SwinConfig, SWIN_LN_EPS};
use crate::model::layers::{LayerNorm, Linear};
use crate::model::mlp::Mlp;
use crate::model::prenorm::PreNormBlock;
use crate::model::weights::{param, Init, TensorSink, WeightSource};

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

impl PreNormBlock for SwinBlock {
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

    fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        vec![
            ("attn.qkv", &mut self.attn.qkv),
            ("attn.proj", &mut self.attn.proj),
            ("mlp.fc1", &mut self.mlp.fc1),
            ("mlp.fc2", &mut self.mlp.fc2),
        ]
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
