//! RetinaNet's training loss as torchvision computes it: per image, the sigmoid focal loss
//! (α 0.25, γ 2) summed over every class of every anchor that is not between the matcher's
//! thresholds, and the L1 loss of the foreground anchors' box offsets, each divided by the
//! image's foreground count (at least 1); both averaged over the images.

use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};

use super::matching::{encode, match_anchors, BETWEEN};

const ALPHA: f32 = 0.25;

/// One image's ground truth at the network's input size.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageTargets {
    pub boxes: Vec<[f32; 4]>,
    pub labels: Vec<usize>,
}

/// The matcher's thresholds.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    pub fg_iou: f32,
    pub bg_iou: f32,
}

/// What the loss needs from the matching, built on the host: the one-hot class targets, the
/// offsets of matched boxes, and the per-anchor weights that select and normalise.
struct LossTargets {
    classes: Vec<f32>,
    cls_weight: Vec<f32>,
    offsets: Vec<f32>,
    box_weight: Vec<f32>,
}

fn loss_targets(
    anchors: &[[f32; 4]],
    targets: &[ImageTargets],
    k: usize,
    th: Thresholds,
) -> LossTargets {
    let t = anchors.len();
    let n = targets.len() as f32;
    let mut out = LossTargets {
        classes: vec![0.0; targets.len() * t * k],
        cls_weight: vec![0.0; targets.len() * t],
        offsets: vec![0.0; targets.len() * t * 4],
        box_weight: vec![0.0; targets.len() * t],
    };
    for (i, img) in targets.iter().enumerate() {
        let matched = match_anchors(&img.boxes, anchors, th.fg_iou, th.bg_iou);
        let fg = matched.iter().filter(|&&m| m >= 0).count().max(1) as f32;
        for (a, &m) in matched.iter().enumerate() {
            let at = i * t + a;
            if m != BETWEEN {
                out.cls_weight[at] = 1.0 / fg / n;
            }
            if m >= 0 {
                let g = m as usize;
                out.classes[at * k + img.labels[g]] = 1.0;
                out.box_weight[at] = 1.0 / fg / n;
                let d = encode(&img.boxes[g], &anchors[a]);
                out.offsets[at * 4..at * 4 + 4].copy_from_slice(&d);
            }
        }
    }
    out
}

/// torchvision's `sigmoid_focal_loss(x, t, alpha=0.25, gamma=2, reduction="none")`.
pub fn sigmoid_focal(x: Tensor<3>, t: Tensor<3>) -> Tensor<3> {
    let p = sigmoid(x.clone());
    let ce = relu(x.clone()) - x.clone() * t.clone() + x.abs().neg().exp().log1p();
    let p_t = p.clone() * t.clone() + (p.neg() + 1.0) * (t.clone().neg() + 1.0);
    let alpha_t = t * (2.0 * ALPHA - 1.0) + (1.0 - ALPHA);
    ce * (p_t.neg() + 1.0).powi_scalar(2) * alpha_t
}

/// `(classification, box regression)` for the head's outputs `cls` `[n, anchors, classes]`
/// and `reg` `[n, anchors, 4]` over `anchors`.
pub fn retina_loss(
    cls: Tensor<3>,
    reg: Tensor<3>,
    anchors: &[[f32; 4]],
    targets: &[ImageTargets],
    th: Thresholds,
) -> (Tensor<1>, Tensor<1>) {
    let [n, t, k] = cls.dims();
    let device: Device = cls.device();
    let lt = loss_targets(anchors, targets, k, th);
    let tensor =
        |v: Vec<f32>, shape: [usize; 3]| Tensor::<3>::from_data(TensorData::new(v, shape), &device);
    let classes = tensor(lt.classes, [n, t, k]);
    let cls_w = tensor(lt.cls_weight, [n, t, 1]);
    let offsets = tensor(lt.offsets, [n, t, 4]);
    let box_w = tensor(lt.box_weight, [n, t, 1]);
    let cls_loss = (sigmoid_focal(cls, classes) * cls_w).sum();
    let box_loss = ((reg - offsets).abs() * box_w).sum();
    (cls_loss, box_loss)
}
