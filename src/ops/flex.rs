//! The flex (CPU) kernels: contiguous f32, split across rayon's pool in chunks big enough to
//! amortise the fork, with inner loops the compiler vectorises.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::{DType, TensorData};
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv::{self, ConvDims};
use super::gemm::cpu_gemm;
use super::gemm_tile::Product;
use super::math::{at_simd_level, erf, exp_neg, sigmoid, simd_level};
use super::{
    adamw, attention, causal_attention, cross_entropy, gemm_bf16, gemm_f32, gemv, layer_norm,
    ConvSpec,
};
use super::{reference_linear, reference_matmul, reference_sum_rows, FusedOps};
use std::sync::Arc;

/// A product's operand for the fallback: with `bf16`, rounded to bf16 and back, so that the
/// product (in f32) takes bf16 inputs and accumulates in f32 as our bf16 kernel does. burn's
/// own bf16 matmul would round the result to bf16 as well, a CPU without AVX512-BF16 then
/// computing something else than one with it.
fn rounded(x: FloatTensor<Flex>, bf16: bool) -> FloatTensor<Flex> {
    use burn::backend::ops::FloatTensorOps;
    use burn::tensor::FloatDType;
    if !bf16 {
        return x;
    }
    let x = <Flex as FloatTensorOps<Flex>>::float_cast(x, FloatDType::BF16);
    <Flex as FloatTensorOps<Flex>>::float_cast(x, FloatDType::F32)
}

/// Elements per rayon task: ~64 KiB of f32, several per core even for small activations.
const CHUNK: usize = 16 * 1024;

fn contiguous_f32(t: &FlexTensor) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 {
        return None;
    }
    Some(if t.is_contiguous() && t.layout().start_offset() == 0 {
        t.clone()
    } else {
        t.to_contiguous()
    })
}

// Outputs are uninitialised buffers the loops fill: zero-filling them first was a serial pass
// on the calling thread. The loops run under `at_simd_level!`: GELU's erf is a rational
// polynomial, compute-bound, so the width shows (GELU forward and backward were ~12% of a
// training step on the Xeon at 8 lanes).
#[inline(always)]
fn loop1(o: &mut [MaybeUninit<f32>], a: &[f32], f: &impl Fn(f32) -> f32) {
    for (o, &a) in o.iter_mut().zip(a) {
        o.write(f(a));
    }
}

#[inline(always)]
fn loop2(o: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
        o.write(f(a, b));
    }
}

/// [`loop1`] in place.
#[inline(always)]
fn apply1(v: &mut [f32], f: &impl Fn(f32) -> f32) {
    for v in v {
        *v = f(*v);
    }
}

/// [`loop2`] in place of its second operand.
#[inline(always)]
fn apply2(a: &[f32], v: &mut [f32], f: &impl Fn(f32, f32) -> f32) {
    for (v, &a) in v.iter_mut().zip(a) {
        *v = f(a, *v);
    }
}

at_simd_level! {
    fn loop1_at(o: &mut [MaybeUninit<f32>], a: &[f32], f: &impl Fn(f32) -> f32) = loop1;
}

at_simd_level! {
    fn loop2_at(o: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) = loop2;
}

at_simd_level! {
    fn apply1_at(v: &mut [f32], f: &impl Fn(f32) -> f32) = apply1;
}

at_simd_level! {
    fn apply2_at(a: &[f32], v: &mut [f32], f: &impl Fn(f32, f32) -> f32) = apply2;
}

/// `t`'s elements, writable, where `t` alone holds its contiguous f32 buffer: an elementwise op
/// then writes its result over its input instead of into a new buffer (one pass over memory
/// instead of two, no fresh pages). At inference nothing else holds GELU's input; in training
/// autodiff keeps it, but the gradient GELU's backward multiplies is usually free.
fn sole_f32(t: &mut FlexTensor) -> Option<&mut [f32]> {
    if t.dtype() != DType::F32 || !t.is_contiguous() || t.layout().start_offset() != 0 {
        return None;
    }
    let n = t.layout().num_elements();
    t.try_storage_mut::<f32>().map(|v| &mut v[..n])
}

