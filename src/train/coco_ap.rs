//! COCO box AP exactly as pycocotools' `COCOeval` (iouType `bbox`) computes it: per image and
//! category, detections sorted by score (stable) and cut at 100, greedily matched to ground
//! truth at each IoU threshold 0.50:0.05:0.95 (crowd boxes are ignored, measure IoU over the
//! detection's area and may match many); per category, area range and detection cap, the
//! matches of all images sorted by score (stable), precision made monotone and read at 101
//! recall points; AP is the mean over thresholds, recall points and categories with ground
//! truth. tests/fixtures/gen_coco_ap_fixtures.py checks it against pycocotools itself. The
//! ground truth is what `data::coco` reads.

use crate::data::coco::CocoBox;

/// A detection, `[x, y, w, h]` in pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct DetBox {
    pub image: u64,
    pub category: u64,
    pub bbox: [f64; 4],
    pub score: f64,
}

/// The twelve numbers of `COCOeval.summarize()` and the AP of each category (-1 for one
/// without ground truth, as pycocotools leaves it).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CocoStats {
    /// AP, AP50, AP75, AP small, medium, large; AR at 1, 10, 100; AR small, medium, large.
    pub stats: [f64; 12],
    pub per_class: Vec<f64>,
}

const MAX_DETS: [usize; 3] = [1, 10, 100];
/// all, small, medium, large.
const AREAS: [(f64, f64); 4] = [(0.0, 1e10), (0.0, 1024.0), (1024.0, 9216.0), (9216.0, 1e10)];

/// numpy's `linspace(start, stop, n)`: `i·step + start`, the last point exactly `stop`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = stop;
    v
}

/// pycocotools' box IoU (`maskApi` `bbIou`): over the detection's area for a crowd box.
fn iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[0] + d[2]).min(g[0] + g[2]) - d[0].max(g[0]);
    let h = (d[1] + d[3]).min(g[1] + g[3]) - d[1].max(g[1]);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let da = d[2] * d[3];
    let union = if crowd { da } else { da + g[2] * g[3] - inter };
    inter / union
}

/// One image and category at one area range: its detections' scores (sorted, at most 100),
/// whether each matched at each threshold and whether it is ignored, and how many ground
/// truths count.
struct ImageEval {
    scores: Vec<f64>,
    matched: Vec<Vec<bool>>,
    ignored: Vec<Vec<bool>>,
    counted_gt: usize,
}

fn by_score(dets: &[&DetBox]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_by(|&a, &b| dets[b].score.total_cmp(&dets[a].score));
    order.truncate(MAX_DETS[2]);
    order
}

/// `COCOeval.evaluateImg` for one image, category and area range.
fn evaluate_image(gts: &[&CocoBox], dets: &[&DetBox], area: (f64, f64), thrs: &[f64]) -> ImageEval {
    let outside = |a: f64| a < area.0 || a > area.1;
    let mut gt: Vec<(&CocoBox, bool)> = gts
        .iter()
        .map(|g| (*g, g.crowd || outside(g.area)))
        .collect();
    gt.sort_by_key(|&(_, ignore)| ignore);
    let dt: Vec<&DetBox> = by_score(dets).into_iter().map(|i| dets[i]).collect();
    let ious: Vec<Vec<f64>> = dt
        .iter()
        .map(|d| {
            gt.iter()
                .map(|(g, _)| iou(&d.bbox, &g.bbox, g.crowd))
                .collect()
        })
        .collect();
    let mut matched = vec![vec![false; dt.len()]; thrs.len()];
    let mut ignored = vec![vec![false; dt.len()]; thrs.len()];
    for (t, &thr) in thrs.iter().enumerate() {
        let mut gt_taken = vec![false; gt.len()];
        for (di, d) in dt.iter().enumerate() {
            let mut best = thr.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for (gi, (g, g_ignore)) in gt.iter().enumerate() {
                if gt_taken[gi] && !g.crowd {
                    continue;
                }
                if m.is_some_and(|m| !gt[m].1) && *g_ignore {
                    break;
                }
                if ious[di][gi] < best {
                    continue;
                }
                best = ious[di][gi];
                m = Some(gi);
            }
            match m {
                Some(m) => {
                    matched[t][di] = true;
                    ignored[t][di] = gt[m].1;
                    gt_taken[m] = true;
                }
                None => ignored[t][di] = outside(d.bbox[2] * d.bbox[3]),
            }
        }
    }
    ImageEval {
        scores: dt.iter().map(|d| d.score).collect(),
        matched,
        ignored,
        counted_gt: gt.iter().filter(|(_, ignore)| !ignore).count(),
    }
}

