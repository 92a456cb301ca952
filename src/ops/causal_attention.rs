//! The language model's attention core: causal, grouped-query (transformers' `repeat_kv`:
//! query head i reads key/value head i / (heads / kv_heads)), scale head_dim^-½.
//!
//! `q [b, heads, t, hd]`, `k` and `v [b, kv_heads, s, hd]` with s ≥ t (the cache's keys, then
//! the t new ones): query i sees keys 0 ..= s − t + i. The output is written with the heads
//! merged, `[b, t, heads·hd]`, the layout `o_proj` takes.
//!
//! Composed from tensor ops this was a `[b, heads, t, s]` score tensor per layer, an additive
//! −∞ mask of `[t, s]`, the key/value heads copied out to every query head, and burn's softmax
//! (libm `expf`); training kept the scores and the probabilities of every layer for the
//! backward. Here one rayon task runs one (batch, head) in blocks of query rows, each block
//! multiplying only the keys its last row can see (a causal prefill does about half the
//! products), into buffers the task keeps; the backward recomputes the probabilities (flash-
//! attention style) instead of storing them.

use rayon::prelude::*;

use super::attention::{mm, softmax_grad_rows, softmax_rows, Out};
use super::gemm_bf16::View;
use super::gemm_f32;

/// Query rows per block: 64 rows of scores stay in L2 even against thousands of keys, and the
/// keys a block skips are those past its last row.
const ROWS: usize = 64;

/// Shapes of one call.
#[derive(Clone, Copy, Debug)]
pub struct CausalDims {
    pub batch: usize,
    /// New tokens (queries).
    pub tokens: usize,
    /// Keys: the cache's and the new tokens'.
    pub keys: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl CausalDims {
    fn scale(&self) -> f32 {
        (self.head_dim as f32).powf(-0.5)
    }

    /// Offset of (batch, query head)'s `[t, hd]` block in q.
    fn q_at(&self, bi: usize, h: usize) -> usize {
        (bi * self.heads + h) * self.tokens * self.head_dim
    }

    /// Offset of the `[s, hd]` key (or value) block that (batch, query head) reads.
    fn kv_at(&self, bi: usize, h: usize) -> usize {
        let group = self.heads / self.kv_heads;
        (bi * self.kv_heads + h / group) * self.keys * self.head_dim
    }

    /// Offset of (batch, token r, head h)'s `hd` values in the merged `[b, t, heads·hd]` layout.
    fn merged_at(&self, bi: usize, r: usize, h: usize) -> usize {
        ((bi * self.tokens + r) * self.heads + h) * self.head_dim
    }

    /// The row blocks `(first row, end row, keys the block sees)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize, usize)> {
        let (t, start) = (self.tokens, self.keys - self.tokens);
        (0..t)
            .step_by(ROWS)
            .map(move |r0| (r0, (r0 + ROWS).min(t), start + (r0 + ROWS).min(t)))
    }
}

/// The probabilities of query rows r0..r1 of one (batch, head) into `p` (rows × kn, row
/// stride kn): scores against the first kn keys (`kt` is that head's kᵀ, hd × s), each row's
/// softmax over the keys it sees, zeros after them.
fn probs(
    q: &[f32],
    dims: CausalDims,
    (bi, h): (usize, usize),
    (r0, r1, kn): (usize, usize, usize),
    kt: &[f32],
    p: &mut [f32],
) {
    let (hd, s) = (dims.head_dim, dims.keys);
    let rows = r1 - r0;
    let qv = View::strided(q, dims.q_at(bi, h) + r0 * hd, hd, 1);
    // SAFETY: p holds rows × kn.
    unsafe {
        mm(
            (rows, kn, hd),
            p.as_mut_ptr(),
            kn,
            qv,
            View::strided(kt, 0, s, 1),
        )
    };
    let first_seen = s - dims.tokens + r0 + 1;
    for (i, row) in p[..rows * kn].chunks_mut(kn).enumerate() {
        let (seen, unseen) = row.split_at_mut(first_seen + i);
        softmax_rows(seen, first_seen + i, dims.scale());
        unseen.fill(0.0);
    }
}

/// Checks the operands against `dims`; returns (batch, tokens, keys, head_dim, heads).
fn check(q: &[f32], k: &[f32], v: &[f32], dims: CausalDims) -> (usize, usize, usize, usize, usize) {
    let (b, t, s, hd) = (dims.batch, dims.tokens, dims.keys, dims.head_dim);
    assert!(t <= s, "causal attention: more queries than keys");
    assert!(
        dims.kv_heads > 0 && dims.heads.is_multiple_of(dims.kv_heads),
        "causal attention: query heads must be a multiple of key/value heads"
    );
    assert_eq!(q.len(), b * dims.heads * t * hd);
    assert_eq!(k.len(), b * dims.kv_heads * s * hd);
    assert_eq!(v.len(), k.len());
    (b, t, s, hd, dims.heads)
}