/// `acc += row` for each row of `rows` (a multiple of acc's length): every column is summed in
/// row order at any width, so the bits do not depend on it.
#[inline(always)]
fn add_rows(acc: &mut [f32], rows: &[f32]) {
    for row in rows.chunks_exact(acc.len()) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

at_simd_level! {
    fn add_rows_at(acc: &mut [f32], rows: &[f32]) = add_rows;
}

/// `f` on every element of the f32 tensor `x`, in x's buffer where [`sole_f32`] allows.
fn map1(mut x: FlexTensor, f: impl Fn(f32) -> f32 + Sync) -> FlexTensor {
    let simd = simd_level();
    if let Some(v) = sole_f32(&mut x) {
        v.par_chunks_mut(CHUNK).for_each(|v| apply1_at(simd, v, &f));
        return x;
    }
    let x = contiguous_f32(&x).expect("map1 takes f32");
    let src = &x.storage::<f32>()[..x.layout().num_elements()];
    let mut out: Vec<f32> = Vec::with_capacity(src.len());
    out.spare_capacity_mut()[..src.len()]
        .par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(o, a)| loop1_at(simd, o, a, &f));
    // SAFETY: the loops wrote every element.
    unsafe { out.set_len(src.len()) };
    FlexTensor::from_data(TensorData::new(out, x.layout().shape().clone()))
}

/// `f(x, y)` elementwise for contiguous f32 `x` and f32 `y` of x's shape, in y's buffer where
/// [`sole_f32`] allows.
fn map2(x: &FlexTensor, mut y: FlexTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    let n = x.layout().num_elements();
    let a = &x.storage::<f32>()[..n];
    let simd = simd_level();
    if let Some(v) = sole_f32(&mut y) {
        v.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(v, a)| apply2_at(simd, a, v, &f));
        return y;
    }
    let y = contiguous_f32(&y).expect("map2 takes f32");
    let b = &y.storage::<f32>()[..n];
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| loop2_at(simd, o, a, b, &f));
    // SAFETY: the loops wrote every element.
    unsafe { out.set_len(n) };
    FlexTensor::from_data(TensorData::new(out, x.layout().shape().clone()))
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn view(t: &FlexTensor) -> gemm_bf16::View<'_> {
    let l = t.layout();
    gemm_bf16::View {
        data: t.storage::<f32>(),
        offset: l.start_offset(),
        rs: l.strides()[0],
        cs: l.strides()[1],
    }
}

