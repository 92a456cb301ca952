//! Fused CPU kernels for the hot path, as a burn backend extension: the flex backend runs our
//! multi-threaded, vectorised kernels; autodiff gets a hand-written backward; every other backend
//! (CUDA, wgpu) falls back to burn's own ops through the trait's default bodies.
//!
//! Why: burn-flex runs elementwise ops on one thread with libm's scalar `erff`, so GELU alone
//! took longer than all four matmuls of a block (docs/PERFORMANCE.md).

mod adamw;
mod attention;
pub mod auto_precision;
pub mod blas;
mod causal_attention;
mod cross_entropy;
pub mod gemm_bf16;
pub mod gemm_f32;
pub mod gemv;
mod layer_norm;
pub mod math;
pub mod precision;

pub use precision::{autocast, Precision};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, unary, Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, TensorMetadata};
use burn::tensor::Tensor;
use std::sync::Arc;

pub use adamw::AdamWStep;

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
/// relative error) wherever the GPU has them, and nothing in burn 0.22 turns that off. f32 here
/// means f32 as PyTorch means it, so f32 products take the split path instead; bf16 keeps the
/// tensor cores as they are.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
impl FusedOps for burn::backend::Cube {
    fn fused_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        if bf16 {
            reference::matmul::<Self>(lhs, rhs, true)
        } else {
            reference::matmul_split::<Self>(lhs, rhs)
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

/// The ops composed from burn's own: the trait's default bodies, and flex's fallback where an
/// input does not fit its kernels (not f32, not 2-D, no AVX512-BF16).
mod reference {
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, Shape, TensorMetadata};
    use burn::tensor::FloatDType;

    pub fn matmul<B: Backend>(
        lhs: FloatTensor<B>,
        rhs: FloatTensor<B>,
        bf16: bool,
    ) -> FloatTensor<B> {
        if !bf16 {
            return B::float_matmul(lhs, rhs);
        }
        let lhs = B::float_cast(lhs, FloatDType::BF16);
        let rhs = B::float_cast(rhs, FloatDType::BF16);
        B::float_cast(B::float_matmul(lhs, rhs), FloatDType::F32)
    }

    /// An f32 product from a matmul that rounds its f32 inputs to TF32 (10-bit mantissa): each
    /// operand splits into a bf16-exact high part (exact in TF32 too) and the rest, and the four
    /// partial products accumulate in f32. What is lost is the TF32 rounding of the rest
    /// (2⁻¹¹ of a part that is at most 2⁻⁹ of the operand: ~1e-6 relative, f32's own
    /// accumulation error). Four matmuls on the tensor cores still cost less than one in plain
    /// f32 on GPUs whose TF32 rate is 7x their f32 rate (H100/H200). Three would leave lo·lo
    /// out, 2⁻¹⁸ per term: measured 1.3e-4 relative on a 53-long product, too much.
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu", test)), allow(dead_code))]
    pub fn matmul_split<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>) -> FloatTensor<B> {
        let split = |x: FloatTensor<B>| {
            let hi = B::float_cast(B::float_cast(x.clone(), FloatDType::BF16), FloatDType::F32);
            (hi.clone(), B::float_sub(x, hi))
        };
        let (lhs_hi, lhs_lo) = split(lhs);
        let (rhs_hi, rhs_lo) = split(rhs);
        // Smallest terms first, so that they are not lost against the largest.
        let out = B::float_matmul(lhs_lo.clone(), rhs_lo.clone());
        let out = B::float_add(out, B::float_matmul(lhs_hi.clone(), rhs_lo));
        let out = B::float_add(out, B::float_matmul(lhs_lo, rhs_hi.clone()));
        B::float_add(out, B::float_matmul(lhs_hi, rhs_hi))
    }

