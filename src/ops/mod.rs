//! Fused CPU kernels for the hot path, as a burn backend extension: the flex backend runs our
//! multi-threaded, vectorised kernels; autodiff gets a hand-written backward; every other backend
//! (CUDA, wgpu) falls back to burn's own ops through the trait's default bodies.
//!
//! Why: burn-flex runs elementwise ops on one thread with libm's scalar `erff`, so GELU alone
//! took longer than all four matmuls of a block (docs/PERFORMANCE.md).

mod adamw;
mod attention;
pub mod auto_precision;
mod autodiff;
pub mod blas;
mod causal_attention;
mod conv;
pub mod cpu;
mod cross_entropy;
mod gemm;
pub mod gemm_bf16;
pub mod gemm_f32;
mod gemm_tile;
pub mod gemv;
mod layer_norm;
pub mod math;
pub mod precision;
mod reference;

pub use precision::{autocast, Precision};

use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend};
use burn::tensor::Tensor;
use std::sync::Arc;

pub use adamw::AdamWStep;
pub use conv::ConvSpec;

/// The extension trait. Default bodies are burn's reference ops, so a backend without a fused
/// kernel computes exactly what burn would.
#[backend_extension(Flex, Autodiff, Cube: cfg(any(feature = "cuda", feature = "wgpu")))]
pub trait FusedOps: Backend {
    /// Exact (erf) GELU, as timm's `nn.GELU()`.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }
    /// `grad · GELU'(x)`, of the exact (erf) GELU. Not burn's `gelu_backward`: that one is the
    /// derivative of the tanh approximation, 1e-3 off the exact function's.
    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::gelu_backward::<Self>(x, grad)
    }
    /// SiLU, `x · σ(x)`: the gate of a Llama's SwiGLU MLP.
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::silu::<Self>(x)
    }
    /// `grad · SiLU'(x)` = `grad · σ(x) · (1 + x · (1 − σ(x)))`.
    fn fused_silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::silu_backward::<Self>(x, grad)
    }
    /// `lhs [.., m, k] · rhs [.., k, n]` of f32 tensors with an f32 result; with `bf16`, the
    /// products take bf16-rounded inputs and accumulate in f32 (what torch.autocast does to a
    /// matmul). Batched (rank > 2) only off flex, for attention.
    fn fused_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        reference::matmul::<Self>(lhs, rhs, bf16)
    }
    /// `x [m, k] · w [k, n] + b [n]` (the bias added in f32).
    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        reference::linear::<Self>(x, w, b, bf16)
    }
    // The flex-only ops below repeat one signature shape: each backend implements the trait's
    // signatures as written here (flex.rs, autodiff.rs), which Rust requires.
    /// timm's attention core on the fused qkv activation: `qkv [b, n, 3·d]` → `[b, n, d]`, the
    /// heads already merged (see `ops/attention.rs`). Only flex has it: `model::attention`
    /// takes burn's unfused path on other backends.
    fn fused_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        let _ = (qkv, heads);
        panic!("fused attention is implemented for the flex backend only")
    }
    /// Gradient of [`fused_attention`](Self::fused_attention) with respect to `qkv`.
    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let _ = (qkv, grad, heads);
        panic!("fused attention is implemented for the flex backend only")
    }
    /// Attention with an additive score bias, as Swin's windows need:
    /// `softmax(q kᵀ·scale + bias[i mod groups]) v` for batch item i, with `qkv [b, n, 3·d]`
    /// and `bias [groups, heads, n, n]` → `[b, n, d]`. Flex only, like `fused_attention`.
    fn fused_window_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let _ = (qkv, bias, heads);
        panic!("fused attention is implemented for the flex backend only")
    }
    /// Gradients of [`fused_window_attention`](Self::fused_window_attention) with respect to
    /// `qkv` and `bias`.
    fn fused_window_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let _ = (qkv, bias, grad, heads);
        panic!("fused attention is implemented for the flex backend only")
    }
    /// A language model's attention core: causal, grouped-query, scale head_dim^-½, with
    /// `q [b, heads, t, hd]`, `k` and `v [b, kv_heads, s, hd]` (s ≥ t; query i sees keys
    /// ..= s − t + i) → `[b, t, heads·hd]`, the heads merged. Flex only (see
    /// `ops/causal_attention.rs`); `LlamaAttention` composes it from tensor ops elsewhere.
    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let _ = (q, k, v);
        panic!("fused attention is implemented for the flex backend only")
    }
    /// Gradients of [`fused_causal_attention`](Self::fused_causal_attention) with respect to
    /// q, k and v.
    fn fused_causal_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let _ = (q, k, v, grad);
        panic!("fused attention is implemented for the flex backend only")
    }
    /// Each row's negative log-likelihood of its target: `logits [rows, vocab]` and one target
    /// per row → `[rows]` (`logsumexp(x) − x[target]`). Flex only (see `ops/cross_entropy.rs`);
    /// `train::lm` composes it from `log_softmax` and `gather` elsewhere.
    fn fused_nll(logits: FloatTensor<Self>, targets: Arc<[u32]>) -> FloatTensor<Self> {
        let _ = (logits, targets);
        panic!("the fused loss is implemented for the flex backend only")
    }
    /// Gradient of [`fused_nll`](Self::fused_nll) with respect to the logits, given the rows'
    /// gradient `grad [rows]`.
    fn fused_nll_backward(
        logits: FloatTensor<Self>,
        targets: Arc<[u32]>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let _ = (logits, targets, grad);
        panic!("the fused loss is implemented for the flex backend only")
    }
    /// One AdamW update of a flattened f32 parameter `w` with gradient `g` and moments `m`, `v`
    /// (inner tensors, no autodiff) → the new `(w, m, v)`. Flex only (see `ops/adamw.rs`);
    /// `train::optim` composes it from tensor ops elsewhere.
    fn fused_adamw(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let _ = (w, g, m, v, step);
        panic!("the fused AdamW update is implemented for the flex backend only")
    }
    /// `x [n, c, h, w]` ⊛ `w [co, c, k, k]` + `b [co]` → `[n, co, ho, wo]` (torch's
    /// `conv2d`, no dilation or groups). `spec.bf16` is for flex's kernel: elsewhere the
    /// convolution is burn's, in f32.
    fn fused_conv2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        reference::conv2d::<Self>(x, w, b, spec)
    }
    /// Gradients of [`fused_conv2d`](Self::fused_conv2d) with respect to x, w and b, given the
    /// output's gradient.
    fn fused_conv2d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference::conv2d_backward::<Self>(x, w, grad, spec)
    }
    /// Column sums: `[m, n] → [n]` (a bias gradient).
    fn sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::sum_rows::<Self>(x)
    }
    /// LayerNorm over the last dimension with weight γ and bias β (torch's, biased variance).
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, Some(beta), eps)
    }
    /// Gradients of [`fused_layer_norm`](Self::fused_layer_norm) with respect to x, γ and β.
    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference::layer_norm_backward::<Self>(x, gamma, grad, eps)
    }
}