impl FusedOps for Flex {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match x.dtype() {
            DType::F32 => map1(x, |v| 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2))),
            _ => <Flex as ActivationOps<Flex>>::gelu(x),
        }
    }

    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let same_shape = x.layout().shape() == grad.layout().shape();
        match (contiguous_f32(&x), grad.dtype()) {
            (Some(x), DType::F32) if same_shape => map2(&x, grad, |v, g| {
                let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
                let pdf = INV_SQRT_2PI * exp_neg(-0.5 * v * v);
                g * (cdf + v * pdf)
            }),
            _ => <Flex as ActivationOps<Flex>>::gelu_backward(x, grad),
        }
    }

    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match x.dtype() {
            DType::F32 => map1(x, |v| v * sigmoid(v)),
            _ => super::reference::silu::<Flex>(x),
        }
    }

    fn fused_silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let same_shape = x.layout().shape() == grad.layout().shape();
        match (contiguous_f32(&x), grad.dtype()) {
            (Some(x), DType::F32) if same_shape => map2(&x, grad, |v, g| {
                let s = sigmoid(v);
                g * s * v.mul_add(1.0 - s, 1.0)
            }),
            _ => super::reference::silu_backward::<Flex>(x, grad),
        }
    }

    fn fused_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        match gemm_into(&lhs, &rhs, bf16, None).or_else(|| batched_gemm(&lhs, &rhs, bf16)) {
            Some(out) => out,
            None => reference_matmul::<Flex>(rounded(lhs, bf16), rounded(rhs, bf16), false),
        }
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        let bias = contiguous_f32(&b);
        let n = w.layout().shape()[1];
        let fallback =
            |x, w, b| reference_linear::<Flex>(rounded(x, bf16), rounded(w, bf16), b, false);
        match bias.filter(|b| b.layout().num_elements() == n) {
            Some(bias) => gemm_into(&x, &w, bf16, Some(&bias.storage::<f32>()[..n]))
                .unwrap_or_else(|| fallback(x, w, b)),
            None => fallback(x, w, b),
        }
    }

    fn fused_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        let qkv = contiguous_f32(&qkv).expect("fused attention takes f32");
        let dims = attention_dims(&qkv, heads);
        let out = attention::forward(
            &qkv.storage::<f32>()[..qkv.layout().num_elements()],
            dims,
            None,
        );
        FlexTensor::from_data(TensorData::new(out, [dims.batch, dims.tokens, dims.d()]))
    }

    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let qkv = contiguous_f32(&qkv).expect("fused attention takes f32");
        let grad = contiguous_f32(&grad).expect("fused attention takes f32");
        let dims = attention_dims(&qkv, heads);
        let n = qkv.layout().num_elements();
        let g = &grad.storage::<f32>()[..grad.layout().num_elements()];
        let (dqkv, _) = attention::backward(&qkv.storage::<f32>()[..n], g, dims, None);
        FlexTensor::from_data(TensorData::new(
            dqkv,
            [dims.batch, dims.tokens, 3 * dims.d()],
        ))
    }

    fn fused_window_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let qkv = contiguous_f32(&qkv).expect("fused attention takes f32");
        let bias = contiguous_f32(&bias).expect("fused attention takes an f32 bias");
        let dims = attention_dims(&qkv, heads);
        let b = bias.storage::<f32>();
        let bias_view = attention_bias(&bias, b, dims);
        let out = attention::forward(
            &qkv.storage::<f32>()[..qkv.layout().num_elements()],
            dims,
            Some(bias_view),
        );
        FlexTensor::from_data(TensorData::new(out, [dims.batch, dims.tokens, dims.d()]))
    }

    fn fused_window_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let qkv = contiguous_f32(&qkv).expect("fused attention takes f32");
        let bias = contiguous_f32(&bias).expect("fused attention takes an f32 bias");
        let grad = contiguous_f32(&grad).expect("fused attention takes f32");
        let dims = attention_dims(&qkv, heads);
        let b = bias.storage::<f32>();
        let bias_view = attention_bias(&bias, b, dims);
        let groups = bias_view.groups;
        let n = qkv.layout().num_elements();
        let g = &grad.storage::<f32>()[..grad.layout().num_elements()];
        let (dqkv, dbias) =
            attention::backward(&qkv.storage::<f32>()[..n], g, dims, Some(bias_view));
        let t = dims.tokens;
        (
            FlexTensor::from_data(TensorData::new(
                dqkv,
                [dims.batch, dims.tokens, 3 * dims.d()],
            )),
            FlexTensor::from_data(TensorData::new(
                dbias.expect("a bias gradient with a bias"),
                [groups, dims.heads, t, t],
            )),
        )
    }

    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [q, k, v] = [q, k, v].map(|t| contiguous_f32(&t).expect("fused attention takes f32"));
        let dims = causal_dims(&q, &k, &v);
        let out = causal_attention::forward(f32s(&q), f32s(&k), f32s(&v), dims);
        FlexTensor::from_data(TensorData::new(
            out,
            [dims.batch, dims.tokens, dims.heads * dims.head_dim],
        ))
    }

    fn fused_causal_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [q, k, v, grad] =
            [q, k, v, grad].map(|t| contiguous_f32(&t).expect("fused attention takes f32"));
        let dims = causal_dims(&q, &k, &v);
        let (dq, dk, dv) =
            causal_attention::backward(f32s(&q), f32s(&k), f32s(&v), f32s(&grad), dims);
        let kv_shape = [dims.batch, dims.kv_heads, dims.keys, dims.head_dim];
        (
            FlexTensor::from_data(TensorData::new(
                dq,
                [dims.batch, dims.heads, dims.tokens, dims.head_dim],
            )),
            FlexTensor::from_data(TensorData::new(dk, kv_shape)),
            FlexTensor::from_data(TensorData::new(dv, kv_shape)),
        )
    }

    fn fused_nll(logits: FloatTensor<Self>, targets: Arc<[u32]>) -> FloatTensor<Self> {
        let logits = contiguous_f32(&logits).expect("the fused loss takes f32 logits");
        let vocab = last_dim(&logits);
        let out = cross_entropy::nll(f32s(&logits), vocab, &targets);
        let rows = out.len();
        FlexTensor::from_data(TensorData::new(out, [rows]))
    }

    fn fused_nll_backward(
        logits: FloatTensor<Self>,
        targets: Arc<[u32]>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let logits = contiguous_f32(&logits).expect("the fused loss takes f32 logits");
        let grad = contiguous_f32(&grad).expect("the fused loss takes an f32 gradient");
        let vocab = last_dim(&logits);
        let out = cross_entropy::nll_backward(f32s(&logits), vocab, &targets, f32s(&grad));
        FlexTensor::from_data(TensorData::new(out, [targets.len(), vocab]))
    }

    fn fused_adamw(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: adamw::AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [mut w, mut m, mut v] = [w, m, v].map(owned_f32);
        let g = contiguous_f32(&g).expect("AdamW takes an f32 gradient");
        adamw::update(
            sole_f32(&mut w).expect("owned"),
            sole_f32(&mut m).expect("owned"),
            sole_f32(&mut v).expect("owned"),
            f32s(&g),
            &step,
        );
        (w, m, v)
    }

    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let grad_c = contiguous_f32(&grad).filter(|g| g.layout().shape() == x.layout().shape());
        match (norm_operands(&x, &gamma), grad_c) {
            (Some((xs, g)), Some(gr)) => {
                let d = g.layout().num_elements();
                let n = xs.layout().num_elements();
                let (dx, dgamma, dbeta) = layer_norm::backward(
                    &xs.storage::<f32>()[..n],
                    &g.storage::<f32>()[..d],
                    &gr.storage::<f32>()[..n],
                    eps as f32,
                );
                (
                    FlexTensor::from_data(TensorData::new(dx, xs.layout().shape().clone())),
                    FlexTensor::from_data(TensorData::new(dgamma, [d])),
                    FlexTensor::from_data(TensorData::new(dbeta, [d])),
                )
            }
            _ => super::reference::layer_norm_backward::<Flex>(x, gamma, grad, eps),
        }
    }

    fn fused_conv2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        let bias_fits = |d: &ConvDims| b.layout().num_elements() == d.co && d.forward_is_ours();
        let Some(d) = conv_dims(&x, &w, &b, spec).filter(bias_fits) else {
            return super::reference::conv2d::<Flex>(x, w, b, spec);
        };
        let ([x, w], bf16) = conv_operands([x, w], spec.bf16);
        let b = contiguous_f32(&b).expect("checked");
        let out = conv::forward(f32s(&x), f32s(&w), f32s(&b), &d, bf16);
        FlexTensor::from_data(TensorData::new(out, [d.n, d.co, d.ho(), d.wo()]))
    }

    fn fused_conv2d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let fits = |d: &ConvDims| grad.layout().shape().dims::<4>() == [d.n, d.co, d.ho(), d.wo()];
        let Some(d) = conv_dims(&x, &w, &grad, spec).filter(fits) else {
            return super::reference::conv2d_backward::<Flex>(x, w, grad, spec);
        };
        let ([x, w, g], bf16) = conv_operands([x, w, grad], spec.bf16);
        let (dx, dw, db) = conv::backward(f32s(&x), f32s(&w), f32s(&g), &d, bf16);
        (
            FlexTensor::from_data(TensorData::new(dx, [d.n, d.c, d.h, d.w])),
            FlexTensor::from_data(TensorData::new(dw, [d.co, d.c, d.k, d.k])),
            FlexTensor::from_data(TensorData::new(db, [d.co])),
        )
    }

    fn sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some(x) = contiguous_f32(&x).filter(|x| x.layout().shape().num_dims() == 2) else {
            return reference_sum_rows::<Flex>(x);
        };
        let n = x.layout().shape()[1];
        let data = &x.storage::<f32>()[..x.layout().num_elements()];
        // Fixed chunks summed in order: the result does not depend on how rayon schedules
        // them, so runs (and resumed runs) stay bit-identical.
        let simd = simd_level();
        let partials: Vec<Vec<f32>> = data
            .par_chunks(n * 256)
            .map(|rows| {
                let mut acc = vec![0f32; n];
                add_rows_at(simd, &mut acc, rows);
                acc
            })
            .collect();
        let mut sum = vec![0f32; n];
        for p in &partials {
            for (s, v) in sum.iter_mut().zip(p) {
                *s += v;
            }
        }
        FlexTensor::from_data(TensorData::new(sum, [n]))
    }
}

