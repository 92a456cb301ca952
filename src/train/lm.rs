//! The causal language-modelling objective: each position predicts the next token. The loss is
//! the mean negative log-likelihood; perplexity is its exponential.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::text::TokenWindows;

/// Mean next-token NLL of `logits [b, t, vocab]` against `targets [b, t]`.
pub fn causal_lm_loss(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let picked = log_softmax(logits, 2).gather(2, targets.reshape([b, t, 1]));
    picked.mean().neg()
}

/// Perplexity of a model on held-out windows.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Perplexity {
    /// Mean NLL per predicted token (nats).
    pub loss: f64,
    pub perplexity: f64,
    pub tokens: usize,
    pub windows: usize,
}

/// Runs `forward` (ids `[b, t]` → logits) over every window, `batch` at a time.
pub fn evaluate_lm(
    forward: impl Fn(Tensor<2, Int>) -> Tensor<3>,
    data: &TokenWindows,
    batch: usize,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Perplexity {
    let t = data.seq_len;
    let (mut nll, mut tokens) = (0.0f64, 0usize);
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (inputs, targets) = data.batch(chunk);
        let b = chunk.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(inputs, [b, t]), device);
        let y = Tensor::<2, Int>::from_data(TensorData::new(targets, [b, t]), device);
        let loss = causal_lm_loss(forward(x), y).into_scalar::<f32>() as f64;
        nll += loss * (b * t) as f64;
        tokens += b * t;
        progress(chunk.len());
    }
    let loss = nll / tokens.max(1) as f64;
    Perplexity {
        loss,
        perplexity: loss.exp(),
        tokens,
        windows: data.len(),
    }
}
