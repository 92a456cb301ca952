//! LayerNorm's backward over the last dimension in one pass over each row (burn-flex has a
//! fused forward already).
//!
//! burn 0.22's autodiff has no LayerNorm of its own: it records the composed ops (mean, centre,
//! square, mean, sqrt, divide, scale, shift) and runs a dozen elementwise passes backward, each
//! over the whole activation. At the widths of small ViTs that was a tenth of a training step.
//! Here a row's statistics are recomputed in the backward instead of stored, as the attention
//! kernel recomputes its probabilities.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::math::{at_simd_level, reduce8, simd_level};

/// Rows per rayon task; also the chunk that γ's and β's gradients are summed over before the
/// chunks are added in order, so the sums do not depend on the thread count.
const ROWS: usize = 64;

fn sum(r: &[f32]) -> f32 {
    reduce8(r, 0.0, |a, v| a + v)
}

/// One task's rows: writes their dx and adds their terms to `dg` and `db`. `scratch` holds
/// 3·d floats (x̂, ĝ, ĝ·x̂ of the current row).
#[inline(always)]
fn rows_generic(
    (dx, x, grad): (&mut [MaybeUninit<f32>], &[f32], &[f32]),
    gamma: &[f32],
    eps: f32,
    (dg, db): (&mut [f32], &mut [f32]),
    scratch: &mut [f32],
) {
    let d = gamma.len();
    let (xhat, rest) = scratch.split_at_mut(d);
    let (gh, prod) = rest.split_at_mut(d);
    for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(grad.chunks(d)) {
        // The row's statistics (biased variance, as torch's LayerNorm). `reduce8` folds its
        // accumulators with the same function, so the squares go through `prod` first.
        let mean = sum(x) / d as f32;
        for i in 0..d {
            xhat[i] = x[i] - mean;
            prod[i] = xhat[i] * xhat[i];
        }
        let rstd = 1.0 / (sum(prod) / d as f32 + eps).sqrt();
        for i in 0..d {
            xhat[i] *= rstd;
            gh[i] = g[i] * gamma[i];
            prod[i] = gh[i] * xhat[i];
        }
        let a = sum(gh) / d as f32;
        let b = sum(prod) / d as f32;
        for i in 0..d {
            dx[i].write(rstd * (gh[i] - a - xhat[i] * b));
            dg[i] += g[i] * xhat[i];
            db[i] += g[i];
        }
    }
}

at_simd_level! {
    /// The row loop at the CPU's width (or the level a test asks for), as the elementwise loops
    /// in `flex.rs`: every lane does the same IEEE operations and the sums keep `reduce8`'s
    /// order, so the bits do not change.
    fn rows_at(
        io: (&mut [MaybeUninit<f32>], &[f32], &[f32]),
        gamma: &[f32],
        eps: f32,
        acc: (&mut [f32], &mut [f32]),
        scratch: &mut [f32],
    ) = rows_generic;
}

/// Gradients with respect to x, γ and β, given the output's gradient `grad`:
/// dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)) with ĝ = grad · γ, dγ = Σ grad · x̂, dβ = Σ grad.
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    grad: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    backward_at(simd_level(), x, gamma, grad, eps)
}

fn backward_at(
    simd: u8,
    x: &[f32],
    gamma: &[f32],
    grad: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    assert_eq!(x.len(), grad.len());
    let n = x.len();
    let mut dx: Vec<f32> = Vec::with_capacity(n);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx.spare_capacity_mut()[..n]
        .par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d).zip(grad.par_chunks(ROWS * d)))
        .map(|(dx, (x, grad))| {
            let (mut dg, mut db) = (vec![0f32; d], vec![0f32; d]);
            let mut scratch = vec![0f32; 3 * d];
            let acc = (&mut dg[..], &mut db[..]);
            rows_at(simd, (dx, x, grad), gamma, eps, acc, &mut scratch);
            (dg, db)
        })
        .collect();
    // SAFETY: the tasks wrote every row of dx.
    unsafe { dx.set_len(n) };
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
                    let mean = x.iter().sum::<f32>() / d as f32;
                    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                    let rstd = 1.0 / (var + eps).sqrt();
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
    fn every_simd_width_gives_the_same_bits() {
        let (rows, d) = (130, 50);
        let (x, gamma, g) = (data(rows * d, 8), data(d, 9), data(rows * d, 10));
        let want = backward_at(0, &x, &gamma, &g, 1e-6);
        for level in 1..=simd_level() {
            assert_eq!(
                backward_at(level, &x, &gamma, &g, 1e-6),
                want,
                "level {level}"
            );
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
