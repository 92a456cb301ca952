//! From 8-bit pixels to a normalised model input: channel adaptation, resizing and cropping
//! (from the model's `pretrained_cfg`), training augmentation, normalisation, random erasing.

use rand::rngs::StdRng;
use rand::Rng;

use super::RawImage;
use crate::model::image::PretrainedCfg;

/// Per-sample augmentation for training.
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    pub hflip: bool,
    /// Zero-pad by this many pixels, then crop back at a random offset (small images).
    pub pad_crop: usize,
    /// RandomResizedCrop (scale 0.08–1, ratio 3/4–4/3) instead of resize + centre crop.
    pub random_resized_crop: bool,
    /// Probability of erasing one random rectangle with noise (timm's `reprob`, pixel mode).
    pub erase_prob: f64,
    /// RandAugment: `(ops per image, magnitude 0..=10)`; `None` is off.
    pub rand_augment: Option<(usize, f64)>,
}

impl Augment {
    /// The usual recipe for a split: pad-and-crop + flip for small in-memory images,
    /// RandomResizedCrop + flip for image files.
    pub fn for_split(small: bool, img: usize) -> Self {
        Self {
            hflip: true,
            pad_crop: if small { (img / 8).max(1) } else { 0 },
            random_resized_crop: !small,
            erase_prob: 0.0,
            rand_augment: None,
        }
    }
}

/// Turns a sample into a `[c, h, w]` f32 input for a model.
#[derive(Clone, Debug)]
pub struct Transform {
    pub channels: usize,
    pub size: [usize; 2],
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub crop_pct: f64,
    pub bicubic: bool,
    /// `None` for evaluation.
    pub augment: Option<Augment>,
}

impl Transform {
    pub fn new(
        channels: usize,
        size: [usize; 2],
        cfg: &PretrainedCfg,
        augment: Option<Augment>,
    ) -> Self {
        let mut cfg = cfg.clone();
        // Mean/std follow the model's channel count (grey models average RGB statistics).
        cfg.conform(channels, size, 1000);
        let floats = |v: Option<Vec<f64>>, d: f32| -> Vec<f32> {
            v.map(|v| v.into_iter().map(|x| x as f32).collect())
                .unwrap_or_else(|| vec![d; channels])
        };
        Self {
            channels,
            size,
            mean: floats(cfg.mean(), 0.5),
            std: floats(cfg.std(), 0.5),
            crop_pct: cfg.crop_pct().unwrap_or(1.0),
            bicubic: cfg.interpolation() == Some("bicubic"),
            augment,
        }
    }

    /// Applies the transform; `small` selects the small-image recipe (no crop_pct resize).
    pub fn apply(&self, img: &RawImage, small: bool, rng: &mut StdRng) -> Vec<f32> {
        let [c_in, h, w] = img.shape;
        let mut x: Vec<f32> = img.pixels.iter().map(|&p| p as f32 / 255.0).collect();
        x = adapt_channels(x, c_in, h * w, self.channels);
        let c = self.channels;
        let [oh, ow] = self.size;
        let aug = self.augment.as_ref();
        let (mut x, h, w) = match aug {
            Some(a) if a.random_resized_crop => {
                let (y0, x0, ch, cw) = random_resized_crop_box(h, w, rng);
                let crop = crop(&x, c, h, w, y0, x0, ch, cw);
                (resize(&crop, c, ch, cw, oh, ow, self.bicubic), oh, ow)
            }
            _ if small || self.crop_pct >= 1.0 => {
                if (h, w) == (oh, ow) {
                    (x, h, w)
                } else {
                    (resize(&x, c, h, w, oh, ow, self.bicubic), oh, ow)
                }
            }
            _ => {
                // timm's eval: resize the short side to size / crop_pct, then centre-crop.
                let scale_h = (oh as f64 / self.crop_pct).floor() as usize;
                let scale_w = (ow as f64 / self.crop_pct).floor() as usize;
                let (rh, rw) = if h <= w {
                    (scale_h, ((w * scale_h) as f64 / h as f64).round() as usize)
                } else {
                    (((h * scale_w) as f64 / w as f64).round() as usize, scale_w)
                };
                let r = resize(&x, c, h, w, rh.max(oh), rw.max(ow), self.bicubic);
                let (rh, rw) = (rh.max(oh), rw.max(ow));
                let (y0, x0) = ((rh - oh) / 2, (rw - ow) / 2);
                (crop(&r, c, rh, rw, y0, x0, oh, ow), oh, ow)
            }
        };
        if let Some((n, m)) = aug.and_then(|a| a.rand_augment) {
            rand_augment(&mut x, c, h, w, n, m, rng);
        }
        if let Some(a) = aug {
            if a.pad_crop > 0 {
                let p = a.pad_crop;
                let (dy, dx) = (rng.random_range(0..=2 * p), rng.random_range(0..=2 * p));
                x = shift(
                    &x,
                    c,
                    h,
                    w,
                    dy as isize - p as isize,
                    dx as isize - p as isize,
                );
            }
            if a.hflip && rng.random_bool(0.5) {
                for ch in 0..c {
                    for row in 0..h {
                        x[ch * h * w + row * w..ch * h * w + (row + 1) * w].reverse();
                    }
                }
            }
        }
        for ch in 0..c {
            let (m, s) = (
                self.mean[ch % self.mean.len()],
                self.std[ch % self.std.len()],
            );
            for v in &mut x[ch * h * w..(ch + 1) * h * w] {
                *v = (*v - m) / s;
            }
        }
        if let Some(a) = aug {
            if a.erase_prob > 0.0 && rng.random_bool(a.erase_prob.clamp(0.0, 1.0)) {
                random_erase(&mut x, c, h, w, rng);
            }
        }
        x
    }
}