/// x and γ of a LayerNorm as contiguous f32, γ as long as x's last dimension; None where the
/// kernel does not apply (another dtype, mismatched shapes).
fn norm_operands(x: &FlexTensor, gamma: &FlexTensor) -> Option<(FlexTensor, FlexTensor)> {
    let d = *x.layout().shape().last()?;
    if d == 0 || gamma.layout().num_elements() != d {
        return None;
    }
    Some((contiguous_f32(x)?, contiguous_f32(gamma)?))
}

/// The bias `[groups, heads, n, n]` of a window-attention call, checked against its dims.
fn attention_bias<'a>(
    bias: &FlexTensor,
    values: &'a [f32],
    dims: attention::Dims,
) -> attention::Bias<'a> {
    let shape = bias.layout().shape();
    let n = dims.tokens;
    assert!(
        shape.num_dims() == 4
            && shape[1] == dims.heads
            && shape[2] == n
            && shape[3] == n
            && shape[0] > 0
            && dims.batch.is_multiple_of(shape[0]),
        "window attention: the bias must be [groups, heads, n, n] with groups dividing the batch"
    );
    attention::Bias {
        values: &values[..bias.layout().num_elements()],
        groups: shape[0],
    }
}

/// `t` itself where it alone holds its contiguous f32 buffer, else a fresh copy that does.
fn owned_f32(mut t: FlexTensor) -> FlexTensor {
    if sole_f32(&mut t).is_some() {
        return t;
    }
    let c = contiguous_f32(&t).expect("an f32 tensor");
    FlexTensor::from_data(TensorData::new(
        f32s(&c).to_vec(),
        c.layout().shape().clone(),
    ))
}