/// `[b, heads, t, hd]`, `[b, kv_heads, s, hd]` ×2 → `[b, t, heads·hd]`.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], dims: CausalDims) -> Vec<f32> {
    let (b, t, s, hd, heads) = check(q, k, v, dims);
    let d = heads * hd;
    if b * t * hd == 0 {
        return vec![0.0; b * t * d];
    }
    let mut out: Vec<f32> = Vec::with_capacity(b * t * d);
    let dst = Out(out.spare_capacity_mut().as_mut_ptr() as *mut f32);
    (0..b * heads).into_par_iter().for_each_init(
        || (vec![0f32; ROWS.min(t) * s], vec![0f32; hd * s]),
        |(p, kt), task| {
            let (bi, h) = (task / heads, task % heads);
            let kv = dims.kv_at(bi, h);
            gemm_f32::transpose(&k[kv..], hd, (s, hd), kt, s);
            for block @ (r0, r1, kn) in dims.blocks() {
                probs(q, dims, (bi, h), block, kt, p);
                // SAFETY: this task alone writes head h's columns of batch bi's rows.
                unsafe {
                    mm(
                        (r1 - r0, hd, kn),
                        dst.at(dims.merged_at(bi, r0, h)),
                        d,
                        View::strided(p, 0, kn, 1),
                        View::strided(v, kv, hd, 1),
                    )
                };
            }
        },
    );
    // SAFETY: the tasks wrote every row block of every (batch, head).
    unsafe { out.set_len(b * t * d) };
    out
}

/// `acc[..n] += tmp[..n]`.
fn add_into(acc: &mut [f32], tmp: &[f32]) {
    acc.iter_mut().zip(tmp).for_each(|(a, &x)| *a += x);
}