/// RandAugment (Cubuk et al. 2020) on `[c, h, w]` values in [0, 1]: `n` operations drawn
/// uniformly, each at magnitude `m` of 10 (with timm's per-op noise of std 0.5), each applied
/// with probability 0.5. Geometric operations fill with zeros.
fn rand_augment(
    x: &mut Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
    n: usize,
    m: f64,
    rng: &mut StdRng,
) {
    for _ in 0..n {
        let op = rng.random_range(0..10);
        if !rng.random_bool(0.5) {
            continue;
        }
        let mag =
            (m + rng.sample::<f64, _>(rand_distr::StandardNormal) * 0.5).clamp(0.0, 10.0) / 10.0;
        let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        match op {
            0 => {}
            1 => affine(x, c, h, w, [1.0, sign * 0.3 * mag, 0.0, 0.0, 1.0, 0.0]), // shear x
            2 => affine(x, c, h, w, [1.0, 0.0, 0.0, sign * 0.3 * mag, 1.0, 0.0]), // shear y
            3 => affine(
                x,
                c,
                h,
                w,
                [1.0, 0.0, sign * 0.45 * mag * w as f64, 0.0, 1.0, 0.0],
            ), // translate x
            4 => affine(
                x,
                c,
                h,
                w,
                [1.0, 0.0, 0.0, 0.0, 1.0, sign * 0.45 * mag * h as f64],
            ), // translate y
            5 => {
                let a = sign * 30f64.to_radians() * mag;
                affine(x, c, h, w, [a.cos(), -a.sin(), 0.0, a.sin(), a.cos(), 0.0]);
            }
            6 => {
                let f = (1.0 + sign * 0.9 * mag) as f32; // brightness
                x.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
            }
            7 => {
                let f = (1.0 + sign * 0.9 * mag) as f32; // contrast around the mean
                let mean = x.iter().sum::<f32>() / x.len().max(1) as f32;
                x.iter_mut()
                    .for_each(|v| *v = (mean + (*v - mean) * f).clamp(0.0, 1.0));
            }
            8 => {
                let t = (1.0 - mag) as f32; // solarize above a threshold
                x.iter_mut().for_each(|v| {
                    if *v >= t {
                        *v = 1.0 - *v
                    }
                });
            }
            _ => {
                let bits = 8 - (4.0 * mag).round() as u32; // posterize to fewer bits
                let levels = (1u32 << bits) as f32;
                x.iter_mut()
                    .for_each(|v| *v = (*v * (levels - 1.0)).round() / (levels - 1.0));
            }
        }
    }
}

