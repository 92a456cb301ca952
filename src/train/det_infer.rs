//! A detector's inputs and inference: samples resized to the network's input (boxes scaled
//! with them), detections scaled back to each image's own pixels, and COCO box AP over a split
//! as pycocotools computes it (`coco_ap`).

use std::sync::atomic::AtomicUsize;

use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;

use super::coco_ap::{coco_eval, CocoStats, DetBox};
use super::seg_infer::normalise;
use crate::checkpoint::det_dir::DetModelConfig;
use crate::data::coco::CocoBox;
use crate::data::det::{DetSample, DetSplit};
use crate::data::loader::readable;
use crate::data::seg_sample::{adapt_pixels, resize_pixels};
use crate::detect::loss::ImageTargets;
use crate::detect::post::Detection;
use crate::detect::Detector;
use crate::error::Result;

/// Normalised images `[n, c, h, w]` at the network's input and their targets there.
pub struct DetBatch {
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub targets: Vec<ImageTargets>,
}

/// `s` at the network's input `[h, w]` with `chans` channels, its boxes scaled alike (an image
/// of another shape is stretched, not padded); with `flip`, mirrored left to right.
pub fn fit_sample(s: &DetSample, chans: usize, [mh, mw]: [usize; 2], flip: bool) -> DetSample {
    let [_, h, w] = s.shape;
    let (sy, sx) = (mh as f32 / h as f32, mw as f32 / w as f32);
    let pixels = adapt_pixels(&s.pixels, s.shape, chans);
    let mut pixels = resize_pixels(&pixels, [chans, h, w], [mh, mw]);
    let mut boxes: Vec<[f32; 4]> = (s.boxes.iter())
        .map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy])
        .collect();
    if flip {
        for row in pixels.chunks_mut(mw) {
            row.reverse();
        }
        let wf = mw as f32;
        boxes = boxes
            .iter()
            .map(|b| [wf - b[2], b[1], wf - b[0], b[3]])
            .collect();
    }
    DetSample {
        pixels,
        shape: [chans, mh, mw],
        boxes,
        labels: s.labels.clone(),
        areas: s.areas.clone(),
        ignore: s.ignore.clone(),
    }
}

/// Samples `indices` of `split` as a batch; with `rng`, each flipped with probability ½
/// (torchvision's `RandomHorizontalFlip`). With `skip`, unreadable images are left out and
/// counted there.
pub fn det_batch(
    config: &DetModelConfig,
    split: &DetSplit,
    indices: &[usize],
    mut rng: Option<&mut rand::rngs::StdRng>,
    skip: Option<&AtomicUsize>,
) -> Result<DetBatch> {
    let size = config.backbone.arch.img_size();
    let chans = config.backbone.arch.in_chans();
    let mut batch = DetBatch {
        images: Vec::new(),
        shape: [0, chans, size[0], size[1]],
        targets: Vec::with_capacity(indices.len()),
    };
    for &i in indices {
        let flip = rng.as_mut().is_some_and(|r| r.random::<bool>());
        let Some(sample) = readable(split.get(i), skip)? else {
            continue;
        };
        batch.shape[0] += 1;
        let s = fit_sample(&sample, chans, size, flip);
        let stats = [config.mean.as_slice(), config.std.as_slice()];
        batch
            .images
            .extend(normalise(stats, &s.pixels, size[0] * size[1]));
        // Crowd regions and difficult objects are no targets (torchvision's references drop
        // crowd boxes from training too).
        let kept = (0..s.boxes.len()).filter(|&b| !s.ignore[b]);
        let (boxes, labels) = kept.map(|b| (s.boxes[b], s.labels[b])).unzip();
        batch.targets.push(ImageTargets { boxes, labels });
    }
    Ok(batch)
}

/// The detections of `samples` in each one's own pixels.
pub fn detect_samples(
    det: &Detector,
    config: &DetModelConfig,
    samples: &[DetSample],
    device: &Device,
) -> Vec<Vec<Detection>> {
    let size = config.backbone.arch.img_size();
    let chans = config.backbone.arch.in_chans();
    let stats = [config.mean.as_slice(), config.std.as_slice()];
    let mut x = Vec::new();
    for s in samples {
        let fitted = fit_sample(s, chans, size, false);
        x.extend(normalise(stats, &fitted.pixels, size[0] * size[1]));
    }
    let shape = [samples.len(), chans, size[0], size[1]];
    let dets = det.detect(Tensor::<4>::from_data(TensorData::new(x, shape), device));
    dets.into_iter()
        .zip(samples)
        .map(|(d, s)| {
            let (sy, sx) = (
                s.shape[1] as f32 / size[0] as f32,
                s.shape[2] as f32 / size[1] as f32,
            );
            d.into_iter()
                .map(|mut d| {
                    let b = d.bbox;
                    d.bbox = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy];
                    d
                })
                .collect()
        })
        .collect()
}

/// COCO box AP of `det` on the first `n` samples of `split`, in each image's own pixels;
/// `progress` hears how many images are done.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_detection(
    det: &Detector,
    config: &DetModelConfig,
    split: &DetSplit,
    n: usize,
    batch_size: usize,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<CocoStats> {
    let mut gts = Vec::new();
    let mut dets = Vec::new();
    let indices: Vec<usize> = (0..n.min(split.len())).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let samples = chunk
            .iter()
            .map(|&i| split.get(i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for (&i, s) in chunk.iter().zip(&samples) {
            gts.extend(truth_boxes(i as u64 + 1, s));
        }
        for (&i, found) in chunk
            .iter()
            .zip(detect_samples(det, config, &samples, device))
        {
            dets.extend(found.into_iter().map(|d| det_box(i as u64 + 1, &d)));
        }
        progress(chunk.len());
    }
    let images: Vec<u64> = indices.iter().map(|&i| i as u64 + 1).collect();
    let categories: Vec<u64> = (0..config.spec.num_classes as u64).collect();
    Ok(coco_eval(&gts, &dets, &images, &categories))
}

/// A sample's boxes as COCO ground truth of image `id`, category = class index.
pub fn truth_boxes(id: u64, s: &DetSample) -> Vec<CocoBox> {
    (0..s.boxes.len())
        .map(|i| {
            let b = s.boxes[i];
            CocoBox {
                image: id,
                category: s.labels[i] as u64,
                bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]].map(f64::from),
                area: s.areas[i] as f64,
                crowd: s.ignore[i],
            }
        })
        .collect()
}

/// A detection as COCO's `[x, y, w, h]` result of image `id`.
pub fn det_box(id: u64, d: &Detection) -> DetBox {
    let b = d.bbox;
    DetBox {
        image: id,
        category: d.label as u64,
        bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]].map(f64::from),
        score: d.score as f64,
    }
}
