//! A segmentor's predictions on images of any size, in mmsegmentation's two test modes, and
//! its metrics over a split at each image's own resolution (the logits resized to the label,
//! as mmsegmentation scores them).
//!
//! - `whole`: the image resized to the model's input, the logits resized back.
//! - `slide[:STRIDE]`: the image resized, keeping its aspect ratio, until it covers the model's
//!   input (its shorter side becomes the input's), then windows of the input's size every
//!   STRIDE pixels (default ⅔ of the window, mmsegmentation's 341 for 512), logits averaged
//!   where they overlap ([`Segmentor::slide`]) and resized back. For images of another shape
//!   than the model's input, it keeps their proportions where `whole` squeezes them.

use burn::tensor::{Device, Tensor, TensorData};

use super::iou::{argmax_channels, IouAreas, IouMetrics};
use crate::checkpoint::seg_dir::SegModelConfig;
use crate::data::seg::SegSplit;
use crate::data::seg_sample::{adapt_channels, resize_sample, SegSample};
use crate::error::Result;
use crate::model::weights::to_vec;
use crate::segment::layers::resize;
use crate::segment::Segmentor;

/// How a segmentor meets an image of another size than its input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SegMode {
    #[default]
    Whole,
    /// Windows every `stride` pixels (None: ⅔ of the window).
    Slide { stride: Option<usize> },
}

impl std::fmt::Display for SegMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegMode::Whole => write!(f, "whole"),
            SegMode::Slide { stride: None } => write!(f, "slide"),
            SegMode::Slide { stride: Some(n) } => write!(f, "slide:{n}"),
        }
    }
}

impl std::str::FromStr for SegMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("'{s}': expected whole, slide or slide:STRIDE (pixels, ≥ 1)");
        match s.split_once(':') {
            None if s == "whole" => Ok(SegMode::Whole),
            None if s == "slide" => Ok(SegMode::Slide { stride: None }),
            Some(("slide", n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(SegMode::Slide { stride: Some(n) }),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// 8-bit planes of `hw` pixels each, scaled to [0, 1] and normalised by `[mean, std]`.
pub(crate) fn normalise<'a>(
    [mean, std]: [&'a [f64]; 2],
    pixels: &'a [u8],
    hw: usize,
) -> impl Iterator<Item = f32> + 'a {
    pixels.iter().enumerate().map(move |(k, &p)| {
        let ch = k / hw;
        ((p as f64 / 255.0 - mean[ch]) / std[ch]) as f32
    })
}

/// The input tensor `[1, c, h, w]` of a sample at `size`, normalised by `config`.
fn input(config: &SegModelConfig, s: SegSample, size: [usize; 2], device: &Device) -> Tensor<4> {
    let s = resize_sample(s, size);
    let x: Vec<f32> =
        normalise([&config.mean, &config.std], &s.pixels, size[0] * size[1]).collect();
    Tensor::from_data(
        TensorData::new(x, [1, s.shape[0], size[0], size[1]]),
        device,
    )
}

/// Logits `[1, k, h, w]` of one sample (at the model's channels) at its own size `h × w`.
pub fn sample_logits(
    net: &Segmentor,
    config: &SegModelConfig,
    sample: SegSample,
    mode: SegMode,
    device: &Device,
) -> Tensor<4> {
    let [_, h, w] = sample.shape;
    let crop = config.backbone.arch.img_size();
    let logits = match mode {
        SegMode::Whole => net.forward(input(config, sample, crop, device)).0,
        SegMode::Slide { stride } => {
            let f = (crop[0] as f64 / h as f64).max(crop[1] as f64 / w as f64);
            let side = |s: usize, c: usize| ((s as f64 * f).round() as usize).max(c);
            let x = input(config, sample, [side(h, crop[0]), side(w, crop[1])], device);
            let third =
                |c: usize| stride.unwrap_or(((2 * c) as f64 / 3.0).round().max(1.0) as usize);
            net.slide(x, crop, [third(crop[0]), third(crop[1])])
        }
    };
    resize(logits, [h, w])
}

/// The class of each pixel of `logits` `[1, k, h, w]`.
fn classes(logits: Tensor<4>) -> Vec<u32> {
    let [_, k, h, w] = logits.dims();
    argmax_channels(&to_vec(logits), 1, k, h * w)
}

/// mmsegmentation's metrics of `net` over the first `len` samples of `split`, each scored at
/// its own resolution; `whole` runs `batch_size` images at a time.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_segmentation(
    net: &Segmentor,
    config: &SegModelConfig,
    split: &SegSplit,
    len: usize,
    batch_size: usize,
    mode: SegMode,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<IouMetrics> {
    let mut areas = IouAreas::new(config.spec.num_classes, config.ignore_index);
    let chans = config.backbone.arch.in_chans();
    let crop = config.backbone.arch.img_size();
    let bs = if mode == SegMode::Whole {
        batch_size.max(1)
    } else {
        1
    };
    for start in (0..len).step_by(bs) {
        let samples = (start..(start + bs).min(len))
            .map(|i| Ok(adapt_channels(split.get(i)?, chans)))
            .collect::<Result<Vec<SegSample>>>()?;
        let labels: Vec<(Vec<u32>, [usize; 2])> = samples
            .iter()
            .map(|s| {
                (
                    s.mask.iter().map(|&l| l as u32).collect(),
                    [s.shape[1], s.shape[2]],
                )
            })
            .collect();
        let logits: Vec<Tensor<4>> = match mode {
            SegMode::Whole => {
                // One buffer for the batch: no per-image tensors to concatenate.
                let n = samples.len();
                let c = samples[0].shape[0];
                let hw = crop[0] * crop[1];
                let mut x = Vec::with_capacity(n * c * hw);
                for s in samples {
                    x.extend(normalise(
                        [&config.mean, &config.std],
                        &resize_sample(s, crop).pixels,
                        hw,
                    ));
                }
                let x = Tensor::from_data(TensorData::new(x, [n, c, crop[0], crop[1]]), device);
                let y = net.forward(x).0;
                let n = y.dims()[0];
                y.chunk(n, 0)
            }
            SegMode::Slide { .. } => samples
                .into_iter()
                .map(|s| sample_logits(net, config, s, mode, device))
                .collect(),
        };
        for (y, (label, size)) in logits.into_iter().zip(&labels) {
            areas.add(&classes(resize(y, *size)), label);
        }
        progress(labels.len());
    }
    Ok(areas.metrics())
}

/// The class of each pixel of one image (`pixels` `[3, h, w]` RGB, any size), converted to
/// the model's channels (the mean of R, G and B for one).
pub fn predict_mask(
    net: &Segmentor,
    config: &SegModelConfig,
    pixels: &[u8],
    [h, w]: [usize; 2],
    mode: SegMode,
    device: &Device,
) -> Vec<u8> {
    let sample = SegSample {
        pixels: pixels.to_vec(),
        shape: [3, h, w],
        mask: vec![0; h * w],
    };
    let sample = adapt_channels(sample, config.backbone.arch.in_chans());
    classes(sample_logits(net, config, sample, mode, device))
        .into_iter()
        .map(|c| c as u8)
        .collect()
}