/// Resamples through the affine map `[a, b, tx, d, e, ty]` about the image centre (bilinear).
fn affine(x: &mut Vec<f32>, c: usize, h: usize, w: usize, t: [f64; 6]) {
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut out = vec![0.0f32; x.len()];
    for r in 0..h {
        for col in 0..w {
            let (px, py) = (col as f64 + 0.5 - cx, r as f64 + 0.5 - cy);
            let sx = t[0] * px + t[1] * py + t[2] + cx - 0.5;
            let sy = t[3] * px + t[4] * py + t[5] + cy - 0.5;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
            for k in 0..c {
                let at = |yy: f64, xx: f64| -> f32 {
                    if yy < 0.0 || xx < 0.0 || yy >= h as f64 || xx >= w as f64 {
                        0.0
                    } else {
                        x[k * h * w + yy as usize * w + xx as usize]
                    }
                };
                let v = at(y0, x0) * (1.0 - fx) * (1.0 - fy)
                    + at(y0, x0 + 1.0) * fx * (1.0 - fy)
                    + at(y0 + 1.0, x0) * (1.0 - fx) * fy
                    + at(y0 + 1.0, x0 + 1.0) * fx * fy;
                out[k * h * w + r * w + col] = v;
            }
        }
    }
    *x = out;
}

/// Grey → RGB by replication; RGB → grey by ITU-R 601 luma; otherwise repeat or truncate.
fn adapt_channels(x: Vec<f32>, c_in: usize, hw: usize, c_out: usize) -> Vec<f32> {
    if c_in == c_out {
        return x;
    }
    if c_out == 1 && c_in == 3 {
        return (0..hw)
            .map(|i| 0.299 * x[i] + 0.587 * x[hw + i] + 0.114 * x[2 * hw + i])
            .collect();
    }
    (0..c_out)
        .flat_map(|c| x[(c % c_in) * hw..(c % c_in + 1) * hw].to_vec())
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn crop(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    y0: usize,
    x0: usize,
    ch: usize,
    cw: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(c * ch * cw);
    for k in 0..c {
        for r in y0..y0 + ch {
            out.extend_from_slice(&x[k * h * w + r * w + x0..k * h * w + r * w + x0 + cw]);
        }
    }
    out
}

/// Translates by (dy, dx), filling with zeros: pad-then-crop without the padded copy.
fn shift(x: &[f32], c: usize, h: usize, w: usize, dy: isize, dx: isize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for k in 0..c {
        for r in 0..h as isize {
            let sr = r + dy;
            if sr < 0 || sr >= h as isize {
                continue;
            }
            for col in 0..w as isize {
                let sc = col + dx;
                if sc >= 0 && sc < w as isize {
                    out[k * h * w + (r as usize) * w + col as usize] =
                        x[k * h * w + (sr as usize) * w + sc as usize];
                }
            }
        }
    }
    out
}

fn random_resized_crop_box(h: usize, w: usize, rng: &mut StdRng) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..=1.0);
        let log_r = rng.random_range((3.0f64 / 4.0).ln()..=(4.0f64 / 3.0).ln());
        let ratio = log_r.exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            return (
                rng.random_range(0..=h - ch),
                rng.random_range(0..=w - cw),
                ch,
                cw,
            );
        }
    }
    let s = h.min(w);
    ((h - s) / 2, (w - s) / 2, s, s)
}

fn random_erase(x: &mut [f32], c: usize, h: usize, w: usize, rng: &mut StdRng) {
    let area = (h * w) as f64;
    for _ in 0..10 {
        let target = area * rng.random_range(0.02..=1.0 / 3.0);
        let ratio = rng.random_range((0.3f64).ln()..=(1.0f64 / 0.3).ln()).exp();
        let eh = (target * ratio).sqrt().round() as usize;
        let ew = (target / ratio).sqrt().round() as usize;
        if eh > 0 && ew > 0 && eh < h && ew < w {
            let (y0, x0) = (rng.random_range(0..=h - eh), rng.random_range(0..=w - ew));
            let normal = rand_distr::StandardNormal;
            for k in 0..c {
                for r in y0..y0 + eh {
                    for col in x0..x0 + ew {
                        x[k * h * w + r * w + col] = rng.sample::<f32, _>(normal);
                    }
                }
            }
            return;
        }
    }
}

