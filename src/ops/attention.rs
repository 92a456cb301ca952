//! timm's attention core, `softmax(q kᵀ / sqrt(head_dim)) v` for every head, read straight from
//! the fused `qkv` activation `[b, n, 3·d]` (channel = which·d + head·head_dim + e, timm's
//! `reshape(B, N, 3, heads, head_dim)`) and written straight in the merged-head layout
//! `[b, n, d]` that the projection takes. Forward and backward run one (batch, head) pair per
//! rayon task with small strided GEMMs, so there is no permute, no slice, and no contiguous copy
//! anywhere; the backward recomputes the probabilities (flash-attention style) instead of
//! storing them, and writes dq, dk and dv into their columns of one `[b, n, 3·d]` gradient.

use rayon::prelude::*;

use super::gemm_bf16::View;
use super::gemm_f32;
use super::math::exp_neg;

/// Shapes of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Dims {
    pub fn d(&self) -> usize {
        self.heads * self.head_dim
    }
    fn scale(&self) -> f32 {
        (self.head_dim as f32).powf(-0.5)
    }
}

/// A raw output pointer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes a disjoint set of elements (its head's columns of its batch rows).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// A method (not the field) so that closures capture the whole `Send` wrapper.
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `dst (m×n, row stride ldc) = lhs · rhs`, single-threaded (the tasks are the parallelism):
/// our AVX-512 kernel where the CPU has it, the `gemm` crate otherwise.
///
/// # Safety
/// `dst` addresses m rows of n writable floats at stride `ldc`.
unsafe fn mm((m, n, k): (usize, usize, usize), dst: *mut f32, ldc: usize, a: View, b: View) {
    if gemm_f32::available() {
        // SAFETY: forwarded contract.
        return unsafe { gemm_f32::gemm_serial(m, n, k, a, b, dst, ldc) };
    }
    // SAFETY: the views address their elements inside their slices; dst by contract.
    unsafe { gemm_f32::gemm_portable((m, n, k), a, b, dst, ldc, false, false) }
}

/// P = softmax(q kᵀ · scale) for one (batch, head), into `p` (n×n, row-major).
fn probs(qkv: &[f32], dims: Dims, bi: usize, h: usize, p: &mut [f32]) {
    let (n, d, hd) = (dims.tokens, dims.d(), dims.head_dim);
    let base = bi * n * 3 * d + h * hd;
    let q = View::strided(qkv, base, 3 * d, 1);
    let kt = View::strided(qkv, base + d, 1, 3 * d);
    // SAFETY: p holds n×n.
    unsafe { mm((n, n, hd), p.as_mut_ptr(), n, q, kt) };
    softmax_rows(p, n, dims.scale());
}

#[inline(always)]
fn reduce8(r: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let mut chunks = r.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    acc.iter().fold(tail, |a, &v| f(a, v))
}

/// Row-wise softmax of `scale · p` (scale > 0, so the row maximum is found unscaled).
#[inline(always)]
fn softmax_rows_generic(p: &mut [f32], n: usize, scale: f32) {
    for r in p.chunks_mut(n) {
        let max = reduce8(r, f32::NEG_INFINITY, f32::max);
        for v in r.iter_mut() {
            *v = exp_neg((*v - max) * scale);
        }
        let inv = 1.0 / reduce8(r, 0.0, |a, b| a + b);
        for v in r.iter_mut() {
            *v *= inv;
        }
    }
}

/// Compiled for AVX2+FMA when the CPU has them: `exp_neg`'s `mul_add` is a libm call otherwise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_rows_avx2(p: &mut [f32], n: usize, scale: f32) {
    softmax_rows_generic(p, n, scale)
}

fn softmax_rows(p: &mut [f32], n: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::flex::has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { softmax_rows_avx2(p, n, scale) };
    }
    softmax_rows_generic(p, n, scale)
}