/// Gradients of [`forward`] with respect to q, k and v, given the output's gradient
/// `grad [b, t, heads·hd]`: `(dq [b, heads, t, hd], dk, dv [b, kv_heads, s, hd])`.
///
/// Each task computes its query head's share of dk and dv; the heads that share a key/value
/// head are then added in head order, so the result does not depend on the thread count.
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    grad: &[f32],
    dims: CausalDims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, t, s, hd, heads) = check(q, k, v, dims);
    let d = heads * hd;
    assert_eq!(grad.len(), b * t * d);
    if b * t * hd == 0 {
        let kv = vec![0.0; k.len()];
        return (vec![0.0; q.len()], kv.clone(), kv);
    }
    let scale = dims.scale();
    let mut dq = vec![0f32; b * heads * t * hd];
    // Every query head's share of dk and dv, [b, heads, s, hd].
    let mut dk_h = vec![0f32; b * heads * s * hd];
    let mut dv_h = vec![0f32; b * heads * s * hd];
    dq.par_chunks_mut(t * hd)
        .zip(dk_h.par_chunks_mut(s * hd))
        .zip(dv_h.par_chunks_mut(s * hd))
        .enumerate()
        .for_each_init(
            || {
                let block = vec![0f32; ROWS.min(t) * s];
                (
                    block.clone(),
                    block,
                    vec![0f32; hd * s],
                    vec![0f32; hd * s],
                    vec![0f32; s * hd],
                )
            },
            |(p, dp, kt, vt, tmp), (task, ((dq, dk), dv))| {
                let (bi, h) = (task / heads, task % heads);
                let kv = dims.kv_at(bi, h);
                gemm_f32::transpose(&k[kv..], hd, (s, hd), kt, s);
                gemm_f32::transpose(&v[kv..], hd, (s, hd), vt, s);
                for block @ (r0, r1, kn) in dims.blocks() {
                    let rows = r1 - r0;
                    probs(q, dims, (bi, h), block, kt, p);
                    let go = View::strided(grad, dims.merged_at(bi, r0, h), d, 1);
                    let qb = View::strided(q, dims.q_at(bi, h) + r0 * hd, hd, 1);
                    // SAFETY (all products): tmp holds s × hd ≥ kn × hd, dp rows × kn, and the
                    // task's dq block t × hd.
                    unsafe {
                        // dv[..kn] += pᵀ · dout
                        let pt = View::strided(p, 0, 1, kn);
                        mm((kn, hd, rows), tmp.as_mut_ptr(), hd, pt, go);
                        add_into(&mut dv[..kn * hd], &tmp[..kn * hd]);
                        // dp = dout · vᵀ
                        let vt = View::strided(vt, 0, s, 1);
                        mm((rows, kn, hd), dp.as_mut_ptr(), kn, go, vt);
                    }
                    softmax_grad_rows(&p[..rows * kn], &mut dp[..rows * kn], kn, scale, &mut []);
                    unsafe {
                        // dq = ds · k
                        let (ds, kb) = (View::strided(dp, 0, kn, 1), View::strided(k, kv, hd, 1));
                        mm((rows, hd, kn), dq[r0 * hd..].as_mut_ptr(), hd, ds, kb);
                        // dk[..kn] += dsᵀ · q
                        let dst = View::strided(dp, 0, 1, kn);
                        mm((kn, hd, rows), tmp.as_mut_ptr(), hd, dst, qb);
                    }
                    add_into(&mut dk[..kn * hd], &tmp[..kn * hd]);
                }
            },
        );
    let group = heads / dims.kv_heads;
    if group == 1 {
        return (dq, dk_h, dv_h);
    }
    // Sum each key/value head's query heads, in order.
    let reduce = |per_head: Vec<f32>| -> Vec<f32> {
        let mut out = vec![0f32; b * dims.kv_heads * s * hd];
        out.par_chunks_mut(s * hd).enumerate().for_each(|(i, o)| {
            let (bi, g) = (i / dims.kv_heads, i % dims.kv_heads);
            for j in 0..group {
                let h = g * group + j;
                add_into(o, &per_head[(bi * heads + h) * s * hd..][..s * hd]);
            }
        });
        out
    };
    let dk = reduce(dk_h);
    let dv = reduce(dv_h);
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.0 - 1.0) * 1.3)
            .collect()
    }

    /// A batch of 2: the shapes, then q, k and v filled from `salt`.
    fn case(
        (t, s): (usize, usize),
        (heads, kv_heads, head_dim): (usize, usize, usize),
        salt: usize,
    ) -> (CausalDims, [Vec<f32>; 3]) {
        let dims = CausalDims {
            batch: 2,
            tokens: t,
            keys: s,
            heads,
            kv_heads,
            head_dim,
        };
        let kv = 2 * kv_heads * s * head_dim;
        let inputs = [
            values(2 * heads * t * head_dim, salt),
            values(kv, salt + 1),
            values(kv, salt + 2),
        ];
        (dims, inputs)
    }

    /// The attention as transformers writes it, in f64: `repeat_kv`, scores, −∞ above the
    /// causal diagonal, softmax, product; output in the merged layout.
    fn reference(q: &[f32], k: &[f32], v: &[f32], dims: CausalDims) -> Vec<f64> {
        let CausalDims {
            batch: b,
            tokens: t,
            keys: s,
            head_dim: hd,
            heads,
            ..
        } = dims;
        let scale = (hd as f64).powf(-0.5);
        let mut out = vec![0f64; b * t * heads * hd];
        for bi in 0..b {
            for h in 0..heads {
                let (qa, kva) = (dims.q_at(bi, h), dims.kv_at(bi, h));
                for i in 0..t {
                    let seen = s - t + i + 1;
                    let scores: Vec<f64> = (0..seen)
                        .map(|j| {
                            (0..hd)
                                .map(|e| q[qa + i * hd + e] as f64 * k[kva + j * hd + e] as f64)
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for e in 0..hd {
                        out[dims.merged_at(bi, i, h) + e] = (0..seen)
                            .map(|j| exps[j] / sum * v[kva + j * hd + e] as f64)
                            .sum();
                    }
                }
            }
        }
        out
    }

    fn max_err(got: &[f32], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max)
    }

    /// Prefill (s = t) and a cache (s > t), with and without grouped heads, across more than
    /// one row block.
    #[test]
    fn forward_matches_the_masked_softmax() {
        for (t, s, heads, kv_heads) in [
            (5, 5, 2, 2),
            (70, 70, 4, 2),
            (3, 9, 6, 2),
            (1, 12, 3, 1),
            (130, 140, 2, 1),
        ] {
            let (dims, [q, k, v]) = case((t, s), (heads, kv_heads, 8), 1);
            let err = max_err(&forward(&q, &k, &v, dims), &reference(&q, &k, &v, dims));
            assert!(err < 1e-5, "t {t} s {s} heads {heads}/{kv_heads}: {err}");
        }
    }

    /// Every gradient against central differences of the f64 reference's `Σ grad ⊙ out`.
    #[test]
    fn backward_matches_finite_differences() {
        for (t, s, heads, kv_heads) in [(4, 6, 4, 2), (67, 67, 2, 1)] {
            let (dims, [q, k, v]) = case((t, s), (heads, kv_heads, 4), 4);
            let g = values(2 * t * heads * 4, 7);
            let (dq, dk, dv) = backward(&q, &k, &v, &g, dims);
            let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
                reference(q, k, v, dims)
                    .iter()
                    .zip(&g)
                    .map(|(o, &g)| o * g as f64)
                    .sum()
            };
            let eps = 1e-2f32;
            // A spread of elements of each input, the last included.
            for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
                let n = grad.len();
                for idx in (0..n).step_by(n / 13 + 1).chain([n - 1]) {
                    let mut inputs = [q.clone(), k.clone(), v.clone()];
                    inputs[which][idx] += eps;
                    let up = loss(&inputs[0], &inputs[1], &inputs[2]);
                    inputs[which][idx] -= 2.0 * eps;
                    let down = loss(&inputs[0], &inputs[1], &inputs[2]);
                    let want = (up - down) / (2.0 * eps as f64);
                    let got = grad[idx] as f64;
                    assert!(
                        (got - want).abs() < 1e-3 * want.abs().max(1.0),
                        "t {t} input {which} element {idx}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
