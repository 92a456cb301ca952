//! LayerNorm's backward over the last dimension in one pass over each row (burn-flex has a
//! fused forward already).
//!
//! burn 0.22's autodiff has no LayerNorm of its own: it records the composed ops (mean, centre,
//! square, mean, sqrt, divide, scale, shift) and runs a dozen elementwise passes backward, each
//! over the whole activation. At the widths of small ViTs that was a tenth of a training step.
//! Here a row's statistics are recomputed in the backward instead of stored, as the attention
//! kernel recomputes its probabilities.

use rayon::prelude::*;

/// Rows per rayon task; also the chunk that γ's and β's gradients are summed over before the
/// chunks are added in order, so the sums do not depend on the thread count.
const ROWS: usize = 64;

/// Sum with 8 accumulators: the compiler vectorises it, and the order is fixed by `d` alone.
#[inline(always)]
fn sum8(r: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0f32; 8];
    for (i, v) in r.enumerate() {
        acc[i % 8] += v;
    }
    acc.iter().sum()
}

/// Mean and 1/sqrt(var + eps) of one row (biased variance, as torch's LayerNorm).
#[inline(always)]
fn stats(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = sum8(row.iter().copied()) / d;
    let var = sum8(row.iter().map(|&v| (v - mean) * (v - mean))) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Gradients with respect to x, γ and β, given the output's gradient `grad`:
/// dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)) with ĝ = grad · γ, dγ = Σ grad · x̂, dβ = Σ grad.
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    grad: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    assert_eq!(x.len(), grad.len());
    let mut dx = vec![0f32; x.len()];
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d).zip(grad.par_chunks(ROWS * d)))
        .map(|(dx, (x, grad))| {
            let (mut dg, mut db) = (vec![0f32; d], vec![0f32; d]);
            let mut xhat = vec![0f32; d];
            let mut gh = vec![0f32; d];
            for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(grad.chunks(d)) {
                let (mean, rstd) = stats(x, eps);
                for ((h, &x), (gh, (&g, &gm))) in xhat
                    .iter_mut()
                    .zip(x)
                    .zip(gh.iter_mut().zip(g.iter().zip(gamma)))
                {
                    *h = (x - mean) * rstd;
                    *gh = g * gm;
                }
                let a = sum8(gh.iter().copied()) / d as f32;
                let b = sum8(gh.iter().zip(&xhat).map(|(g, h)| g * h)) / d as f32;
                for ((dx, &gh), &h) in dx.iter_mut().zip(&gh).zip(&xhat) {
                    *dx = rstd * (gh - a - h * b);
                }
                for (((dg, db), &g), &h) in dg.iter_mut().zip(db.iter_mut()).zip(g).zip(&xhat) {
                    *dg += g * h;
                    *db += g;
                }
            }
            (dg, db)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0f32; d], vec![0f32; d]);
    for (dg, db) in &partials {
        for (s, v) in dgamma.iter_mut().zip(dg) {
            *s += v;
        }
        for (s, v) in dbeta.iter_mut().zip(db) {
            *s += v;
        }
    }
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(x - mean) · rstd · γ + β` for each row of `x` (rows of `gamma.len()`).
    fn forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
        let d = gamma.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ROWS * d)
            .zip(x.par_chunks(ROWS * d))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let (mean, rstd) = stats(x, eps);
                    for (((o, &x), &g), &b) in o.iter_mut().zip(x).zip(gamma).zip(beta) {
                        *o = (x - mean) * rstd * g + b;
                    }
                }
            });
        out
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                v as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    /// Backward against central differences of the forward, in f64 sums of f32 results.
    #[test]
    fn backward_matches_finite_differences() {
        let (rows, d, eps) = (3, 13, 1e-6f32);
        let x = data(rows * d, 1);
        let gamma = data(d, 2);
        let beta = data(d, 3);
        let w = data(rows * d, 4); // loss = Σ w · y
        let loss = |x: &[f32], g: &[f32], b: &[f32]| -> f64 {
            forward(x, g, b, eps)
                .iter()
                .zip(&w)
                .map(|(y, w)| (*y as f64) * (*w as f64))
                .sum()
        };
        let (dx, dg, db) = backward(&x, &gamma, &w, eps);
        let h = 1e-2f32;
        let check = |analytic: f32, plus: f64, minus: f64| {
            let numeric = (plus - minus) / (2.0 * h as f64);
            assert!(
                (analytic as f64 - numeric).abs() < 2e-3 * (1.0 + numeric.abs()),
                "{analytic} vs {numeric}"
            );
        };
        for i in 0..x.len() {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[i] += h;
            m[i] -= h;
            check(dx[i], loss(&p, &gamma, &beta), loss(&m, &gamma, &beta));
        }
        for i in 0..d {
            let (mut p, mut m) = (gamma.clone(), gamma.clone());
            p[i] += h;
            m[i] -= h;
            check(dg[i], loss(&x, &p, &beta), loss(&x, &m, &beta));
            let (mut p, mut m) = (beta.clone(), beta.clone());
            p[i] += h;
            m[i] -= h;
            check(db[i], loss(&x, &gamma, &p), loss(&x, &gamma, &m));
        }
    }

    #[test]
    fn gradient_sums_do_not_depend_on_the_thread_count() {
        let (rows, d) = (1000, 96);
        let x = data(rows * d, 5);
        let gamma = data(d, 6);
        let g = data(rows * d, 7);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let a = one.install(|| backward(&x, &gamma, &g, 1e-6));
        let b = backward(&x, &gamma, &g, 1e-6);
        assert_eq!(a, b);
    }
}