    /// `grad · (Φ(x) + x·φ(x))`: the exact GELU's derivative.
    pub fn gelu_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
        let cdf = B::float_mul_scalar(
            B::float_add_scalar(
                B::float_erf(B::float_mul_scalar(
                    x.clone(),
                    std::f32::consts::FRAC_1_SQRT_2.into(),
                )),
                1.0.into(),
            ),
            0.5.into(),
        );
        // φ(x) = exp(-x²/2) / √(2π)
        let x2 = B::float_mul(x.clone(), x.clone());
        let pdf = B::float_mul_scalar(
            B::float_exp(B::float_mul_scalar(x2, (-0.5).into())),
            (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2).into(),
        );
        B::float_mul(B::float_add(cdf, B::float_mul(x, pdf)), grad)
    }

    pub fn linear<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
        bf16: bool,
    ) -> FloatTensor<B> {
        add_bias::<B>(matmul::<B>(x, w, bf16), b)
    }

    /// `y [m, n] + b [n]`, row by row.
    pub fn add_bias<B: Backend>(y: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
        let n = b.shape()[0];
        B::float_add(y, B::float_reshape(b, Shape::new([1, n])))
    }

    pub fn sum_rows<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
        let n = x.shape()[1];
        B::float_reshape(B::float_sum_dim(x, 0), Shape::new([n]))
    }

    /// dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)) with ĝ = grad · γ; dγ = Σ grad · x̂;
    /// dβ = Σ grad (sums over every row).
    pub fn layer_norm_backward<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        grad: FloatTensor<B>,
        eps: f64,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let rows = shape.num_elements() / d.max(1);
        let x = B::float_reshape(x, Shape::new([rows, d]));
        let grad = B::float_reshape(grad, Shape::new([rows, d]));
        let mean = B::float_mean_dim(x.clone(), 1);
        let xc = B::float_sub(x, mean);
        let var = B::float_mean_dim(B::float_mul(xc.clone(), xc.clone()), 1);
        let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, eps.into())));
        let xhat = B::float_mul(xc, rstd.clone());
        let gh = B::float_mul(grad.clone(), B::float_reshape(gamma, Shape::new([1, d])));
        let a = B::float_mean_dim(gh.clone(), 1);
        let b = B::float_mean_dim(B::float_mul(gh.clone(), xhat.clone()), 1);
        let dx = B::float_mul(
            rstd,
            B::float_sub(B::float_sub(gh, a), B::float_mul(xhat.clone(), b)),
        );
        let dgamma = sum_rows::<B>(B::float_mul(grad.clone(), xhat));
        let dbeta = sum_rows::<B>(grad);
        (B::float_reshape(dx, shape), dgamma, dbeta)
    }
}

pub(crate) use reference::{
    linear as reference_linear, matmul as reference_matmul, sum_rows as reference_sum_rows,
};

