//! Fused CPU kernels for the hot path, as a burn backend extension: the flex backend runs our
//! multi-threaded, vectorised kernels; autodiff gets a hand-written backward; every other backend
//! (CUDA, wgpu) falls back to burn's own ops through the trait's default bodies.
//!
//! Why: burn-flex runs elementwise ops on one thread with libm's scalar `erff`, so GELU alone
//! took longer than all four matmuls of a block (docs/PERFORMANCE.md).

pub mod gemm_bf16;
pub mod math;
pub mod precision;

pub use precision::{autocast, Precision};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, unary, Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend};
use burn::tensor::{FloatDType, Tensor};

/// The extension trait. Default bodies are burn's reference ops, so a backend without a fused
/// kernel computes exactly what burn would.
#[backend_extension(Flex, Autodiff, Cube: cfg(any(feature = "cuda", feature = "wgpu")))]
pub trait FusedOps: Backend {
    /// Exact (erf) GELU, as timm's `nn.GELU()`.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }
    /// `grad · GELU'(x)`.
    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }
    /// `lhs [m, k] · rhs [k, n]` of f32 matrices, computed in bf16 with f32 accumulation and an
    /// f32 result (what torch.autocast does to a matmul).
    fn matmul_bf16(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let lhs = Self::float_cast(lhs, FloatDType::BF16);
        let rhs = Self::float_cast(rhs, FloatDType::BF16);
        Self::float_cast(Self::float_matmul(lhs, rhs), FloatDType::F32)
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
impl FusedOps for burn::backend::Cube {}

mod flex;

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
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
    fn matmul_bf16(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MatmulBackward;

        impl<B: Backend + FusedOps> Backward<B, 2> for MatmulBackward {
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (lhs, rhs) = ops.state;
                // d lhs = g · rhsᵀ, d rhs = lhsᵀ · g: transposes are views, the kernel reads
                // them through their strides.
                binary::<B, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |g| B::matmul_bf16(g, B::float_swap_dims(rhs, 0, 1)),
                    |g| B::matmul_bf16(B::float_swap_dims(lhs, 0, 1), g),
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
                let out = B::matmul_bf16(lhs.clone(), rhs.clone());
                prep.finish((lhs, rhs), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::matmul_bf16(lhs, rhs)),
        }
    }
}

/// `lhs · rhs` (2-D, f32 in and out) in bf16 with f32 accumulation.
pub fn matmul_bf16(lhs: Tensor<2>, rhs: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::matmul_bf16(
        lhs.into_dispatch(),
        rhs.into_dispatch(),
    ))
}

/// GELU (erf form) through the fused kernel where the backend has one.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_gelu(
        x.into_dispatch(),
    ))
}
