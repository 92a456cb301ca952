//! The language model's loss over its vocabulary: each row's negative log-likelihood of its
//! target, `logsumexp(x) − x[target]`, and its gradient `g · (softmax(x) − onehot(target))`.
//!
//! Composed from tensor ops this was `log_softmax` then `gather`: with SmolLM2's 49152-token
//! vocabulary, ten or so passes over a `[tokens, vocab]` tensor (100 MB at 4 × 128 tokens) for
//! the max, the shift, libm's `expf`, the sum, the log, the gather, and as many again in the
//! backward, which also kept the log-probabilities. Here the forward reads each row twice (max,
//! then Σ exp) and the backward three times, writing the gradient once; nothing is kept but the
//! logits, which the backward of the LM head keeps anyway.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::math::{at_simd_level, exp_neg, reduce8, simd_level};

/// `max + ln Σ exp(x − max)`, the sums in 8 accumulators (the same bits at every SIMD width).
#[inline(always)]
fn log_sum_exp_generic(row: &[f32]) -> f32 {
    let max = reduce8(row, f32::NEG_INFINITY, f32::max);
    let mut acc = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += exp_neg(c[l] - max);
        }
    }
    for (l, &x) in chunks.remainder().iter().enumerate() {
        acc[l] += exp_neg(x - max);
    }
    let sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    max + sum.ln()
}

at_simd_level! {
    fn log_sum_exp_at(row: &[f32]) -> f32 = log_sum_exp_generic;
}

/// `out = g · exp(x − lse)`, the softmax scaled by the row's gradient.
#[inline(always)]
fn scaled_softmax_generic(row: &[f32], lse: f32, g: f32, out: &mut [MaybeUninit<f32>]) {
    for (o, &x) in out.iter_mut().zip(row) {
        o.write(g * exp_neg(x - lse));
    }
}

at_simd_level! {
    fn scaled_softmax_at(row: &[f32], lse: f32, g: f32, out: &mut [MaybeUninit<f32>]) = scaled_softmax_generic;
}

fn check(logits: &[f32], vocab: usize, targets: &[u32]) {
    assert!(vocab > 0, "cross entropy: an empty vocabulary");
    assert_eq!(
        logits.len(),
        targets.len() * vocab,
        "cross entropy: one target per row"
    );
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        panic!("cross entropy: target {t} outside a vocabulary of {vocab}");
    }
}

/// Per-row NLL of `logits [rows, vocab]` (row-major) against `targets [rows]`.
pub fn nll(logits: &[f32], vocab: usize, targets: &[u32]) -> Vec<f32> {
    check(logits, vocab, targets);
    logits
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| log_sum_exp_at(simd_level(), row) - row[t as usize])
        .collect()
}

/// Gradient of `Σ_r grad[r] · nll[r]` with respect to the logits: `[rows, vocab]`.
pub fn nll_backward(logits: &[f32], vocab: usize, targets: &[u32], grad: &[f32]) -> Vec<f32> {
    check(logits, vocab, targets);
    assert_eq!(
        grad.len(),
        targets.len(),
        "cross entropy: one gradient per row"
    );
    let mut out: Vec<f32> = Vec::with_capacity(logits.len());
    out.spare_capacity_mut()
        .par_chunks_mut(vocab)
        .zip(logits.par_chunks(vocab))
        .zip(targets.par_iter().zip(grad.par_iter()))
        .for_each(|((o, row), (&t, &g))| {
            let level = simd_level();
            let lse = log_sum_exp_at(level, row);
            scaled_softmax_at(level, row, lse, g, o);
            let t = t as usize;
            // SAFETY: the line above wrote every element of the row.
            o[t].write(unsafe { o[t].assume_init() } - g);
        });
    // SAFETY: every row was written in full.
    unsafe { out.set_len(logits.len()) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(rows: usize, vocab: usize) -> Vec<f32> {
        (0..rows * vocab)
            .map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 6.0)
            .collect()
    }

    /// log-softmax and gather in f64, and the gradient by its closed form.
    #[test]
    fn matches_log_softmax_in_f64() {
        let (rows, vocab) = (5, 1003);
        let x = logits(rows, vocab);
        let targets: Vec<u32> = vec![0, 17, 1002, 500, 3];
        let grad: Vec<f32> = vec![0.2, -1.0, 0.5, 1.5, 0.0];
        let got = nll(&x, vocab, &targets);
        let dgot = nll_backward(&x, vocab, &targets, &grad);
        for r in 0..rows {
            let row: Vec<f64> = x[r * vocab..(r + 1) * vocab]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let want = lse - row[targets[r] as usize];
            assert!(
                (got[r] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "row {r}"
            );
            for (j, v) in row.iter().enumerate() {
                let onehot = if j == targets[r] as usize { 1.0 } else { 0.0 };
                let want = grad[r] as f64 * ((v - lse).exp() - onehot);
                let got = dgot[r * vocab + j] as f64;
                assert!(
                    (got - want).abs() < 1e-6,
                    "row {r} column {j}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn gives_the_same_bits_at_every_width() {
        let row = logits(1, 997);
        for level in 1..=simd_level() {
            assert_eq!(
                log_sum_exp_at(level, &row).to_bits(),
                log_sum_exp_at(0, &row).to_bits(),
                "level {level}"
            );
        }
    }
}