/// Precision at each recall point and the final recall, over `evals` at one threshold `t`
/// with at most `max_det` detections an image (`COCOeval.accumulate`); None without ground
/// truth to count.
fn precision_recall(
    evals: &[ImageEval],
    t: usize,
    max_det: usize,
    rec_thrs: &[f64],
) -> Option<(Vec<f64>, f64)> {
    let npig: usize = evals.iter().map(|e| e.counted_gt).sum();
    if npig == 0 {
        return None;
    }
    let mut dets: Vec<(f64, bool, bool)> = evals
        .iter()
        .flat_map(|e| {
            (0..e.scores.len().min(max_det))
                .map(move |i| (e.scores[i], e.matched[t][i], e.ignored[t][i]))
        })
        .collect();
    dets.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut rc = Vec::with_capacity(dets.len());
    let mut pr = Vec::with_capacity(dets.len());
    for &(_, m, ig) in &dets {
        if ig {
            // Neither a true nor a false positive: the sums stay, but the point counts.
        } else if m {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        rc.push(tp / npig as f64);
        pr.push(tp / (fp + tp + f64::EPSILON));
    }
    for i in (1..pr.len()).rev() {
        if pr[i] > pr[i - 1] {
            pr[i - 1] = pr[i];
        }
    }
    let q = rec_thrs
        .iter()
        .map(|&r| {
            let i = rc.partition_point(|&x| x < r);
            pr.get(i).copied().unwrap_or(0.0)
        })
        .collect();
    Some((q, rc.last().copied().unwrap_or(0.0)))
}

/// `COCOeval` with its default parameters over `images` and `categories` (each evaluated in
/// ascending id order, as pycocotools sorts them).
pub fn coco_eval(
    gts: &[CocoBox],
    dets: &[DetBox],
    images: &[u64],
    categories: &[u64],
) -> CocoStats {
    let thrs = linspace(0.5, 0.95, 10);
    let rec_thrs = linspace(0.0, 1.0, 101);
    let (mut images, mut categories) = (images.to_vec(), categories.to_vec());
    images.sort_unstable();
    categories.sort_unstable();
    // precision[area][max_det][category][t] → the curve; recall likewise.
    let mut precision = vec![vec![vec![vec![None; thrs.len()]; categories.len()]; 3]; 4];
    let mut recall = vec![vec![vec![vec![None; thrs.len()]; categories.len()]; 3]; 4];
    for (k, &cat) in categories.iter().enumerate() {
        for (a, &area) in AREAS.iter().enumerate() {
            let evals: Vec<ImageEval> = images
                .iter()
                .filter_map(|&img| {
                    let g: Vec<&CocoBox> = gts
                        .iter()
                        .filter(|g| g.image == img && g.category == cat)
                        .collect();
                    let d: Vec<&DetBox> = dets
                        .iter()
                        .filter(|d| d.image == img && d.category == cat)
                        .collect();
                    (!g.is_empty() || !d.is_empty()).then(|| evaluate_image(&g, &d, area, &thrs))
                })
                .collect();
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                for t in 0..thrs.len() {
                    if let Some((q, r)) = precision_recall(&evals, t, max_det, &rec_thrs) {
                        precision[a][m][k][t] = Some(q);
                        recall[a][m][k][t] = Some(r);
                    }
                }
            }
        }
    }
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            -1.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let ap = |a: usize, m: usize, t: Option<usize>, k: Option<usize>| {
        let curves = precision[a][m]
            .iter()
            .enumerate()
            .filter(|(kk, _)| k.is_none_or(|k| k == *kk))
            .flat_map(|(_, ts)| {
                ts.iter()
                    .enumerate()
                    .filter(|(tt, _)| t.is_none_or(|t| t == *tt))
            })
            .filter_map(|(_, q)| q.as_ref());
        mean(curves.flatten().copied().collect())
    };
    let ar = |a: usize, m: usize| mean(recall[a][m].iter().flatten().flatten().copied().collect());
    let stats = [
        ap(0, 2, None, None),
        ap(0, 2, Some(0), None),
        ap(0, 2, Some(5), None),
        ap(1, 2, None, None),
        ap(2, 2, None, None),
        ap(3, 2, None, None),
        ar(0, 0),
        ar(0, 1),
        ar(0, 2),
        ar(1, 2),
        ar(2, 2),
        ar(3, 2),
    ];
    let per_class = (0..categories.len())
        .map(|k| ap(0, 2, None, Some(k)))
        .collect();
    CocoStats { stats, per_class }
}
