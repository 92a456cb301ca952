//! RetinaNet's `postprocess_detections`: per level, the sigmoid scores of every (anchor,
//! class) above the score threshold, the best `topk_candidates` of them, their boxes decoded
//! from the anchors and clipped to the input; then NMS per class over all levels and the best
//! `detections_per_img` kept.

use super::boxes::batched_nms;
use super::matching::{clip, decode};

/// One detected box at the network's input size.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// `(x1, y1, x2, y2)`
    pub bbox: [f32; 4],
    pub score: f32,
    pub label: usize,
}

/// The post-processing settings (torchvision's defaults: 0.05, 1000, 0.5, 300).
#[derive(Clone, Copy, Debug)]
pub struct PostSettings {
    pub score_thresh: f32,
    pub topk_candidates: usize,
    pub nms_thresh: f64,
    pub detections_per_img: usize,
}

/// One image's detections from its logits `[anchors · classes]` and offsets `[anchors · 4]`,
/// `per_level` anchors in each level, for an input of `size` (h, w).
pub fn detections(
    logits: &[f32],
    offsets: &[f32],
    anchors: &[[f32; 4]],
    per_level: &[usize],
    size: [usize; 2],
    s: PostSettings,
) -> Vec<Detection> {
    let k = logits.len() / anchors.len().max(1);
    let mut cands = Vec::new();
    let mut start = 0;
    for &count in per_level {
        let level = start * k..(start + count) * k;
        let mut kept: Vec<(usize, f32)> = logits[level.clone()]
            .iter()
            .map(|&x| 1.0 / (1.0 + (-x).exp()))
            .enumerate()
            .filter(|&(_, p)| p > s.score_thresh)
            .collect();
        // torch's topk: the highest first (a stable sort keeps equal scores in index order).
        kept.sort_by(|a, b| b.1.total_cmp(&a.1));
        kept.truncate(s.topk_candidates);
        for (i, score) in kept {
            let a = start + i / k;
            let d: [f32; 4] = offsets[a * 4..a * 4 + 4].try_into().expect("4 offsets");
            let bbox = clip(decode(&d, &anchors[a]), size);
            cands.push(Detection {
                bbox,
                score,
                label: i % k,
            });
        }
        start += count;
    }
    let boxes: Vec<[f32; 4]> = cands.iter().map(|d| d.bbox).collect();
    let scores: Vec<f32> = cands.iter().map(|d| d.score).collect();
    let labels: Vec<usize> = cands.iter().map(|d| d.label).collect();
    let keep = batched_nms(&boxes, &scores, &labels, s.nms_thresh);
    keep.into_iter()
        .take(s.detections_per_img)
        .map(|i| cands[i].clone())
        .collect()
}
