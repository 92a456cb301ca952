//! timm's attention core, `softmax(q kᵀ / sqrt(head_dim)) v` for every head, read straight from
//! the fused `qkv` activation `[b, n, 3·d]` (channel = which·d + head·head_dim + e, timm's
//! `reshape(B, N, 3, heads, head_dim)`) and written straight in the merged-head layout
//! `[b, n, d]` that the projection takes. Forward and backward run one (batch, head) pair per
//! rayon task with small strided GEMMs, so there is no permute and no slice; the only copies are
//! each task's kᵀ (and vᵀ in backward), transposed into a buffer the task keeps. The backward
//! recomputes the probabilities (flash-attention style) instead of storing them, and writes dq,
//! dk and dv into their columns of one `[b, n, 3·d]` gradient.
//!
//! An optional additive bias on the scores (`[groups, heads, n, n]`, batch item i taking group
//! i mod groups) serves Swin's window attention: the relative-position bias plus the shifted
//! windows' mask, one group per window.

use rayon::prelude::*;

use super::gemm_f32;
use super::gemm_tile::{Product, View};
use super::math::{at_simd_level, dot8, exp_neg, reduce8, simd_level};

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
pub(super) struct Out(pub(super) *mut f32);
// SAFETY: every task writes a disjoint set of elements (its head's columns of its batch rows).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// A method (not the field) so that closures capture the whole `Send` wrapper.
    pub(super) fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `dst (m×n, row stride ldc) = lhs · rhs`, single-threaded (the tasks are the parallelism):
/// our AVX-512 kernel where the CPU has it, the `gemm` crate otherwise.
///
/// # Safety
/// `dst` addresses m rows of n writable floats at stride `ldc`.
pub(super) unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    ldc: usize,
    a: View,
    b: View,
) {
    let p = Product::new(m, n, k, a, b);
    if gemm_f32::available() {
        // SAFETY: forwarded contract.
        return unsafe { gemm_f32::gemm_serial(p, dst, ldc) };
    }
    // SAFETY: the views address their elements inside their slices; dst by contract.
    unsafe { gemm_f32::gemm_portable(p, dst, ldc, false, false) }
}

/// An additive score bias `[groups, heads, n, n]`; batch item i uses group i mod groups.
#[derive(Clone, Copy)]
pub struct Bias<'a> {
    pub values: &'a [f32],
    pub groups: usize,
}

impl Bias<'_> {
    /// The n×n bias of batch item `bi`, head `h`.
    fn at(&self, dims: Dims, bi: usize, h: usize) -> &[f32] {
        let nn = dims.tokens * dims.tokens;
        let start = ((bi % self.groups) * dims.heads + h) * nn;
        &self.values[start..start + nn]
    }
}

/// Column `which` (0 = q, 1 = k, 2 = v) of one (batch, head), transposed into `dst`
/// (head_dim × n, row-major). The products then read kᵀ and vᵀ in place: packing them inside
/// every product, at 50 tokens, took nearly as long as the product itself.
fn transposed(qkv: &[f32], dims: Dims, (bi, h): (usize, usize), which: usize, dst: &mut [f32]) {
    let (n, d, hd) = (dims.tokens, dims.d(), dims.head_dim);
    let start = bi * n * 3 * d + which * d + h * hd;
    gemm_f32::transpose(&qkv[start..], 3 * d, (n, hd), dst, n);
}