fn last_dim(t: &FlexTensor) -> usize {
    let shape = t.layout().shape();
    shape[shape.num_dims() - 1]
}

/// A contiguous f32 tensor's elements.
fn f32s(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[..t.layout().num_elements()]
}

fn causal_dims(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor) -> causal_attention::CausalDims {
    let (q, k) = (q.layout().shape(), k.layout().shape());
    assert!(
        q.num_dims() == 4 && k.num_dims() == 4 && v.layout().shape() == k,
        "causal attention takes q [b, heads, t, hd] and k, v [b, kv_heads, s, hd]"
    );
    assert!(
        q[0] == k[0] && q[3] == k[3],
        "causal attention: q and k differ in batch or head size"
    );
    causal_attention::CausalDims {
        batch: q[0],
        tokens: q[2],
        keys: k[2],
        heads: q[1],
        kv_heads: k[1],
        head_dim: q[3],
    }
}

fn attention_dims(qkv: &FlexTensor, heads: usize) -> attention::Dims {
    let shape = qkv.layout().shape();
    assert_eq!(shape.num_dims(), 3, "fused attention takes [b, n, 3·d]");
    let d = shape[2] / 3;
    assert!(
        shape[2].is_multiple_of(3) && heads > 0 && d.is_multiple_of(heads),
        "fused attention: bad qkv width"
    );
    attention::Dims {
        batch: shape[0],
        tokens: shape[1],
        heads,
        head_dim: d / heads,
    }
}

