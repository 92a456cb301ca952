//! timm's attention core, `softmax(q kᵀ / sqrt(head_dim)) v` for every head, read straight from
//! the fused `qkv` activation `[b, n, 3·d]` (channel = which·d + head·head_dim + e, timm's
//! `reshape(B, N, 3, heads, head_dim)`) and written straight in the merged-head layout
//! `[b, n, d]` that the projection takes. Forward and backward run one (batch, head) pair per
//! rayon task with small strided GEMMs, so there is no permute, no slice, and no contiguous copy
//! anywhere; the backward recomputes the probabilities (flash-attention style) instead of
//! storing them, and writes dq, dk and dv into their columns of one `[b, n, 3·d]` gradient.

use rayon::prelude::*;

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

/// `dst (m×n, strides rs/cs) = beta · lhs · rhs`, single-threaded (the tasks are the parallelism).
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (isize, isize),
    lhs: *const f32,
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (isize, isize),
    beta: f32,
) {
    // SAFETY: the caller passes pointers and strides that address m×k, k×n and m×n elements
    // inside live buffers.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// P = softmax(q kᵀ · scale) for one (batch, head), into `p` (n×n, row-major).
fn probs(qkv: &[f32], dims: Dims, bi: usize, h: usize, p: &mut [f32]) {
    let (n, d, hd) = (dims.tokens, dims.d(), dims.head_dim);
    let base = bi * n * 3 * d + h * hd;
    let row = 3 * d as isize;
    // SAFETY: q and k are n rows of hd values at row stride 3d inside `qkv`; p holds n×n.
    unsafe {
        mm(
            (n, n, hd),
            p.as_mut_ptr(),
            (n as isize, 1),
            qkv.as_ptr().add(base),
            (row, 1),
            qkv.as_ptr().add(base + d),
            (1, row),
            dims.scale(),
        )
    };
    softmax_rows(p, n);
}

/// Reduces with 8 independent lanes, so the compiler can vectorise (a single running float
/// sum or max is a serial dependency it may not reorder).
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

#[inline(always)]
fn softmax_rows_generic(p: &mut [f32], n: usize) {
    for r in p.chunks_mut(n) {
        let max = reduce8(r, f32::NEG_INFINITY, f32::max);
        for v in r.iter_mut() {
            *v = exp_neg(*v - max);
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
fn softmax_rows_avx2(p: &mut [f32], n: usize) {
    softmax_rows_generic(p, n)
}

fn softmax_rows(p: &mut [f32], n: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::flex::has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { softmax_rows_avx2(p, n) };
    }
    softmax_rows_generic(p, n)
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
            // SAFETY: v is n rows of hd at stride 3d; the output block (rows of batch bi,
            // columns h·hd..(h+1)·hd at row stride d) belongs to this task alone.
            unsafe {
                mm(
                    (n, hd, n),
                    dst.at(bi * n * d + h * hd),
                    (d as isize, 1),
                    p.as_ptr(),
                    (n as isize, 1),
                    qkv.as_ptr().add(bi * n * 3 * d + 2 * d + h * hd),
                    (3 * d as isize, 1),
                    1.0,
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
    let row = 3 * d as isize;
    (0..b * dims.heads).into_par_iter().for_each_init(
        || (vec![0f32; n * n], vec![0f32; n * n]),
        |(p, dp), t| {
            let (bi, h) = (t / dims.heads, t % dims.heads);
            probs(qkv, dims, bi, h, p);
            let base = bi * n * 3 * d + h * hd;
            let go = grad[bi * n * d + h * hd..].as_ptr();
            // SAFETY (all four products): q/k/v and their gradients are n rows of hd at row
            // stride 3d, the output gradient n rows of hd at stride d, p and dp n×n; this task
            // alone writes its head's columns of batch bi in dqkv.
            unsafe {
                // dv = pᵀ · dout
                mm(
                    (n, hd, n),
                    dst.at(base + 2 * d),
                    (row, 1),
                    p.as_ptr(),
                    (1, n as isize),
                    go,
                    (d as isize, 1),
                    1.0,
                );
                // dp = dout · vᵀ
                mm(
                    (n, n, hd),
                    dp.as_mut_ptr(),
                    (n as isize, 1),
                    go,
                    (d as isize, 1),
                    qkv.as_ptr().add(base + 2 * d),
                    (1, row),
                    1.0,
                );
            }
            // ds = p ⊙ (dp − rowsum(dp ⊙ p)), in place in dp.
            for (pr, dr) in p.chunks(n).zip(dp.chunks_mut(n)) {
                let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                for (g, &pv) in dr.iter_mut().zip(pr) {
                    *g = pv * (*g - dot);
                }
            }
            unsafe {
                // dq = ds · k · scale
                mm(
                    (n, hd, n),
                    dst.at(base),
                    (row, 1),
                    dp.as_ptr(),
                    (n as isize, 1),
                    qkv.as_ptr().add(base + d),
                    (row, 1),
                    dims.scale(),
                );
                // dk = dsᵀ · q · scale
                mm(
                    (n, hd, n),
                    dst.at(base + d),
                    (row, 1),
                    dp.as_ptr(),
                    (1, n as isize),
                    qkv.as_ptr().add(base),
                    (row, 1),
                    dims.scale(),
                );
            }
        },
    );
    // SAFETY: the tasks wrote the q, k and v columns of every head of every batch.
    unsafe { dqkv.set_len(b * n * 3 * d) };
    dqkv
}
