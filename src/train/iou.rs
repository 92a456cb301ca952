//! Semantic segmentation's metric, as mmsegmentation's `IoUMetric` computes it: per image the
//! intersection, union, prediction and label areas per class (pixels labelled `ignore_index`
//! dropped), summed over the set; IoU = ΣI/ΣU and Acc = ΣI/Σlabel per class (NaN where nothing
//! was there to score), aAcc = ΣI/Σlabel over all classes, mIoU and mAcc the NaN-skipping means.
//! Areas are counted exactly (u64); mmsegmentation's f32 histograms agree below 2^24 pixels.

use serde::Serialize;

/// The areas of a set of images, per class.
#[derive(Clone, Debug, PartialEq)]
pub struct IouAreas {
    pub intersect: Vec<u64>,
    pub union: Vec<u64>,
    pub pred: Vec<u64>,
    pub label: Vec<u64>,
    ignore_index: u32,
}

/// What `eval` reports for a segmentation model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IouMetrics {
    pub miou: f64,
    pub macc: f64,
    pub aacc: f64,
    /// Per class; NaN (JSON null) where the class is in neither prediction nor label.
    pub iou: Vec<f64>,
    /// Per class; NaN (JSON null) where the class is never in the label.
    pub acc: Vec<f64>,
}

impl IouAreas {
    pub fn new(num_classes: usize, ignore_index: u32) -> Self {
        Self {
            intersect: vec![0; num_classes],
            union: vec![0; num_classes],
            pred: vec![0; num_classes],
            label: vec![0; num_classes],
            ignore_index,
        }
    }

    pub fn num_classes(&self) -> usize {
        self.label.len()
    }

    /// Adds one image (or any number of pixels): `pred` and `label` pair up pixel by pixel.
    /// Values outside `0..num_classes` are not counted, as `torch.histc` leaves them out.
    pub fn add(&mut self, pred: &[u32], label: &[u32]) {
        debug_assert_eq!(pred.len(), label.len());
        let c = self.num_classes() as u32;
        for (&p, &l) in pred.iter().zip(label) {
            if l == self.ignore_index {
                continue;
            }
            if p < c {
                self.pred[p as usize] += 1;
            }
            if l < c {
                self.label[l as usize] += 1;
                if p == l {
                    self.intersect[l as usize] += 1;
                }
            }
        }
        for k in 0..self.num_classes() {
            self.union[k] = self.pred[k] + self.label[k] - self.intersect[k];
        }
    }

    /// Sums another set's areas into these (images evaluated apart, e.g. by workers).
    pub fn merge(&mut self, other: &IouAreas) {
        for k in 0..self.num_classes() {
            self.intersect[k] += other.intersect[k];
            self.union[k] += other.union[k];
            self.pred[k] += other.pred[k];
            self.label[k] += other.label[k];
        }
    }

    pub fn metrics(&self) -> IouMetrics {
        let ratio = |a: &[u64], b: &[u64]| -> Vec<f64> {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| x as f64 / y as f64)
                .collect()
        };
        let iou = ratio(&self.intersect, &self.union);
        let acc = ratio(&self.intersect, &self.label);
        let total_i: u64 = self.intersect.iter().sum();
        let total_l: u64 = self.label.iter().sum();
        IouMetrics {
            miou: nanmean(&iou),
            macc: nanmean(&acc),
            aacc: total_i as f64 / total_l as f64,
            iou,
            acc,
        }
    }
}

/// NumPy's `nanmean`: the mean of the values that are not NaN; NaN when none is.
pub fn nanmean(v: &[f64]) -> f64 {
    let kept: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// The predicted class of each pixel: the arg-max over channels of `[N, C, H, W]` logits laid
/// out row-major, as `[N, H, W]`. Ties go to the lower class, as `torch.argmax` does.
pub fn argmax_channels(logits: &[f32], n: usize, c: usize, hw: usize) -> Vec<u32> {
    let mut out = vec![0u32; n * hw];
    for b in 0..n {
        let img = &logits[b * c * hw..(b + 1) * c * hw];
        let dst = &mut out[b * hw..(b + 1) * hw];
        let mut best = img[..hw].to_vec();
        for k in 1..c {
            for (i, &v) in img[k * hw..(k + 1) * hw].iter().enumerate() {
                if v > best[i] {
                    best[i] = v;
                    dst[i] = k as u32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_prediction_scores_one_and_absent_classes_are_nan() {
        let mut a = IouAreas::new(3, 255);
        a.add(&[0, 1, 1, 2], &[0, 1, 1, 255]);
        let m = a.metrics();
        assert_eq!(m.iou[..2], [1.0, 1.0]);
        assert_eq!(m.miou, 1.0);
        assert!(
            m.iou[2].is_nan(),
            "the ignored pixel's prediction is not counted"
        );
        assert_eq!(m.aacc, 1.0);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_logits() {
        // One image, 2 classes, 3 pixels: class 1 wins pixel 1 only.
        let logits = [0.5, 0.1, 0.3, 0.5, 0.9, 0.3];
        assert_eq!(argmax_channels(&logits, 1, 2, 3), vec![0, 1, 0]);
    }
}