/// `lhs · rhs` (+ `bias` on every row) into a fresh buffer: the bias rows are the GEMM's
/// starting value, so the bias costs no extra pass. `None` where the inputs are not 2-D f32
/// (or bf16 is asked for on a CPU without AVX512-BF16): the caller falls back.
///
/// burn-flex's own matmul zero-fills its output as bytes and then copies it into an aligned
/// buffer, on the calling thread: two serial passes over every activation.
fn gemm_into(
    lhs: &FlexTensor,
    rhs: &FlexTensor,
    bf16: bool,
    bias: Option<&[f32]>,
) -> Option<FlexTensor> {
    let f32_2d = |t: &FlexTensor| t.dtype() == DType::F32 && t.layout().shape().num_dims() == 2;
    if !(f32_2d(lhs) && f32_2d(rhs)) || (bf16 && !gemm_bf16::available()) {
        return None;
    }
    let (m, k) = (lhs.layout().shape()[0], lhs.layout().shape()[1]);
    let n = rhs.layout().shape()[1];
    assert_eq!(
        rhs.layout().shape()[0],
        k,
        "matmul: inner dimensions differ"
    );
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let buf = &mut out.spare_capacity_mut()[..m * n];
    if let (Some(bias), true) = (bias, n > 0) {
        buf.par_chunks_mut(n * 64).for_each(|rows| {
            for row in rows.chunks_mut(n) {
                for (o, &b) in row.iter_mut().zip(bias) {
                    o.write(b);
                }
            }
        });
    }
    cpu_gemm((m, n, k), view(lhs), view(rhs), buf, bias.is_some(), bf16);
    // SAFETY: all m × n elements were written above (k = 0 with no bias is the only case where
    // the GEMM writes zeros without multiplying; gemm handles it).
    unsafe { out.set_len(m * n) };
    Some(FlexTensor::from_data(TensorData::new(out, [m, n])))
}

/// `[…, m, k] · […, k, n]` with the same batch dimensions (attention's per-head products),
/// each product on [`cpu_gemm`] where it reads the operands, strided or transposed, in place.
/// `None` for other operands (not f32, broadcast batch dimensions, empty): the caller falls
/// back. burn-flex's batched matmul runs the `gemm` crate's AVX2 kernel.
fn batched_gemm(lhs: &FlexTensor, rhs: &FlexTensor, bf16: bool) -> Option<FlexTensor> {
    let (ls, rs) = (lhs.layout().shape(), rhs.layout().shape());
    let d = ls.num_dims();
    let f32s = lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32;
    if d < 3 || rs.num_dims() != d || !f32s || (bf16 && !gemm_bf16::available()) {
        return None;
    }
    let (m, k, n) = (ls[d - 2], ls[d - 1], rs[d - 1]);
    if rs[d - 2] != k || (0..d - 2).any(|i| ls[i] != rs[i]) {
        return None;
    }
    let batches: usize = (0..d - 2).map(|i| ls[i]).product();
    if batches * m * n == 0 {
        return None;
    }
    // Where batch `i` (row-major over the batch dimensions) starts in `t`'s storage.
    let start = |t: &FlexTensor, mut i: usize| {
        let l = t.layout();
        let mut at = l.start_offset() as isize;
        for dim in (0..d - 2).rev() {
            at += (i % ls[dim]) as isize * l.strides()[dim];
            i /= ls[dim];
        }
        at as usize
    };
    fn operand(t: &FlexTensor, offset: usize) -> gemm_bf16::View<'_> {
        let d = t.layout().shape().num_dims();
        gemm_bf16::View {
            data: t.storage::<f32>(),
            offset,
            rs: t.layout().strides()[d - 2],
            cs: t.layout().strides()[d - 1],
        }
    }
    // Many small products (attention's, one per head) run one per thread, as the fused
    // attention kernel runs them; splitting each across threads costs more than it computes.
    // Few-row products (decoding's single query) stay on the GEMV path that `cpu_gemm` takes.
    let few_rows = gemv::applies(m, &operand(rhs, start(rhs, 0)));
    let serial = !bf16 && gemm_f32::available() && !few_rows && batches > 1 && m * n * k <= 1 << 22;
    let mut out: Vec<f32> = Vec::with_capacity(batches * m * n);
    out.spare_capacity_mut()[..batches * m * n]
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(i, c)| {
            let (a, b) = (operand(lhs, start(lhs, i)), operand(rhs, start(rhs, i)));
            if serial {
                // SAFETY: `c` holds this batch's m × n outputs at row stride n.
                unsafe {
                    gemm_f32::gemm_serial(
                        Product::new(m, n, k, a, b),
                        c.as_mut_ptr() as *mut f32,
                        n,
                    )
                }
            } else {
                cpu_gemm((m, n, k), a, b, c, false, bf16)
            }
        });
    // SAFETY: every batch's m × n block was written by its product.
    unsafe { out.set_len(batches * m * n) };
    let mut shape: Vec<usize> = (0..d).map(|i| ls[i]).collect();
    shape[d - 1] = n;
    Some(FlexTensor::from_data(TensorData::new(out, shape)))
}