/// `[b, n, 3d]` → `[b, n, d]`.
pub fn forward(qkv: &[f32], dims: Dims) -> Vec<f32> {
    let (b, n, d, hd) = (dims.batch, dims.tokens, dims.d(), dims.head_dim);
    assert_eq!(qkv.len(), b * n * 3 * d);
    let mut out: Vec<f32> = Vec::with_capacity(b * n * d);
    let dst = Out(out.spare_capacity_mut().as_mut_ptr() as *mut f32);
    (0..b * dims.heads).into_par_iter().for_each_init(
        || vec![0f32; n * n],
        |p, t| {
            let (bi, h) = (t / dims.heads, t % dims.heads);
            probs(qkv, dims, bi, h, p);
            let v = View::strided(qkv, bi * n * 3 * d + 2 * d + h * hd, 3 * d, 1);
            // SAFETY: this task alone writes rows of batch bi, columns h·hd.. at stride d.
            unsafe {
                mm(
                    (n, hd, n),
                    dst.at(bi * n * d + h * hd),
                    d,
                    View::strided(p, 0, n, 1),
                    v,
                )
            };
        },
    );
    // SAFETY: the tasks wrote every (batch, head) block, i.e. all b·n·d elements.
    unsafe { out.set_len(b * n * d) };
    out
}

/// Gradient of `forward` with respect to `qkv`, given the output's gradient `grad [b, n, d]`.
pub fn backward(qkv: &[f32], grad: &[f32], dims: Dims) -> Vec<f32> {
    let (b, n, d, hd) = (dims.batch, dims.tokens, dims.d(), dims.head_dim);
    assert_eq!(grad.len(), b * n * d);
    let mut dqkv: Vec<f32> = Vec::with_capacity(b * n * 3 * d);
    let dst = Out(dqkv.spare_capacity_mut().as_mut_ptr() as *mut f32);
    let scale = dims.scale();
    (0..b * dims.heads).into_par_iter().for_each_init(
        || (vec![0f32; n * n], vec![0f32; n * n]),
        |(p, dp), t| {
            let (bi, h) = (t / dims.heads, t % dims.heads);
            probs(qkv, dims, bi, h, p);
            let base = bi * n * 3 * d + h * hd;
            let (q, k) = (
                View::strided(qkv, base, 3 * d, 1),
                View::strided(qkv, base + d, 3 * d, 1),
            );
            let vt = View::strided(qkv, base + 2 * d, 1, 3 * d);
            let go = View::strided(grad, bi * n * d + h * hd, d, 1);
            // SAFETY (all four products): this task alone writes its head's q, k and v columns
            // of batch bi in dqkv (row stride 3d); dp holds n×n.
            unsafe {
                // dv = pᵀ · dout
                mm(
                    (n, hd, n),
                    dst.at(base + 2 * d),
                    3 * d,
                    View::strided(p, 0, 1, n),
                    go,
                );
                // dp = dout · vᵀ
                mm((n, n, hd), dp.as_mut_ptr(), n, go, vt);
            }
            // ds = p ⊙ (dp − rowsum(dp ⊙ p)) · scale, in place in dp (the scale of q kᵀ).
            for (pr, dr) in p.chunks(n).zip(dp.chunks_mut(n)) {
                let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                for (g, &pv) in dr.iter_mut().zip(pr) {
                    *g = pv * (*g - dot) * scale;
                }
            }
            unsafe {
                // dq = ds · k
                mm(
                    (n, hd, n),
                    dst.at(base),
                    3 * d,
                    View::strided(dp, 0, n, 1),
                    k,
                );
                // dk = dsᵀ · q
                mm(
                    (n, hd, n),
                    dst.at(base + d),
                    3 * d,
                    View::strided(dp, 0, 1, n),
                    q,
                );
            }
        },
    );
    // SAFETY: the tasks wrote the q, k and v columns of every head of every batch.
    unsafe { dqkv.set_len(b * n * 3 * d) };
    dqkv
}