/// burn's CubeCL matmul runs f32 inputs through TF32 tensor cores (10-bit mantissa, ~1e-3
/// relative error) wherever a CUDA GPU has them, and nothing in burn 0.22 turns that off. f32
/// here means f32 as PyTorch means it, so f32 products on CUDA take the split path instead;
/// bf16 keeps the tensor cores as they are. wgpu's f32 product is plain f32 (WGSL has no TF32,
/// nor the bf16 type the split casts through), so it runs as it is there. CUDA-only, then: CI's
/// wgpu checks (tests/wgpu.rs) never reach the split; `selfcheck --device cuda` checks it.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn tf32_rounds(t: &FloatTensor<burn::backend::Cube>) -> bool {
    use burn::backend::TensorMetadata;
    matches!(t.device(), burn::backend::CubeDevice::Cuda(_))
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
impl FusedOps for burn::backend::Cube {
    fn fused_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        if bf16 {
            reference::matmul::<Self>(lhs, rhs, true)
        } else if tf32_rounds(&lhs) {
            reference::matmul_split::<Self>(lhs, rhs)
        } else {
            <Self as burn::backend::ops::FloatTensorOps<Self>>::float_matmul(lhs, rhs)
        }
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        reference::add_bias::<Self>(Self::fused_matmul(x, w, bf16), b)
    }
}

