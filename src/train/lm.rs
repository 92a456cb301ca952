//! The causal language-modelling objective: each position predicts the next token. The loss is
//! the mean negative log-likelihood; perplexity is its exponential.

use burn::tensor::activation::log_softmax;
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::text::TokenWindows;

/// Mean next-token NLL of `logits [b, t, vocab]` against `targets [b, t]`.
pub fn causal_lm_loss(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, vocab] = logits.dims();
    // On flex one fused kernel reads the logits twice forward and three times backward, where
    // log_softmax and gather made ten or so passes over `[tokens, vocab]` each way.
    if logits.device() == Device::flex() {
        let targets: Arc<[u32]> = targets
            .into_data()
            .iter::<i64>()
            .map(|id| id as u32)
            .collect();
        return crate::ops::nll(logits.reshape([b * t, vocab]), targets).mean();
    }
    loss_composed(logits, targets)
}

/// [`causal_lm_loss`] from tensor ops, for backends without the fused kernel.
fn loss_composed(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
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

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Int, Tensor, TensorData};

    use crate::model::weights::to_vec;

    /// The fused loss on flex gives the composed one's value and logits gradient.
    #[test]
    fn fused_loss_matches_log_softmax_and_gather() {
        let device = Device::flex().autodiff();
        let (b, t, vocab) = (2, 5, 301);
        let values: Vec<f32> = (0..b * t * vocab)
            .map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 5.0)
            .collect();
        let ids: Vec<i64> = (0..b * t).map(|i| (i * 61 % vocab) as i64).collect();
        let run = |fused: bool| {
            let x = Tensor::<3>::from_data(TensorData::new(values.clone(), [b, t, vocab]), &device)
                .require_grad();
            let y = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, t]), &device);
            let loss = if fused {
                super::causal_lm_loss(x.clone(), y)
            } else {
                super::loss_composed(x.clone(), y)
            };
            let grads = loss.backward();
            (to_vec(loss), to_vec(x.grad(&grads).unwrap()))
        };
        let (l1, g1) = run(true);
        let (l2, g2) = run(false);
        assert!(
            (l1[0] - l2[0]).abs() < 1e-5 * l2[0].abs().max(1.0),
            "{l1:?} vs {l2:?}"
        );
        let err = g1
            .iter()
            .zip(&g2)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-6, "gradient {err}");
    }
}