mod flex;

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    /// x, γ and β are the op's parents; the backward recomputes the row statistics from x
    /// rather than storing them.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LayerNormBackward;

        impl<B: Backend + FusedOps> Backward<B, 3> for LayerNormBackward {
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (x, gamma, eps) = ops.state;
                let [px, pg, pb] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (dx, dgamma, dbeta) = B::fused_layer_norm_backward(x, gamma, g, eps);
                if let Some(node) = px {
                    grads.register::<B>(node.id, dx);
                }
                if let Some(node) = pg {
                    grads.register::<B>(node.id, dgamma);
                }
                if let Some(node) = pb {
                    grads.register::<B>(node.id, dbeta);
                }
            }
        }

        let (x, x_node) = x.into_parts();
        let (gamma, g_node) = gamma.into_parts();
        let (beta, b_node) = beta.into_parts();
        match LayerNormBackward
            .prepare::<C>([x_node, g_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_layer_norm(x.clone(), gamma.clone(), beta, eps);
                prep.finish((x, gamma, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_layer_norm(x, gamma, beta, eps)),
        }
    }
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GeluBackward;

        impl<B: Backend + FusedOps> Backward<B, 1> for GeluBackward {
            type State = B::FloatTensorPrimitive;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let x = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    B::fused_gelu_backward(x, g)
                });
            }
        }

        let (x, node) = x.into_parts();
        match GeluBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::fused_gelu(x.clone());
                prep.finish(x, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_gelu(x)),
        }
    }
    fn fused_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MatmulBackward;

        impl<B: Backend + FusedOps> Backward<B, 2> for MatmulBackward {
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, bool);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (lhs, rhs, bf16) = ops.state;
                // d lhs = g · rhsᵀ, d rhs = lhsᵀ · g (transposing the last two dims): transposes
                // are views, the kernels read them through their strides.
                let t = |x: B::FloatTensorPrimitive| {
                    let r = x.shape().num_dims();
                    B::float_swap_dims(x, r - 2, r - 1)
                };
                binary::<B, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |g| B::fused_matmul(g, t(rhs), bf16),
                    |g| B::fused_matmul(t(lhs), g, bf16),
                );
            }
        }

        let (lhs, lhs_node) = lhs.into_parts();
        let (rhs, rhs_node) = rhs.into_parts();
        match MatmulBackward
            .prepare::<C>([lhs_node, rhs_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_matmul(lhs.clone(), rhs.clone(), bf16);
                prep.finish((lhs, rhs, bf16), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_matmul(lhs, rhs, bf16)),
        }
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LinearBackward;

        impl<B: Backend + FusedOps> Backward<B, 3> for LinearBackward {
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, bool);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (x, w, bf16) = ops.state;
                let [px, pw, pb] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                if let Some(node) = pw {
                    let gw = B::fused_matmul(B::float_swap_dims(x, 0, 1), g.clone(), bf16);
                    grads.register::<B>(node.id, gw);
                }
                if let Some(node) = pb {
                    grads.register::<B>(node.id, B::sum_rows(g.clone()));
                }
                if let Some(node) = px {
                    let gx = B::fused_matmul(g, B::float_swap_dims(w, 0, 1), bf16);
                    grads.register::<B>(node.id, gx);
                }
            }
        }

        let (x, x_node) = x.into_parts();
        let (w, w_node) = w.into_parts();
        let (b, b_node) = b.into_parts();
        match LinearBackward
            .prepare::<C>([x_node, w_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_linear(x.clone(), w.clone(), b, bf16);
                prep.finish((x, w, bf16), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_linear(x, w, b, bf16)),
        }
    }

    fn fused_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionBackward;

        impl<B: Backend + FusedOps> Backward<B, 1> for AttentionBackward {
            type State = (B::FloatTensorPrimitive, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (qkv, heads) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    B::fused_attention_backward(qkv, g, heads)
                });
            }
        }

        let (qkv, node) = qkv.into_parts();
        match AttentionBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_attention(qkv.clone(), heads);
                prep.finish((qkv, heads), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention(qkv, heads)),
        }
    }

    fn fused_window_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct WindowAttentionBackward;

        impl<B: Backend + FusedOps> Backward<B, 2> for WindowAttentionBackward {
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (qkv, bias, heads) = ops.state;
                let [pq, pb] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (dqkv, dbias) = B::fused_window_attention_backward(qkv, bias, g, heads);
                if let Some(node) = pq {
                    grads.register::<B>(node.id, dqkv);
                }
                if let Some(node) = pb {
                    grads.register::<B>(node.id, dbias);
                }
            }
        }

        let (qkv, q_node) = qkv.into_parts();
        let (bias, b_node) = bias.into_parts();
        match WindowAttentionBackward
            .prepare::<C>([q_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_window_attention(qkv.clone(), bias.clone(), heads);
                prep.finish((qkv, bias, heads), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_window_attention(qkv, bias, heads)),
        }
    }

    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct CausalAttentionBackward;

        impl<B: Backend + FusedOps> Backward<B, 3> for CausalAttentionBackward {
            type State = (
                B::FloatTensorPrimitive,
                B::FloatTensorPrimitive,
                B::FloatTensorPrimitive,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (q, k, v) = ops.state;
                let g = grads.consume::<B>(&ops.node);
                let (dq, dk, dv) = B::fused_causal_attention_backward(q, k, v, g);
                for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(node) = parent {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let (q, q_node) = q.into_parts();
        let (k, k_node) = k.into_parts();
        let (v, v_node) = v.into_parts();
        match CausalAttentionBackward
            .prepare::<C>([q_node, k_node, v_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_causal_attention(q.clone(), k.clone(), v.clone());
                prep.finish((q, k, v), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_causal_attention(q, k, v)),
        }
    }

    fn fused_nll(logits: FloatTensor<Self>, targets: Arc<[u32]>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct NllBackward;

        impl<B: Backend + FusedOps> Backward<B, 1> for NllBackward {
            type State = (B::FloatTensorPrimitive, Arc<[u32]>);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (logits, targets) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    B::fused_nll_backward(logits, targets, g)
                });
            }
        }

        let (logits, node) = logits.into_parts();
        match NllBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::fused_nll(logits.clone(), targets.clone());
                prep.finish((logits, targets), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_nll(logits, targets)),
        }
    }
}

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
