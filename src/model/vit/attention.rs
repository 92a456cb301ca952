//! Multi-head self-attention with a fused `qkv` projection, as timm's `Attention`.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

use crate::model::layers::Linear;
use crate::model::weights::{TensorSink, WeightSource};
use crate::ops::precision::{lower, raise};

#[derive(Module, Debug)]
pub struct Attention {
    /// `[d, 3d]`: q, k, v for all heads, in that order (timm's layout).
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
}

impl Attention {
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        dim: usize,
        num_heads: usize,
        qkv_bias: bool,
        device: &Device,
    ) -> Self {
        Self {
            qkv: Linear::new(
                src,
                &format!("{key}.qkv"),
                dim,
                3 * dim,
                qkv_bias,
                Linear::timm_init(),
                device,
            ),
            proj: Linear::new(
                src,
                &format!("{key}.proj"),
                dim,
                dim,
                true,
                Linear::timm_init(),
                device,
            ),
            num_heads,
        }
    }

    /// `[batch, tokens, dim]` → `[batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.proj
            .forward(attend(self.qkv.forward(x), self.num_heads))
    }

    /// The forward for the first `keep` tokens only: every token is a key and a value, the
    /// first `keep` query. `[batch, tokens, dim]` → `[batch, keep, dim]`.
    pub fn forward_queries(&self, x: Tensor<3>, keep: usize) -> Tensor<3> {
        self.proj
            .forward(attend_queries(self.qkv.forward(x), self.num_heads, keep))
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.qkv.export(&format!("{key}.qkv"), out);
        self.proj.export(&format!("{key}.proj"), out);
    }

    pub fn num_params(&self) -> usize {
        self.qkv.num_params() + self.proj.num_params()
    }
}

/// The attention core: the fused activation `qkv [batch, tokens, 3·dim]` (timm's channel order:
/// q, k, v, each head-major) → the heads merged, `[batch, tokens, dim]`, scale head_dim^-½.
pub fn attend(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    // On flex our fused kernel reads q, k and v where the qkv product left them and writes
    // the heads merged: no permute, slice or copy, forward or backward. It stays f32 under
    // bf16 autocast (flex has no bf16 attention worth using).
    if qkv.device() == Device::flex() {
        return crate::ops::attention(qkv, heads);
    }
    attend_composed(qkv, heads)
}

/// [`attend`] for the first `keep` tokens' queries: `[batch, tokens, 3·dim]` → `[batch, keep,
/// dim]`. Composed from tensor ops: with a few queries the products are small.
fn attend_queries(qkv: Tensor<3>, heads: usize, keep: usize) -> Tensor<3> {
    let [b, n, d3] = qkv.dims();
    let (d, h) = (d3 / 3, heads);
    let hd = d / h;
    // [batch, heads, tokens, head_dim]
    let part = |i: usize, tokens: usize| {
        qkv.clone()
            .slice([0..b, 0..tokens, i * d..(i + 1) * d])
            .reshape([b, tokens, h, hd])
            .swap_dims(1, 2)
    };
    let scale = (hd as f64).powf(-0.5);
    let scores = crate::ops::matmul(part(0, keep), part(1, n).swap_dims(2, 3)) * scale;
    let out = crate::ops::matmul(softmax(scores, 3), part(2, n));
    out.swap_dims(1, 2).reshape([b, keep, d])
}

/// [`attend`] composed from tensor ops, for backends without a fused kernel.
fn attend_composed(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, n, d3] = qkv.dims();
    let (d, h) = (d3 / 3, heads);
    let hd = d / h;
    // [3, batch, heads, tokens, head_dim]
    let qkv = qkv.reshape([b, n, 3, h, hd]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().slice(i..i + 1).reshape([b, h, n, hd]);
    let out = if crate::ops::precision::active() == crate::ops::Precision::F32 {
        // burn's fused attention on GPUs runs its products in TF32 (1e-3 off); in f32 the
        // products take our f32-exact matmul, as the Linear layers do.
        let scale = (hd as f64).powf(-0.5);
        let scores = crate::ops::matmul(part(0), part(1).swap_dims(2, 3)) * scale;
        crate::ops::matmul(softmax(scores, 3), part(2))
    } else {
        let (q, k, v) = (lower(part(0)), lower(part(1)), lower(part(2)));
        // scale = head_dim^-0.5 (timm's default), applied by the op when `scale` is None.
        let options = AttentionModuleOptions::default();
        raise(attention(q, k, v, None, None, options))
    };
    // [batch, tokens, heads * head_dim]
    out.swap_dims(1, 2).reshape([b, n, d])
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use crate::model::weights::to_vec;

    /// The composed path that GPUs take computes what flex's fused kernel computes, forward and
    /// backward (checked here on the CPU, where both exist).
    #[test]
    fn composed_attention_matches_the_fused_kernel() {
        let device = Device::flex().autodiff();
        let (b, n, d, h) = (2, 11, 24, 3);
        let v: Vec<f32> = (0..b * n * 3 * d)
            .map(|i| ((i * 7919 % 997) as f32 / 498.0 - 1.0) * 1.5)
            .collect();
        let run = |f: fn(Tensor<3>, usize) -> Tensor<3>| {
            let x = Tensor::<3>::from_data(TensorData::new(v.clone(), [b, n, 3 * d]), &device)
                .require_grad();
            let y = f(x.clone(), h);
            let w = Tensor::<3>::from_data(
                TensorData::new(
                    (0..b * n * d).map(|i| (i % 7) as f32 - 3.0).collect(),
                    [b, n, d],
                ),
                &device,
            );
            let g = (y.clone() * w).sum().backward();
            (to_vec(y), to_vec(x.grad(&g).unwrap()))
        };
        let (y1, g1) = run(super::attend);
        let (y2, g2) = run(super::attend_composed);
        let err = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
                .fold(0.0f32, f32::max)
        };
        assert!(err(&y1, &y2) < 1e-5, "forward {}", err(&y1, &y2));
        assert!(err(&g1, &g2) < 1e-4, "backward {}", err(&g1, &g2));
    }
}