/// The convolution's shapes where our kernel takes it: f32 `x [n, c, h, w]` and a square
/// `w [co, c, k, k]` that fits inside the padded input, and `other` (the bias, or the output's
/// gradient) in f32. `None` sends it to burn's.
fn conv_dims(
    x: &FlexTensor,
    w: &FlexTensor,
    other: &FlexTensor,
    spec: ConvSpec,
) -> Option<ConvDims> {
    let (xs, ws) = (x.layout().shape(), w.layout().shape());
    let f32s = [x, w, other].iter().all(|t| t.dtype() == DType::F32);
    if !f32s || xs.num_dims() != 4 || ws.num_dims() != 4 || spec.stride == 0 {
        return None;
    }
    let d = ConvDims {
        n: xs[0],
        c: xs[1],
        h: xs[2],
        w: xs[3],
        co: ws[0],
        k: ws[2],
        stride: spec.stride,
        pad: spec.pad,
    };
    let fits =
        ws[1] == d.c && ws[3] == d.k && d.k > 0 && d.h + 2 * d.pad >= d.k && d.w + 2 * d.pad >= d.k;
    fits.then_some(d)
}

/// The operands as contiguous f32, and whether the products run in bf16: on a CPU without
/// AVX512-BF16 they are rounded to bf16 here and multiplied in f32, which computes the same.
fn conv_operands<const N: usize>(ts: [FlexTensor; N], bf16: bool) -> ([FlexTensor; N], bool) {
    let slow_bf16 = bf16 && !gemm_bf16::available();
    let ts = ts.map(|t| contiguous_f32(&rounded(t, slow_bf16)).expect("f32, checked"));
    (ts, bf16 && !slow_bf16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results must not depend on which CPU ran the loop: every width gives the same bits.
    #[test]
    fn elementwise_loops_give_the_same_bits_at_every_width() {
        let a: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.013).collect();
        let b: Vec<f32> = a.iter().map(|x| x * 0.7 - 0.2).collect();
        let f1 = |x: f32| 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2));
        let f2 = |x: f32, g: f32| g * exp_neg(-0.5 * x * x) * INV_SQRT_2PI + x;
        let run1 = |level: u8| {
            let mut o = vec![MaybeUninit::new(0f32); a.len()];
            loop1_at(level, &mut o, &a, &f1);
            o.iter()
                .map(|v| unsafe { v.assume_init() }.to_bits())
                .collect::<Vec<_>>()
        };
        let run2 = |level: u8| {
            let mut o = vec![MaybeUninit::new(0f32); a.len()];
            loop2_at(level, &mut o, &a, &b, &f2);
            o.iter()
                .map(|v| unsafe { v.assume_init() }.to_bits())
                .collect::<Vec<_>>()
        };
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for level in 0..=simd_level() {
            assert_eq!(run1(level), run1(0), "one input, level {level}");
            assert_eq!(run2(level), run2(0), "two inputs, level {level}");
            // In place, the same bits as into a new buffer.
            let mut v = a.clone();
            apply1_at(level, &mut v, &f1);
            assert_eq!(bits(&v), run1(0), "one input in place, level {level}");
            let mut v = b.clone();
            apply2_at(level, &a, &mut v, &f2);
            assert_eq!(bits(&v), run2(0), "two inputs in place, level {level}");
        }
    }

    /// GELU and its backward write over a buffer nobody else holds and into a new one
    /// otherwise; both give the same bits, and a shared input is left as it was.
    #[test]
    fn gelu_in_place_matches_gelu_into_a_new_buffer() {
        let x: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 3e-4).collect();
        let g: Vec<f32> = x.iter().map(|v| 1.0 - v * 0.5).collect();
        let t = |v: &[f32]| FlexTensor::from_data(TensorData::new(v.to_vec(), [200, 200]));
        let vals = |t: &FlexTensor| t.storage::<f32>()[..40_000].to_vec();
        let alone = Flex::fused_gelu(t(&x));
        let held = t(&x);
        let shared = Flex::fused_gelu(held.clone());
        assert_eq!(vals(&alone), vals(&shared));
        assert_eq!(vals(&held), x, "a shared input is not written over");
        let alone = Flex::fused_gelu_backward(t(&x), t(&g));
        let held = t(&g);
        let shared = Flex::fused_gelu_backward(t(&x), held.clone());
        assert_eq!(vals(&alone), vals(&shared));
        assert_eq!(vals(&held), g);
    }

    /// Batched products read their operands in place however attention lays them out (heads
    /// split by a reshape and a swap, keys transposed, kv heads repeated by an expand) and give
    /// each batch's product; broadcast batch dimensions take burn's path, with the same result.
    #[test]
    fn batched_products_match_a_plain_loop() {
        use burn::tensor::{Device, Tensor};
        let device = Device::flex();
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed * 104729) % 997) as f32 / 498.0 - 1.0)
                .collect()
        };
        let (b, h, t, hd) = (2, 3, 37, 16);
        let x = Tensor::<3>::from_data(
            TensorData::new(vals(b * t * h * hd, 1), [b, t, h * hd]),
            &device,
        );
        let heads = |x: Tensor<3>| x.reshape([b, t, h, hd]).swap_dims(1, 2);
        let q = heads(x.clone());
        let k = heads(x * 0.5 + 0.25);
        let kv =
            Tensor::<4>::from_data(TensorData::new(vals(b * t * hd, 2), [b, 1, t, hd]), &device);
        let repeated = kv.clone().expand([b, h, t, hd]);
        let scores = Tensor::<4>::from_data(
            TensorData::new(vals(b * h * t * t, 3), [b, h, t, t]),
            &device,
        );
        let cases: Vec<(Tensor<4>, Tensor<4>)> = vec![
            (q.clone(), k.clone().swap_dims(2, 3)),
            (q.clone(), repeated.clone().swap_dims(2, 3)),
            // A transposed left operand, as softmax(scores)ᵀ in a backward.
            (scores.swap_dims(2, 3), repeated),
            // Broadcast over heads: not ours, burn's.
            (q.clone(), kv.swap_dims(2, 3)),
        ];
        for (i, (l, r)) in cases.into_iter().enumerate() {
            let (ld, rd) = (l.dims(), r.dims());
            let want = {
                let a = crate::model::weights::to_vec(l.clone());
                let c =
                    crate::model::weights::to_vec(r.clone().expand([ld[0], ld[1], rd[2], rd[3]]));
                let (m, k, n) = (ld[2], ld[3], rd[3]);
                let mut out = vec![0f32; ld[0] * ld[1] * m * n];
                for bi in 0..ld[0] * ld[1] {
                    for row in 0..m {
                        for col in 0..n {
                            let mut acc = 0f64;
                            for j in 0..k {
                                acc += a[bi * m * k + row * k + j] as f64
                                    * c[bi * k * n + j * n + col] as f64;
                            }
                            out[bi * m * n + row * n + col] = acc as f32;
                        }
                    }
                }
                out
            };
            let got = crate::model::weights::to_vec(crate::ops::matmul(l, r));
            assert_eq!(got.len(), want.len(), "case {i}");
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-4, "case {i}: {err}");
        }
    }
}