/// Separable resampling with antialiasing when shrinking (as PIL does).
pub fn resize(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    bicubic: bool,
) -> Vec<f32> {
    let rows = weights(h, oh, bicubic);
    let cols = weights(w, ow, bicubic);
    let mut tmp = vec![0.0f32; c * h * ow];
    for k in 0..c {
        for r in 0..h {
            let src = &x[k * h * w + r * w..k * h * w + (r + 1) * w];
            for (oc, (start, ws)) in cols.iter().enumerate() {
                tmp[k * h * ow + r * ow + oc] = ws
                    .iter()
                    .enumerate()
                    .map(|(i, wt)| wt * src[start + i])
                    .sum();
            }
        }
    }
    let mut out = vec![0.0f32; c * oh * ow];
    for k in 0..c {
        for (or, (start, ws)) in rows.iter().enumerate() {
            for oc in 0..ow {
                out[k * oh * ow + or * ow + oc] = ws
                    .iter()
                    .enumerate()
                    .map(|(i, wt)| wt * tmp[k * h * ow + (start + i) * ow + oc])
                    .sum();
            }
        }
    }
    out
}

/// For each output index: first source index and normalised weights.
fn weights(n_in: usize, n_out: usize, bicubic: bool) -> Vec<(usize, Vec<f32>)> {
    let scale = n_in as f64 / n_out as f64;
    let support_scale = scale.max(1.0);
    let radius = if bicubic { 2.0 } else { 1.0 } * support_scale;
    let kernel = |t: f64| -> f64 {
        let t = t.abs();
        if bicubic {
            let a = -0.5;
            if t < 1.0 {
                (a + 2.0) * t.powi(3) - (a + 3.0) * t * t + 1.0
            } else if t < 2.0 {
                a * t.powi(3) - 5.0 * a * t * t + 8.0 * a * t - 4.0 * a
            } else {
                0.0
            }
        } else {
            (1.0 - t).max(0.0)
        }
    };
    (0..n_out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - radius).floor() as isize).max(0) as usize;
            let hi = ((center + radius).ceil() as usize).min(n_in);
            let mut ws: Vec<f64> = (lo..hi)
                .map(|i| kernel((i as f64 + 0.5 - center) / support_scale))
                .collect();
            let sum: f64 = ws.iter().sum();
            if sum.abs() > 1e-12 {
                ws.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, ws.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rand_augment_identity_shift_keeps_pixels() {
        let mut x: Vec<f32> = (0..2 * 6 * 5).map(|i| (i % 7) as f32 / 7.0).collect();
        let orig = x.clone();
        affine(&mut x, 2, 6, 5, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert!(x.iter().zip(&orig).all(|(a, b)| (a - b).abs() < 1e-6));
        affine(&mut x, 2, 6, 5, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        assert!((x[0] - orig[1]).abs() < 1e-6 && x[4] == 0.0);
    }

    #[test]
    fn resize_keeps_constants_and_sizes() {
        let x = vec![0.25f32; 2 * 28 * 28];
        for bicubic in [false, true] {
            let y = resize(&x, 2, 28, 28, 32, 40, bicubic);
            assert_eq!(y.len(), 2 * 32 * 40);
            assert!(y.iter().all(|v| (v - 0.25).abs() < 1e-5));
            let z = resize(&x, 2, 28, 28, 7, 7, bicubic);
            assert!(z.iter().all(|v| (v - 0.25).abs() < 1e-5));
        }
    }

    #[test]
    fn eval_transform_normalises_and_adapts_channels() {
        let img = RawImage {
            pixels: vec![255; 28 * 28],
            shape: [1, 28, 28],
            label: 0,
        };
        let cfg = crate::model::vit::config::preset("deit_tiny_patch16_224")
            .unwrap()
            .pretrained_cfg;
        let t = Transform::new(3, [28, 28], &cfg, None);
        let y = t.apply(&img, true, &mut StdRng::seed_from_u64(0));
        assert_eq!(y.len(), 3 * 28 * 28);
        assert!((y[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((y[2 * 784] - (1.0 - 0.406) / 0.225).abs() < 1e-5);
    }

    #[test]
    fn augmentation_is_seeded() {
        let img = RawImage {
            pixels: (0..784).map(|i| (i % 251) as u8).collect(),
            shape: [1, 28, 28],
            label: 0,
        };
        let cfg = crate::model::vit::config::preset("vit_tiny_patch16_224")
            .unwrap()
            .pretrained_cfg;
        let mut a = Augment::for_split(true, 28);
        a.erase_prob = 0.5;
        a.rand_augment = Some((2, 9.0));
        let t = Transform::new(1, [28, 28], &cfg, Some(a));
        let run = |s| t.apply(&img, true, &mut StdRng::seed_from_u64(s));
        assert_eq!(run(3), run(3));
        assert!((0..8).any(|s| run(s) != run(s + 1)));
    }
}
