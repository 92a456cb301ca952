//! Accuracy of a model on a split: top-1, top-5, per class, and the mean loss.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::data::loader::{iterate, LoaderConfig, Mixing, OnBadImage};
use crate::data::transform::Transform;
use crate::data::Split;
use crate::error::Result;
use crate::model::weights::to_vec;
use crate::network::Network;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EvalResult {
    pub n: usize,
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    /// Accuracy per class (NaN-free: classes with no samples get 0 and count 0).
    pub per_class: Vec<f64>,
    pub per_class_count: Vec<usize>,
}

/// Runs `net` (without autodiff) over `split`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    net: &Network,
    split: &Split,
    transform: &Transform,
    num_classes: usize,
    batch_size: usize,
    workers: usize,
    device: &Device,
    on_bad_image: OnBadImage,
    mut progress: impl FnMut(usize),
) -> Result<EvalResult> {
    let cfg = LoaderConfig {
        batch_size,
        shuffle: false,
        drop_last: false,
        workers,
        seed: 0,
        num_classes,
        mixing: Mixing::default(),
        on_bad_image,
    };
    let mut correct1 = 0usize;
    let mut correct5 = 0usize;
    let mut loss_sum = 0.0f64;
    let mut n = 0usize;
    let mut hit = vec![0usize; num_classes];
    let mut count = vec![0usize; num_classes];
    for batch in iterate(split, transform, &cfg, 0, 0, Default::default()) {
        let batch = batch?;
        let b = batch.labels.len();
        if b == 0 {
            continue;
        }
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let logits = net.forward(x);
        let k = logits.dims()[1];
        let logp = to_vec(log_softmax(logits, 1));
        for (i, &label) in batch.labels.iter().enumerate() {
            let row = &logp[i * k..(i + 1) * k];
            if label < k {
                loss_sum -= row[label] as f64;
                let better = row.iter().filter(|&&v| v > row[label]).count();
                correct1 += usize::from(better == 0);
                correct5 += usize::from(better < 5);
                if label < num_classes {
                    count[label] += 1;
                    hit[label] += usize::from(better == 0);
                }
            }
        }
        n += b;
        progress(n);
    }
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(EvalResult {
        n,
        top1: frac(correct1, n),
        top5: frac(correct5, n),
        loss: if n == 0 { 0.0 } else { loss_sum / n as f64 },
        per_class: hit.iter().zip(&count).map(|(&h, &c)| frac(h, c)).collect(),
        per_class_count: count,
    })
}