pub(crate) use reference::{
    linear as reference_linear, matmul as reference_matmul, sum_rows as reference_sum_rows,
};

mod flex;

fn bf16_active() -> bool {
    precision::active() == Precision::Bf16
}

/// `lhs [.., m, k] · rhs [.., k, n]`, in bf16 under [`autocast`]`(Bf16)`, else in f32. Flex
/// runs its own kernel on 2-D operands; batches go through burn's matmul there.
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_matmul(
        lhs.into_dispatch(),
        rhs.into_dispatch(),
        bf16_active(),
    ))
}

/// `x [.., k] · w [k, n] + b` over all leading dimensions as one 2-D product, in bf16 under
/// [`autocast`]`(Bf16)`, else in f32. On flex the bias is the GEMM's starting value and every
/// pass is multi-threaded; on GPUs f32 products are f32-exact (see `reference::matmul_split`).
pub fn linear<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<D> {
    let mut dims = x.dims();
    let k = dims[D - 1];
    let rows = dims.iter().product::<usize>() / k.max(1);
    dims[D - 1] = w.dims()[1];
    let x = x.reshape([rows, k]);
    let y = match b {
        None => matmul(x, w),
        Some(b) => Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_linear(
            x.into_dispatch(),
            w.into_dispatch(),
            b.into_dispatch(),
            bf16_active(),
        )),
    };
    y.reshape(dims)
}

/// Multi-head attention core on a fused qkv activation `[b, n, 3·d]` → `[b, n, d]` (timm's
/// channel layout, scale head_dim^-½). Flex only; check the device before calling.
pub fn attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_attention(
        qkv.into_dispatch(),
        heads,
    ))
}

/// [`attention`] with an additive score bias `[groups, heads, n, n]` (batch item i takes group
/// i mod groups): Swin's relative-position bias and shifted-window mask. Flex only.
pub fn window_attention(qkv: Tensor<3>, bias: Tensor<4>, heads: usize) -> Tensor<3> {
    Tensor::from_dispatch(
        <burn::backend::Dispatch as FusedOps>::fused_window_attention(
            qkv.into_dispatch(),
            bias.into_dispatch(),
            heads,
        ),
    )
}

/// A language model's attention core, causal and grouped-query: `q [b, heads, t, hd]`, `k`
/// and `v [b, kv_heads, s, hd]` (s ≥ t: the cached keys, then the new tokens') → `[b, t,
/// heads·hd]`. Flex only; check the device before calling.
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<3> {
    Tensor::from_dispatch(
        <burn::backend::Dispatch as FusedOps>::fused_causal_attention(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
        ),
    )
}

/// Each row's negative log-likelihood of its target, `logits [rows, vocab]` → `[rows]`, in one
/// fused pass forward and backward. Flex only; check the device before calling.
pub fn nll(logits: Tensor<2>, targets: Arc<[u32]>) -> Tensor<1> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_nll(
        logits.into_dispatch(),
        targets,
    ))
}

/// `x [n, c, h, w]` ⊛ `w [co, c, k, k]` (+ `b`) with `stride` and `pad` on both axes, as
/// torch's `conv2d`; in bf16 under [`autocast`]`(Bf16)` on flex, whose products are our GEMM's.
pub fn conv2d(
    x: Tensor<4>,
    w: Tensor<4>,
    b: Option<Tensor<1>>,
    stride: usize,
    pad: usize,
) -> Tensor<4> {
    let b = b.unwrap_or_else(|| Tensor::zeros([w.dims()[0]], &w.device()));
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_conv2d(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        ConvSpec {
            stride,
            pad,
            bf16: bf16_active(),
        },
    ))
}

/// One AdamW update of a flattened parameter, in one pass and in place where the tensors are
/// not shared: `(w, m, v)` after the step. Flex only; check the device before calling.
pub fn adamw(
    w: Tensor<1>,
    g: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    step: AdamWStep,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (w, m, v) = <burn::backend::Dispatch as FusedOps>::fused_adamw(
        w.into_dispatch(),
        g.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        step,
    );
    (
        Tensor::from_dispatch(w),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// LayerNorm over the last dimension (weight γ, bias β), one fused pass forward and backward
/// where the backend has the kernel.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    ))
}

/// GELU (erf form) through the fused kernel where the backend has one.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_gelu(
        x.into_dispatch(),
    ))
}