/// P = softmax(q kᵀ · scale [+ bias]) for one (batch, head), into `p` (n×n, row-major);
/// `kt` holds that head's kᵀ.
fn probs(
    qkv: &[f32],
    dims: Dims,
    (bi, h): (usize, usize),
    bias: Option<Bias>,
    kt: &[f32],
    p: &mut [f32],
) {
    let (n, d, hd) = (dims.tokens, dims.d(), dims.head_dim);
    let q = View::strided(qkv, bi * n * 3 * d + h * hd, 3 * d, 1);
    // SAFETY: p holds n×n.
    unsafe { mm((n, n, hd), p.as_mut_ptr(), n, q, View::strided(kt, 0, n, 1)) };
    match bias {
        None => softmax_rows(p, n, dims.scale()),
        Some(b) => {
            let scale = dims.scale();
            for (x, &y) in p.iter_mut().zip(b.at(dims, bi, h)) {
                *x = *x * scale + y;
            }
            softmax_rows(p, n, 1.0)
        }
    }
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

at_simd_level! {
    /// At the CPU's vector width: `exp_neg`'s `mul_add` is a libm call without FMA, and the
    /// sums keep their 8 accumulators (`reduce8`), so the bits are the same at every width.
    fn softmax_rows_at(p: &mut [f32], n: usize, scale: f32) = softmax_rows_generic;
}

pub(super) fn softmax_rows(p: &mut [f32], n: usize, scale: f32) {
    softmax_rows_at(simd_level(), p, n, scale)
}

/// The softmax's backward in place: `dp` (the probabilities' gradient) becomes
/// ds = p ⊙ (dp − rowsum(dp ⊙ p)), the scores' gradient, which is added to `dbias` unless
/// that is empty, and is then multiplied by `scale` (making it the gradient of q kᵀ).
#[inline(always)]
fn softmax_grad_rows_generic(p: &[f32], dp: &mut [f32], n: usize, scale: f32, dbias: &mut [f32]) {
    for (pr, dr) in p.chunks(n).zip(dp.chunks_mut(n)) {
        let dot = dot8(pr, dr);
        for (g, &pv) in dr.iter_mut().zip(pr) {
            *g = pv * (*g - dot);
        }
    }
    for (a, &v) in dbias.iter_mut().zip(dp.iter()) {
        *a += v;
    }
    for v in dp.iter_mut() {
        *v *= scale;
    }
}

at_simd_level! {
    fn softmax_grad_rows_at(p: &[f32], dp: &mut [f32], n: usize, scale: f32, dbias: &mut [f32])
        = softmax_grad_rows_generic;
}

pub(super) fn softmax_grad_rows(
    p: &[f32],
    dp: &mut [f32],
    n: usize,
    scale: f32,
    dbias: &mut [f32],
) {
    softmax_grad_rows_at(simd_level(), p, dp, n, scale, dbias)
}

/// `[b, n, 3d]` → `[b, n, d]`.
pub fn forward(qkv: &[f32], dims: Dims, bias: Option<Bias>) -> Vec<f32> {
    let (b, n, d, hd) = (dims.batch, dims.tokens, dims.d(), dims.head_dim);
    assert_eq!(qkv.len(), b * n * 3 * d);
    if b * n * hd == 0 {
        return vec![0.0; b * n * d];
    }
    let mut out: Vec<f32> = Vec::with_capacity(b * n * d);
    let dst = Out(out.spare_capacity_mut().as_mut_ptr() as *mut f32);
    (0..b * dims.heads).into_par_iter().for_each_init(
        || (vec![0f32; n * n], vec![0f32; hd * n]),
        |(p, kt), t| {
            let (bi, h) = (t / dims.heads, t % dims.heads);
            transposed(qkv, dims, (bi, h), 1, kt);
            probs(qkv, dims, (bi, h), bias, kt, p);
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

/// Gradients of `forward` with respect to `qkv` and, with a bias, to the bias, given the
/// output's gradient `grad [b, n, d]`.
///
/// Tasks cover (group, head, chunk of the batch items of that group); each sums its items'
/// bias gradients, and the chunks are added in order afterwards. The chunking depends on the
/// shapes only, so the result does not depend on the thread count.
pub fn backward(
    qkv: &[f32],
    grad: &[f32],
    dims: Dims,
    bias: Option<Bias>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (b, n, d, hd) = (dims.batch, dims.tokens, dims.d(), dims.head_dim);
    assert_eq!(grad.len(), b * n * d);
    let heads = dims.heads;
    let groups = bias.map_or(1, |x| x.groups);
    // The tasks cover every batch item only when the groups divide the batch; `set_len`
    // below relies on it.
    assert!(
        groups > 0 && b.is_multiple_of(groups),
        "attention: {groups} bias groups do not divide a batch of {b}"
    );
    if b * n * hd == 0 {
        let dbias = bias.map(|_| vec![0.0; groups * heads * n * n]);
        return (vec![0.0; b * n * 3 * d], dbias);
    }
    let per_group = b / groups;
    // Enough tasks for the cores even with one group and few heads.
    let chunks = (64 / (groups * heads)).clamp(1, per_group.max(1));
    let nn = n * n;
    let mut dqkv: Vec<f32> = Vec::with_capacity(b * n * 3 * d);
    let dst = Out(dqkv.spare_capacity_mut().as_mut_ptr() as *mut f32);
    let scale = dims.scale();
    let partials: Vec<Vec<f32>> = (0..groups * heads * chunks)
        .into_par_iter()
        .map_init(
            || {
                let buf = || vec![0f32; nn];
                (buf(), buf(), vec![0f32; hd * n], vec![0f32; hd * n])
            },
            |(p, dp, kt, vt), t| {
                let (g, h, c) = (t / (heads * chunks), (t / chunks) % heads, t % chunks);
                let mut dbias = if bias.is_some() {
                    vec![0f32; nn]
                } else {
                    Vec::new()
                };
                for item in c * per_group / chunks..(c + 1) * per_group / chunks {
                    let bi = item * groups + g;
                    transposed(qkv, dims, (bi, h), 1, kt);
                    transposed(qkv, dims, (bi, h), 2, vt);
                    probs(qkv, dims, (bi, h), bias, kt, p);
                    let base = bi * n * 3 * d + h * hd;
                    let (q, k) = (
                        View::strided(qkv, base, 3 * d, 1),
                        View::strided(qkv, base + d, 3 * d, 1),
                    );
                    let vt = View::strided(vt, 0, n, 1);
                    let go = View::strided(grad, bi * n * d + h * hd, d, 1);
                    // SAFETY (all four products): this task alone writes its head's q, k and v
                    // columns of batch bi in dqkv (row stride 3d); dp holds n×n.
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
                    softmax_grad_rows(p, dp, n, scale, &mut dbias);
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
                }
                dbias
            },
        )
        .collect();
    // SAFETY: the tasks wrote the q, k and v columns of every head of every batch item.
    unsafe { dqkv.set_len(b * n * 3 * d) };
    let dbias = bias.map(|_| {
        let mut out = vec![0f32; groups * heads * nn];
        for (t, part) in partials.iter().enumerate() {
            let (g, h) = (t / (heads * chunks), (t / chunks) % heads);
            let o = &mut out[(g * heads + h) * nn..][..nn];
            o.iter_mut().zip(part).for_each(|(a, &v)| *a += v);
        }
        out
    });
    (dqkv, dbias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_gives_the_same_bits_at_every_width() {
        let n = 50;
        let p: Vec<f32> = (0..7 * n)
            .map(|i| ((i * 37) % 101) as f32 * 0.09 - 4.0)
            .collect();
        let run = |level: u8| {
            let mut q = p.clone();
            softmax_rows_at(level, &mut q, n, 0.125);
            q.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        for level in 1..=simd_level() {
            assert_eq!(run(level), run(0), "level {level}");
        }
    }
}
