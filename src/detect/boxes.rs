//! Box operations as torchvision's `ops/boxes.py` defines them, on `(x1, y1, x2, y2)` f32 boxes:
//! `nms` (its CPU kernel: highest score first, a box suppressed when its IoU with a kept one is
//! above the threshold) and `batched_nms` (no suppression across classes; torchvision's
//! coordinate offsets below 1,000 boxes, one pass per class above, as it switches).

/// torchvision's `nms`: the indices kept, in decreasing score.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f64) -> Vec<usize> {
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let areas: Vec<f32> = boxes.iter().map(area).collect();
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &boxes[i];
        for &j in &order[n + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let ovr = inter / (areas[i] + areas[j] - inter);
            if ovr as f64 > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// torchvision's `batched_nms`: NMS within each class, the kept indices in decreasing score.
pub fn batched_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[usize],
    iou_threshold: f64,
) -> Vec<usize> {
    if boxes.is_empty() {
        return Vec::new();
    }
    if boxes.len() * 4 <= 4000 {
        // Offsets of (max coordinate + 1) per class keep classes apart; computed in f32 as
        // torchvision does, so that IoUs round as its do.
        let max = boxes.iter().flatten().copied().fold(f32::MIN, f32::max);
        let shifted: Vec<[f32; 4]> = boxes
            .iter()
            .zip(classes)
            .map(|(b, &c)| {
                let off = c as f32 * (max + 1.0);
                [b[0] + off, b[1] + off, b[2] + off, b[3] + off]
            })
            .collect();
        return nms(&shifted, scores, iou_threshold);
    }
    let mut keep = Vec::new();
    let mut ids: Vec<usize> = classes.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for c in ids {
        let members: Vec<usize> = (0..boxes.len()).filter(|&i| classes[i] == c).collect();
        let b: Vec<[f32; 4]> = members.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = members.iter().map(|&i| scores[i]).collect();
        keep.extend(nms(&b, &s, iou_threshold).into_iter().map(|k| members[k]));
    }
    keep.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    keep
}
