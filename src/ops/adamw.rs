//! One AdamW update of a flattened parameter in one pass: the gradient, both moments and the
//! weight read once and the weight and moments written once, in place.
//!
//! Composed from tensor ops the update was sixteen passes over each parameter (burn-flex runs a
//! tensor-by-scalar op on one thread), which for a language model's 135M parameters was about a
//! fifth of a training step. The arithmetic here is the composed version's, operation by
//! operation in f32 with the same f32 constants and no fused multiply-adds, so the result is the
//! same to the bit (tested): training runs, checkpoints and their resumption do not change.

/// The scalars of one update, as `train::optim::AdamW` holds them.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Weight decay applied to this parameter (0 for the ones timm exempts).
    pub decay: f64,
    /// Bias corrections, 1 − βᵗ.
    pub bc1: f64,
    pub bc2: f64,
    /// Multiplies the gradient first (clipping, accumulation averaging).
    pub grad_scale: f64,
}

/// The f32 constants the composed ops use: each f64 scalar (or f64 expression) rounded to f32,
/// as burn's tensor-by-scalar ops round their scalar.
#[derive(Clone, Copy, Debug)]
pub struct Constants {
    grad_scale: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bc1: f32,
    bc2: f32,
    eps: f32,
    keep: f32,
    lr: f32,
}

impl AdamWStep {
    pub fn constants(&self) -> Constants {
        Constants {
            grad_scale: self.grad_scale as f32,
            beta1: self.beta1 as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            bc1: self.bc1 as f32,
            bc2: self.bc2 as f32,
            eps: self.eps as f32,
            keep: (1.0 - self.lr * self.decay) as f32,
            lr: self.lr as f32,
        }
    }
}

/// The update on equal-length slices, in place.
#[inline(always)]
fn update_generic(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: &Constants) {
    for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        let g = g * c.grad_scale;
        *m = *m * c.beta1 + g * c.one_minus_beta1;
        *v = *v * c.beta2 + g * g * c.one_minus_beta2;
        let update = (*m / c.bc1) / ((*v / c.bc2).sqrt() + c.eps);
        *w = *w * c.keep - update * c.lr;
    }
}

super::math::at_simd_level! {
    fn update_at(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: &Constants) = update_generic;
}

/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

/// One AdamW update of `w` with gradient `g`, moments `m` and `v` updated alongside.
pub fn update(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], step: &AdamWStep) {
    use rayon::prelude::*;
    assert!(
        w.len() == g.len() && m.len() == g.len() && v.len() == g.len(),
        "AdamW: the weight, its gradient and its moments differ in length"
    );
    let c = step.constants();
    let level = super::math::simd_level();
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| update_at(level, w, m, v, g, &c));
}
