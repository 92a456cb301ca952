//! What RetinaNet computes on boxes outside the network, as torchvision does it in f32:
//! `box_iou`, the `Matcher` (foreground, background and the band between, with low-quality
//! matches allowed), and the `BoxCoder` (weights 1, 1, 1, 1) that turns a box into the
//! offsets of an anchor and back. Boxes are `(x1, y1, x2, y2)`.

/// The matcher's index for an anchor whose best IoU is below the background threshold.
pub const BELOW_LOW: i64 = -1;
/// … between the thresholds: neither foreground nor background, left out of every loss.
pub const BETWEEN: i64 = -2;

/// torchvision's `bbox_xform_clip`: no box grows more than 1000/16 times its anchor.
const XFORM_CLIP: f32 = 4.135_166_6; // ln(1000 / 16)

fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// `box_iou(a, b)`: `[a.len()][b.len()]`, row-major.
pub fn box_iou(a: &[[f32; 4]], b: &[[f32; 4]]) -> Vec<f32> {
    let areas_b: Vec<f32> = b.iter().map(area).collect();
    let mut out = Vec::with_capacity(a.len() * b.len());
    for p in a {
        let ap = area(p);
        for (q, &aq) in b.iter().zip(&areas_b) {
            let w = (p[2].min(q[2]) - p[0].max(q[0])).max(0.0);
            let h = (p[3].min(q[3]) - p[1].max(q[1])).max(0.0);
            let inter = w * h;
            out.push(inter / (ap + aq - inter));
        }
    }
    out
}

/// torchvision's `Matcher(high, low, allow_low_quality_matches=True)` on the IoU of every
/// ground-truth box (rows) with every anchor: per anchor the index of its box, or
/// [`BELOW_LOW`] / [`BETWEEN`].
pub fn match_anchors(gt: &[[f32; 4]], anchors: &[[f32; 4]], high: f32, low: f32) -> Vec<i64> {
    if gt.is_empty() {
        return vec![BELOW_LOW; anchors.len()];
    }
    let iou = box_iou(gt, anchors);
    let n = anchors.len();
    let best: Vec<(f32, i64)> = (0..n)
        .map(|j| {
            // torch's max keeps the first of equal values.
            (0..gt.len()).fold((f32::NEG_INFINITY, 0), |(v, g), i| {
                let q = iou[i * n + j];
                if q > v {
                    (q, i as i64)
                } else {
                    (v, g)
                }
            })
        })
        .collect();
    let mut matches: Vec<i64> = best
        .iter()
        .map(|&(v, g)| match v {
            v if v < low => BELOW_LOW,
            v if v < high => BETWEEN,
            _ => g,
        })
        .collect();
    // Each box's best anchors (ties included) keep their own best box, however low its IoU.
    for row in iou.chunks(n) {
        let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for (j, &q) in row.iter().enumerate() {
            if q == top {
                matches[j] = best[j].1;
            }
        }
    }
    matches
}

/// `BoxCoder.encode_single`: the offsets that take `anchor` to `gt`.
pub fn encode(gt: &[f32; 4], anchor: &[f32; 4]) -> [f32; 4] {
    let (ew, eh) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
    let (ex, ey) = (anchor[0] + 0.5 * ew, anchor[1] + 0.5 * eh);
    let (gw, gh) = (gt[2] - gt[0], gt[3] - gt[1]);
    let (gx, gy) = (gt[0] + 0.5 * gw, gt[1] + 0.5 * gh);
    [
        (gx - ex) / ew,
        (gy - ey) / eh,
        (gw / ew).ln(),
        (gh / eh).ln(),
    ]
}

/// `BoxCoder.decode_single`: the box that offsets `d` make of `anchor`.
pub fn decode(d: &[f32; 4], anchor: &[f32; 4]) -> [f32; 4] {
    let (w, h) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
    let (cx, cy) = (anchor[0] + 0.5 * w, anchor[1] + 0.5 * h);
    let (px, py) = (d[0] * w + cx, d[1] * h + cy);
    let pw = d[2].min(XFORM_CLIP).exp() * w;
    let ph = d[3].min(XFORM_CLIP).exp() * h;
    let (hw, hh) = (0.5 * pw, 0.5 * ph);
    [px - hw, py - hh, px + hw, py + hh]
}

/// `clip_boxes_to_image` for an input of `size` (h, w).
pub fn clip(b: [f32; 4], size: [usize; 2]) -> [f32; 4] {
    let (h, w) = (size[0] as f32, size[1] as f32);
    [
        b[0].clamp(0.0, w),
        b[1].clamp(0.0, h),
        b[2].clamp(0.0, w),
        b[3].clamp(0.0, h),
    ]
}
