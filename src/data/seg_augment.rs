//! mmsegmentation's training pipeline for one sample, at the model's input size S×S:
//! `RandomResize` (the sample scaled, aspect kept, to fit ratio·S with ratio in [0.5, 2]),
//! `RandomCrop` of S×S with `cat_max_ratio` 0.75 (up to 10 tries for a crop where no single
//! class covers more than 75% of the labelled pixels), padding (image 0, mask ignored) where
//! the sample is smaller, `RandomFlip` (0.5) and `PhotoMetricDistortion` (brightness ±32,
//! contrast 0.5–1.5, each with probability 0.5; saturation and hue only for colour images).

use rand::rngs::StdRng;
use rand::Rng;

use super::seg_sample::{resize_sample, SegSample, IGNORE_INDEX};

/// One augmented training sample of `size`.
pub fn augment(s: SegSample, size: [usize; 2], rng: &mut StdRng) -> SegSample {
    let ratio = rng.random_range(0.5f64..=2.0);
    let [_, h, w] = s.shape;
    let scale = (ratio * size[0] as f64 / h as f64).min(ratio * size[1] as f64 / w as f64);
    let scaled = [
        ((h as f64 * scale).round() as usize).max(1),
        ((w as f64 * scale).round() as usize).max(1),
    ];
    let s = crop(resize_sample(s, scaled), size, rng);
    let s = if rng.random_bool(0.5) { flipped(s) } else { s };
    photometric(s, rng)
}

/// A `size` crop (padded where the sample is smaller) whose largest class stays under 75%.
fn crop(s: SegSample, size: [usize; 2], rng: &mut StdRng) -> SegSample {
    let [_, h, w] = s.shape;
    let room = [h.saturating_sub(size[0]), w.saturating_sub(size[1])];
    let mut at = [0, 0];
    for _ in 0..10 {
        at = [rng.random_range(0..=room[0]), rng.random_range(0..=room[1])];
        if !dominated(&s, at, size) {
            break;
        }
    }
    cut(&s, at, size)
}

/// Whether one class covers more than 75% of the crop's labelled pixels (or it has one class).
fn dominated(s: &SegSample, [y0, x0]: [usize; 2], [ch, cw]: [usize; 2]) -> bool {
    let [_, h, w] = s.shape;
    let mut counts = [0usize; 256];
    for y in y0..(y0 + ch).min(h) {
        for &l in &s.mask[y * w + x0..y * w + (x0 + cw).min(w)] {
            counts[l as usize] += 1;
        }
    }
    counts[IGNORE_INDEX as usize] = 0;
    let total: usize = counts.iter().sum();
    let present = counts.iter().filter(|&&c| c > 0).count();
    let most = counts.iter().max().copied().unwrap_or(0);
    present <= 1 || most as f64 / total.max(1) as f64 >= 0.75
}

fn cut(s: &SegSample, [y0, x0]: [usize; 2], [ch, cw]: [usize; 2]) -> SegSample {
    let [c, h, w] = s.shape;
    let mut pixels = vec![0u8; c * ch * cw];
    let mut mask = vec![IGNORE_INDEX; ch * cw];
    for y in 0..ch.min(h - y0) {
        let n = cw.min(w - x0);
        let src = (y0 + y) * w + x0;
        mask[y * cw..y * cw + n].copy_from_slice(&s.mask[src..src + n]);
        for k in 0..c {
            let from = k * h * w + src;
            pixels[k * ch * cw + y * cw..][..n].copy_from_slice(&s.pixels[from..from + n]);
        }
    }
    SegSample {
        pixels,
        shape: [c, ch, cw],
        mask,
    }
}

/// Mirrored left-right, image and mask together.
pub fn flipped(mut s: SegSample) -> SegSample {
    let [c, h, w] = s.shape;
    for row in 0..c * h {
        s.pixels[row * w..(row + 1) * w].reverse();
    }
    for row in 0..h {
        s.mask[row * w..(row + 1) * w].reverse();
    }
    s
}

/// Brightness and contrast (and, for colour, saturation) as mmsegmentation draws them.
fn photometric(mut s: SegSample, rng: &mut StdRng) -> SegSample {
    let delta = rng
        .random_bool(0.5)
        .then(|| rng.random_range(-32.0f32..=32.0));
    let contrast = rng.random_bool(0.5).then(|| rng.random_range(0.5f32..=1.5));
    let saturation =
        (s.shape[0] == 3 && rng.random_bool(0.5)).then(|| rng.random_range(0.5f32..=1.5));
    let hw = s.shape[1] * s.shape[2];
    let mut x: Vec<f32> = s.pixels.iter().map(|&p| p as f32).collect();
    if let Some(d) = delta {
        x.iter_mut().for_each(|v| *v = (*v + d).clamp(0.0, 255.0));
    }
    if let Some(a) = contrast {
        x.iter_mut().for_each(|v| *v = (*v * a).clamp(0.0, 255.0));
    }
    if let Some(a) = saturation {
        for i in 0..hw {
            let grey = (x[i] + x[hw + i] + x[2 * hw + i]) / 3.0;
            for k in 0..3 {
                let v = &mut x[k * hw + i];
                *v = (grey + (*v - grey) * a).clamp(0.0, 255.0);
            }
        }
    }
    s.pixels = x.into_iter().map(|v| v.round() as u8).collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sample() -> SegSample {
        let (h, w) = (20, 30);
        SegSample {
            pixels: (0..h * w).map(|i| (i % 251) as u8).collect(),
            shape: [1, h, w],
            mask: (0..h * w).map(|i| ((i % w) / 10) as u8).collect(),
        }
    }

    #[test]
    fn augmented_samples_have_the_model_size_and_keep_labels_aligned() {
        for seed in 0..20 {
            let out = augment(sample(), [16, 16], &mut StdRng::seed_from_u64(seed));
            assert_eq!(out.shape, [1, 16, 16]);
            assert_eq!(out.pixels.len(), 256);
            assert!(
                out.mask.iter().all(|&l| l < 3 || l == IGNORE_INDEX),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_crop_larger_than_the_sample_pads_with_ignored_labels() {
        let s = cut(&sample(), [0, 0], [24, 30]);
        assert_eq!(
            s.mask[20 * 30..]
                .iter()
                .filter(|&&l| l == IGNORE_INDEX)
                .count(),
            4 * 30
        );
        assert_eq!(s.pixels[23 * 30], 0);
    }

    #[test]
    fn flipping_twice_is_the_identity() {
        assert_eq!(flipped(flipped(sample())), sample());
    }
}
