//! mmsegmentation's training pipeline for one sample, at the model's input size S×S:
//! `RandomResize` (the sample scaled, aspect kept, to fit ratio·S with ratio in [0.5, 2]),
//! `RandomCrop` of S×S with `cat_max_ratio` 0.75 (up to 10 tries for a crop where no single
//! class covers more than 75% of the labelled pixels), padding (image 0, mask ignored) where
//! the sample is smaller, `RandomFlip` (0.5) and `PhotoMetricDistortion` (each with
//! probability 0.5: brightness ±32; contrast 0.5–1.5, before or after the colour changes; for
//! colour images, saturation 0.5–1.5 and hue ±18 in OpenCV's 8-bit units, i.e. ±36°, in HSV).

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
    let contrast_first = rng.random_bool(0.5);
    let contrast = rng.random_bool(0.5).then(|| rng.random_range(0.5f32..=1.5));
    let colour = s.shape[0] == 3;
    let saturation = (colour && rng.random_bool(0.5)).then(|| rng.random_range(0.5f32..=1.5));
    // OpenCV's 8-bit hue runs 0-180, so mmsegmentation's ±18 is ±36 degrees.
    let hue = (colour && rng.random_bool(0.5)).then(|| 2.0 * rng.random_range(-18i32..=18) as f32);
    let mut x: Vec<f32> = s.pixels.iter().map(|&p| p as f32).collect();
    let scale = |x: &mut Vec<f32>, a: f32, b: f32| {
        x.iter_mut()
            .for_each(|v| *v = (*v * a + b).clamp(0.0, 255.0));
    };
    if let Some(d) = delta {
        scale(&mut x, 1.0, d);
    }
    match contrast {
        Some(a) if contrast_first => scale(&mut x, a, 0.0),
        _ => {}
    }
    if saturation.is_some() || hue.is_some() {
        shift_hsv(
            &mut x,
            s.shape[1] * s.shape[2],
            saturation.unwrap_or(1.0),
            hue.unwrap_or(0.0),
        );
    }
    match contrast {
        Some(a) if !contrast_first => scale(&mut x, a, 0.0),
        _ => {}
    }
    s.pixels = x.into_iter().map(|v| v.round() as u8).collect();
    s
}

/// Planar RGB (`hw` pixels a plane, 0-255) through HSV: saturation times `sat` (capped at
/// full), hue turned by `hue` degrees.
fn shift_hsv(x: &mut [f32], hw: usize, sat: f32, hue: f32) {
    for i in 0..hw {
        let [r, g, b] = [x[i], x[hw + i], x[2 * hw + i]];
        let (h, s, v) = rgb_to_hsv(r, g, b);
        let [r, g, b] = hsv_to_rgb((h + hue).rem_euclid(360.0), (s * sat).min(1.0), v);
        [x[i], x[hw + i], x[2 * hw + i]] = [r, g, b];
    }
}

/// Hue in degrees, saturation 0-1, value 0-255.
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let v = r.max(g).max(b);
    let c = v - r.min(g).min(b);
    if c <= 0.0 {
        return (0.0, 0.0, v);
    }
    let h = if v == r {
        60.0 * (g - b) / c
    } else if v == g {
        120.0 + 60.0 * (b - r) / c
    } else {
        240.0 + 60.0 * (r - g) / c
    };
    (h.rem_euclid(360.0), c / v, v)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let c = v * s;
    let k = |n: f32| (n + h / 60.0).rem_euclid(6.0);
    let f = |n: f32| v - c * k(n).min(4.0 - k(n)).clamp(0.0, 1.0);
    [f(5.0), f(3.0), f(1.0)]
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
    fn hsv_round_trips_and_hue_turns() {
        for rgb in [
            [255.0, 0.0, 0.0],
            [10.0, 200.0, 90.0],
            [30.0, 30.0, 30.0],
            [0.0, 5.0, 250.0],
        ] {
            let (h, s, v) = rgb_to_hsv(rgb[0], rgb[1], rgb[2]);
            let back = hsv_to_rgb(h, s, v);
            for k in 0..3 {
                assert!((back[k] - rgb[k]).abs() < 1e-3, "{rgb:?} -> {back:?}");
            }
        }
        let mut red = vec![255.0, 0.0, 0.0];
        shift_hsv(&mut red, 1, 1.0, 120.0);
        assert!(
            red.iter()
                .zip([0.0, 255.0, 0.0])
                .all(|(a, b)| (a - b).abs() < 1e-3),
            "{red:?}"
        );
        let mut x = vec![200.0, 100.0, 100.0];
        shift_hsv(&mut x, 1, 0.0, 0.0);
        assert!(
            x.iter().all(|&v| (v - 200.0).abs() < 1e-3),
            "no saturation is grey at the value: {x:?}"
        );
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
