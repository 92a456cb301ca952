//! The autodiff side of the fused ops: each op's backward, recomputing from its inputs what
//! it needs rather than storing intermediates. Every op is wired the same way because burn's
//! autodiff API asks for it (prepare, then a tracked or untracked forward); the shapes repeat
//! by design.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, unary, Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, TensorMetadata};

use super::{ConvSpec, FusedOps};

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
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SiluBackward;

        impl<B: Backend + FusedOps> Backward<B, 1> for SiluBackward {
            type State = B::FloatTensorPrimitive;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let x = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    B::fused_silu_backward(x, g)
                });
            }
        }

        let (x, node) = x.into_parts();
        match SiluBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::fused_silu(x.clone());
                prep.finish(x, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_silu(x)),
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

    fn fused_conv2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ConvBackward;

        impl<B: Backend + FusedOps> Backward<B, 3> for ConvBackward {
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, ConvSpec);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (x, w, spec) = ops.state;
                let g = grads.consume::<B>(&ops.node);
                let (dx, dw, db) = B::fused_conv2d_backward(x, w, g, spec);
                for (parent, grad) in ops.parents.into_iter().zip([dx, dw, db]) {
                    if let Some(node) = parent {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let (x, x_node) = x.into_parts();
        let (w, w_node) = w.into_parts();
        let (b, b_node) = b.into_parts();
        match ConvBackward
            .prepare::<C>([x_node, w_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_conv2d(x.clone(), w.clone(), b, spec);
                prep.finish((x, w, spec), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_conv2d(x, w, b, spec)),
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
