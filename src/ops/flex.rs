//! The flex (CPU) kernels: contiguous f32, split across rayon's pool in chunks big enough to
//! amortise the fork, with inner loops the compiler vectorises.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::{DType, FloatDType, TensorData};
use rayon::prelude::*;

use super::gemm_bf16;
use super::math::{erf, exp_neg};
use super::FusedOps;

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

/// The elementwise loops are compiled twice: for AVX2+FMA (chosen at run time) and for baseline
/// x86-64. Without FMA enabled, `f32::mul_add` becomes a libm call, slower than libm's `erff`.
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[inline(always)]
fn loop1<F: Fn(f32) -> f32>(o: &mut [f32], a: &[f32], f: &F) {
    for (o, &a) in o.iter_mut().zip(a) {
        *o = f(a);
    }
}

#[inline(always)]
fn loop2<F: Fn(f32, f32) -> f32>(o: &mut [f32], a: &[f32], b: &[f32], f: &F) {
    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
        *o = f(a, b);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn loop1_avx2<F: Fn(f32) -> f32>(o: &mut [f32], a: &[f32], f: &F) {
    loop1(o, a, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn loop2_avx2<F: Fn(f32, f32) -> f32>(o: &mut [f32], a: &[f32], b: &[f32], f: &F) {
    loop2(o, a, b, f)
}

fn map1(x: &FlexTensor, f: impl Fn(f32) -> f32 + Sync) -> FlexTensor {
    let src = &x.storage::<f32>()[..x.layout().num_elements()];
    let mut out = vec![0f32; src.len()];
    let simd = has_avx2_fma();
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(o, a)| {
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: the CPU has the features the function was compiled for.
                return unsafe { loop1_avx2(o, a, &f) };
            }
            loop1(o, a, &f)
        });
    FlexTensor::from_data(TensorData::new(out, x.layout().shape().clone()))
}

fn map2(x: &FlexTensor, y: &FlexTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    let n = x.layout().num_elements();
    let (a, b) = (&x.storage::<f32>()[..n], &y.storage::<f32>()[..n]);
    let mut out = vec![0f32; n];
    let simd = has_avx2_fma();
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: the CPU has the features the function was compiled for.
                return unsafe { loop2_avx2(o, a, b, &f) };
            }
            loop2(o, a, b, &f)
        });
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
        match contiguous_f32(&x) {
            Some(x) => map1(&x, |v| 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2))),
            None => <Flex as ActivationOps<Flex>>::gelu(x),
        }
    }

    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        match (contiguous_f32(&x), contiguous_f32(&grad)) {
            (Some(x), Some(g)) if x.layout().shape() == g.layout().shape() => {
                map2(&x, &g, |v, g| {
                    let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
                    let pdf = INV_SQRT_2PI * exp_neg(-0.5 * v * v);
                    g * (cdf + v * pdf)
                })
            }
            _ => <Flex as ActivationOps<Flex>>::gelu_backward(x, grad),
        }
    }

    fn matmul_bf16(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let f32_2d = |t: &FlexTensor| t.dtype() == DType::F32 && t.layout().shape().num_dims() == 2;
        if !(gemm_bf16::available() && f32_2d(&lhs) && f32_2d(&rhs)) {
            let lhs = <Flex as FloatTensorOps<Flex>>::float_cast(lhs, FloatDType::BF16);
            let rhs = <Flex as FloatTensorOps<Flex>>::float_cast(rhs, FloatDType::BF16);
            let out = <Flex as FloatTensorOps<Flex>>::float_matmul(lhs, rhs);
            return <Flex as FloatTensorOps<Flex>>::float_cast(out, FloatDType::F32);
        }
        let (m, k) = (lhs.layout().shape()[0], lhs.layout().shape()[1]);
        let n = rhs.layout().shape()[1];
        assert_eq!(
            rhs.layout().shape()[0],
            k,
            "matmul_bf16: inner dimensions differ"
        );
        let mut out = vec![0f32; m * n];
        gemm_bf16::gemm(m, n, k, view(&lhs), view(&rhs), &mut out);
        FlexTensor::from_data(TensorData::new(out, [m, n]))
    }
}