/// SiLU through the fused kernel where the backend has one. burn's own is `x · sigmoid(x)`
/// with sigmoid as `exp(−log(1 + exp(−x)))`: three passes of libm's scalar exp and log, and
/// as many again in the backward (13% of a tiny Llama's training step, docs/PERFORMANCE.md).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_silu(
        x.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use crate::model::weights::to_vec;

    /// The split product on flex (whose matmul is plain f32) is the plain product to f32's
    /// rounding: the split itself loses nothing. (The TF32 rounding it is built for is the
    /// GPU's; `scalenet selfcheck --device cuda:0` checks that.)
    #[test]
    fn split_matmul_is_an_f32_product() {
        let device = Device::flex();
        let v = |n: usize, salt: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.0 - 1.0) * 3.7)
                .collect()
        };
        let a = Tensor::<2>::from_data(TensorData::new(v(37 * 53, 1), [37, 53]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(v(53 * 29, 2), [53, 29]), &device);
        let want = to_vec(a.clone().matmul(b.clone()));
        let got = to_vec(Tensor::<2>::from_dispatch(
            super::reference::matmul_split::<burn::backend::Dispatch>(
                a.into_dispatch(),
                b.into_dispatch(),
            ),
        ));
        let err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(err < 2e-5, "{err}");
    }

    /// Flex's SiLU and its derivative against f64, and the reference (what other backends
    /// run) against flex, over the range where σ saturates both ways.
    #[test]
    fn silu_and_its_derivative_match_f64_and_the_reference() {
        let device = Device::flex();
        let xs: Vec<f32> = (0..1000).map(|i| -50.0 + i as f32 * 0.1).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [40, 25]), &device);
        let g = Tensor::<2>::from_data(TensorData::new(vec![0.7f32; 1000], [40, 25]), &device);
        use super::FusedOps;
        type D = burn::backend::Dispatch;
        let run = |f: &dyn Fn(_, _) -> _| {
            to_vec(Tensor::<2>::from_dispatch(f(
                x.clone().into_dispatch(),
                g.clone().into_dispatch(),
            )))
        };
        let fwd = run(&|x, _| D::fused_silu(x));
        let bwd = run(&|x, g| D::fused_silu_backward(x, g));
        let fwd_ref = run(&|x, _| super::reference::silu::<D>(x));
        let bwd_ref = run(&|x, g| super::reference::silu_backward::<D>(x, g));
        for (i, &v) in xs.iter().enumerate() {
            let v = v as f64;
            let s = 1.0 / (1.0 + (-v).exp());
            let (f, d) = (v * s, 0.7 * s * (1.0 + v * (1.0 - s)));
            let tol = |w: f64| 1e-6 * w.abs().max(1.0);
            assert!(
                (fwd[i] as f64 - f).abs() < tol(f),
                "silu({v}) {} vs {f}",
                fwd[i]
            );
            assert!(
                (bwd[i] as f64 - d).abs() < tol(d),
                "silu'({v}) {} vs {d}",
                bwd[i]
            );
            assert!(
                (fwd_ref[i] - fwd[i]).abs() < 1e-5 * fwd[i].abs().max(1.0),
                "reference silu({v})"
            );
            assert!((bwd_ref[i] - bwd[i]).abs() < 1e-5, "reference silu'({v})");
        }
    }

    /// The exact GELU derivative that GPUs use against flex's kernel (tested against finite
    /// differences in tests/ops.rs).
    #[test]
    fn reference_gelu_backward_is_the_exact_derivative() {
        let device = Device::flex();
        let x: Vec<f32> = (0..400).map(|i| -8.0 + i as f32 * 0.04).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [20, 20]), &device);
        let g = Tensor::<2>::ones([20, 20], &device);
        use super::FusedOps;
        type D = burn::backend::Dispatch;
        let want = to_vec(Tensor::<2>::from_dispatch(D::fused_gelu_backward(
            x.clone().into_dispatch(),
            g.clone().into_dispatch(),
        )));
        let got = to_vec(Tensor::<2>::from_dispatch(
            super::reference::gelu_backward::<D>(x.into_dispatch(), g.into_dispatch()),
        ));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "{err}");
    }
}
