//! mmsegmentation's segmentation loss: each head's logits resized (bilinear,
//! `align_corners=False`) to the labels' size, per-pixel cross-entropy in which pixels labelled
//! `ignore_index` contribute 0, averaged over every pixel (its `CrossEntropyLoss` default,
//! `avg_non_ignore=False`, which its UperNet configs keep); the auxiliary head's loss weighted.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use super::layers::resize;

/// Labels `[n, h, w]` (row-major), one class index per pixel.
pub struct PixelLabels<'a> {
    pub values: &'a [u8],
    pub shape: [usize; 3],
    pub ignore_index: u8,
}

/// The mean cross-entropy over all `n·h·w` pixels of `logits` `[n, k, h', w']`.
pub fn pixel_cross_entropy(logits: Tensor<4>, labels: &PixelLabels) -> Tensor<1> {
    let [n, h, w] = labels.shape;
    let device = logits.device();
    let logp = log_softmax(resize(logits, [h, w]), 1);
    let ignore = labels.ignore_index;
    let idx: Vec<i64> = labels
        .values
        .iter()
        .map(|&l| if l == ignore { 0 } else { l as i64 })
        .collect();
    let keep: Vec<f32> = labels
        .values
        .iter()
        .map(|&l| f32::from(u8::from(l != ignore)))
        .collect();
    let idx = Tensor::<4, Int>::from_data(TensorData::new(idx, [n, 1, h, w]), &device);
    let keep = Tensor::<4>::from_data(TensorData::new(keep, [n, 1, h, w]), &device);
    let picked = logp.gather(1, idx) * keep;
    picked.sum().neg() / (n * h * w) as f64
}

/// The decode head's loss plus `aux_weight` times the auxiliary head's.
pub fn segmentation_loss(
    logits: Tensor<4>,
    aux: Option<(Tensor<4>, f64)>,
    labels: &PixelLabels,
) -> Tensor<1> {
    let main = pixel_cross_entropy(logits, labels);
    match aux {
        Some((a, weight)) => main + pixel_cross_entropy(a, labels) * weight,
        None => main,
    }
}
