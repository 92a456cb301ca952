//! The ops composed from burn's own: the trait's default bodies, and flex's fallback where an
//! input does not fit its kernels (not f32, not 2-D, no AVX512-BF16).

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Shape, TensorMetadata};
use burn::tensor::FloatDType;

pub fn matmul<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>, bf16: bool) -> FloatTensor<B> {
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

/// `x · σ(x)`.
pub fn silu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(x.clone(), B::sigmoid(x))
}

/// `grad · σ(x) · (1 + x · (1 − σ(x)))`: SiLU's derivative.
pub fn silu_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(x.clone());
    let one_minus = B::float_add_scalar(B::float_neg(s.clone()), 1.0.into());
    let inner = B::float_add_scalar(B::float_mul(x, one_minus), 1.0.into());
    B::float_mul(B::float_mul(s, inner), grad)
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

fn conv_options(spec: super::ConvSpec) -> burn::tensor::ops::ConvOptions<2> {
    let (s, p) = (spec.stride, spec.pad);
    burn::tensor::ops::ConvOptions::new([s, s], [p, p], [1, 1], 1)
}

/// burn's convolution, in f32 whatever `spec.bf16` says.
pub fn conv2d<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    b: FloatTensor<B>,
    spec: super::ConvSpec,
) -> FloatTensor<B> {
    B::conv2d(x, w, Some(b), conv_options(spec))
}

/// burn's gradients of [`conv2d`]: x's, w's and the bias's (the output's sum per channel).
pub fn conv2d_backward<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    grad: FloatTensor<B>,
    spec: super::ConvSpec,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let opts = conv_options(spec);
    let co = w.shape()[0];
    let dx = B::conv2d_x_backward(x.clone(), w.clone(), grad.clone(), opts.clone());
    let dw = B::conv2d_weight_backward(x, w, grad.clone(), opts);
    let db = B::float_sum_dim(B::float_sum_dim(B::float_sum_dim(grad, 3), 2), 0);
    (dx, dw, B::float_reshape(db, Shape::new([co])))
}
