//! `fmnist-scenes`: semantic-segmentation scenes made of real Fashion-MNIST garments. Each
//! scene is a square grayscale canvas with a few garments, scaled and placed with partial
//! overlap on a textured, noisy background (so that a threshold does not solve it); its mask
//! holds 0 for background and 1 + the garment's class where the garment's silhouette is, later
//! garments occluding earlier ones. Each garment still visible is also an object: its class
//! and the tight box of its visible pixels (for detection, issue 38).
//!
//! A scene is a pure function of (version, seed, split, index): nothing is stored, any scene can
//! be drawn alone, and a number reported with a version can be reproduced. Training scenes use
//! only the training garments that validation does not hold out; validation scenes only the
//! held-out ones; test scenes only the test garments.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::loader::derive_seed;
use super::transform::resize;
use super::ImageSet;

/// Bumped whenever a scene drawn from the same settings would change.
pub const SCENES_VERSION: u32 = 1;

/// Class names: background, then Fashion-MNIST's ten.
pub fn scene_classes() -> Vec<String> {
    std::iter::once("background".to_string())
        .chain(super::FMNIST_CLASSES.iter().map(|s| s.to_string()))
        .collect()
}

/// How scenes are drawn. The defaults are `fmnist-scenes`' (version 1).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SceneConfig {
    /// The canvas' side in pixels.
    pub size: usize,
    /// Garments per scene, drawn uniformly in this range (inclusive).
    pub garments: [usize; 2],
    /// A garment's side after scaling, drawn uniformly in this range (inclusive).
    pub garment_px: [usize; 2],
    /// The most of a garment's box an earlier garment's box may cover.
    pub max_overlap: f32,
    pub seed: u64,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            size: 96,
            garments: [2, 5],
            garment_px: [16, 56],
            max_overlap: 0.5,
            seed: 0,
        }
    }
}

/// One scene: `size × size` grayscale pixels, the class of each, and its objects.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub pixels: Vec<u8>,
    pub mask: Vec<u8>,
    pub size: usize,
    /// The garments left visible, in drawing order.
    pub objects: Vec<SceneObject>,
}

/// A garment as detection sees it: the mask's class (1 + the Fashion-MNIST class) and the
/// tight box of the pixels it still shows, `[x, y, w, h]` in pixels (COCO's convention: a
/// pixel's box is 1 × 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SceneObject {
    pub class: u8,
    pub bbox: [usize; 4],
    /// Visible pixels (COCO's `area`, a silhouette's and not the box's).
    pub area: usize,
}

/// The scenes of one split: a garment pool, a count, and what makes the split's seeds differ.
#[derive(Clone, Debug)]
pub struct SceneSplit {
    garments: Arc<ImageSet>,
    pool: Vec<usize>,
    count: usize,
    split_tag: u64,
    pub config: SceneConfig,
}

impl SceneSplit {
    /// `count` scenes drawn from the garments `pool` (indices into `garments`, 28×28 images).
    pub fn new(
        garments: Arc<ImageSet>,
        pool: Vec<usize>,
        count: usize,
        split_tag: u64,
        config: SceneConfig,
    ) -> Self {
        Self {
            garments,
            pool,
            count,
            split_tag,
            config,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Scene `i`, the same on every machine and in every order of drawing.
    pub fn scene(&self, i: usize) -> Scene {
        let seed = derive_seed(&[
            SCENES_VERSION as u64,
            self.config.seed,
            self.split_tag,
            i as u64,
        ]);
        let mut rng = StdRng::seed_from_u64(seed);
        let s = self.config.size;
        let mut canvas = background(s, &mut rng);
        let mut mask = vec![0u8; s * s];
        // Which garment (1-based drawing order) each pixel shows, 0 for none.
        let mut instance = vec![0u16; s * s];
        let mut classes = Vec::new();
        let mut boxes: Vec<[usize; 3]> = Vec::new();
        let [lo, hi] = self.config.garments;
        for _ in 0..rng.random_range(lo..=hi) {
            let g = self.pool[rng.random_range(0..self.pool.len())];
            let side =
                rng.random_range(self.config.garment_px[0]..=self.config.garment_px[1].min(s));
            let brightness = rng.random_range(0.7f32..=1.0);
            let Some(at) = self.place(side, &boxes, &mut rng) else {
                continue;
            };
            boxes.push([at.0, at.1, side]);
            classes.push(self.garments.labels[g] as u8 + 1);
            let shown = (&mut mask[..], &mut instance[..], classes.len() as u16);
            self.paste(g, side, brightness, at, &mut canvas, shown);
        }
        let pixels = canvas
            .iter()
            .map(|&v| {
                (v + rng.random_range(-12.0f32..=12.0))
                    .clamp(0.0, 255.0)
                    .round() as u8
            })
            .collect();
        Scene {
            pixels,
            mask,
            size: s,
            objects: visible_objects(&instance, &classes, s),
        }
    }

    /// A top-left corner for a `side` box that no earlier box covers beyond `max_overlap`.
    fn place(&self, side: usize, boxes: &[[usize; 3]], rng: &mut StdRng) -> Option<(usize, usize)> {
        let room = self.config.size - side;
        (0..20)
            .map(|_| (rng.random_range(0..=room), rng.random_range(0..=room)))
            .find(|&(y, x)| {
                boxes.iter().all(|&[by, bx, bs]| {
                    let oy = (y + side).min(by + bs).saturating_sub(y.max(by));
                    let ox = (x + side).min(bx + bs).saturating_sub(x.max(bx));
                    let smaller = side.min(bs) * side.min(bs);
                    (oy * ox) as f32 <= self.config.max_overlap * smaller as f32
                })
            })
    }

    /// Draws garment `g` scaled to `side` at `(y, x)`: its silhouette (pixels ≥ 12 of 255 after
    /// scaling) replaces canvas and mask.
    fn paste(
        &self,
        g: usize,
        side: usize,
        brightness: f32,
        (y, x): (usize, usize),
        canvas: &mut [f32],
        (mask, instance, id): (&mut [u8], &mut [u16], u16),
    ) {
        let [c, h, w] = self.garments.shape;
        let per = c * h * w;
        let src: Vec<f32> = self.garments.pixels[g * per..g * per + h * w]
            .iter()
            .map(|&p| p as f32)
            .collect();
        let scaled = resize(&src, 1, h, w, side, side, false);
        let class = self.garments.labels[g] as u8 + 1;
        let s = self.config.size;
        for r in 0..side {
            for q in 0..side {
                let v = scaled[r * side + q];
                if v >= 12.0 {
                    canvas[(y + r) * s + x + q] = v * brightness;
                    mask[(y + r) * s + x + q] = class;
                    instance[(y + r) * s + x + q] = id;
                }
            }
        }
    }
}

/// The tight box of each garment's visible pixels; garments covered entirely are left out.
fn visible_objects(instance: &[u16], classes: &[u8], s: usize) -> Vec<SceneObject> {
    let mut ext = vec![[usize::MAX, usize::MAX, 0, 0, 0]; classes.len()];
    for (p, &id) in instance.iter().enumerate() {
        if id > 0 {
            let e = &mut ext[id as usize - 1];
            let (y, x) = (p / s, p % s);
            *e = [
                e[0].min(x),
                e[1].min(y),
                e[2].max(x + 1),
                e[3].max(y + 1),
                e[4] + 1,
            ];
        }
    }
    ext.iter()
        .zip(classes)
        .filter(|(e, _)| e[4] > 0)
        .map(|(e, &class)| SceneObject {
            class,
            bbox: [e[0], e[1], e[2] - e[0], e[3] - e[1]],
            area: e[4],
        })
        .collect()
}

/// A smooth texture (three random gratings) between about 20 and 120 of 255: garments are
/// brighter on average but not everywhere, and a garment's dark parts sink into it.
fn background(s: usize, rng: &mut StdRng) -> Vec<f32> {
    let base = rng.random_range(30.0f32..=70.0);
    let gratings: Vec<[f32; 4]> = (0..3)
        .map(|_| {
            let angle = rng.random_range(0.0f32..std::f32::consts::PI);
            let freq = rng.random_range(0.03f32..=0.25);
            let amp = rng.random_range(5.0f32..=25.0);
            let phase = rng.random_range(0.0f32..std::f32::consts::TAU);
            [angle.cos() * freq, angle.sin() * freq, amp, phase]
        })
        .collect();
    let mut out = vec![0.0f32; s * s];
    for (i, v) in out.iter_mut().enumerate() {
        let (y, x) = ((i / s) as f32, (i % s) as f32);
        *v = base
            + gratings
                .iter()
                .map(|[fy, fx, a, p]| a * (fy * y + fx * x + p).sin())
                .sum::<f32>();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn garments() -> Arc<ImageSet> {
        // Ten 28×28 "garments": a filled square of brightness 200, class = index.
        let mut pixels = vec![0u8; 10 * 28 * 28];
        for g in 0..10 {
            for r in 6..22 {
                for c in 6..22 {
                    pixels[g * 784 + r * 28 + c] = 200;
                }
            }
        }
        Arc::new(ImageSet {
            shape: [1, 28, 28],
            pixels,
            labels: (0..10).collect(),
        })
    }

    #[test]
    fn scenes_are_reproducible_and_differ_by_index_seed_and_split() {
        let cfg = SceneConfig::default();
        let a = SceneSplit::new(garments(), (0..10).collect(), 4, 1, cfg.clone());
        assert_eq!(a.scene(3), a.scene(3));
        assert_ne!(a.scene(2), a.scene(3));
        let b = SceneSplit::new(garments(), (0..10).collect(), 4, 2, cfg.clone());
        assert_ne!(a.scene(3), b.scene(3));
        let c = SceneSplit::new(
            garments(),
            (0..10).collect(),
            4,
            1,
            SceneConfig { seed: 9, ..cfg },
        );
        assert_ne!(a.scene(3), c.scene(3));
    }

    #[test]
    fn objects_box_exactly_the_visible_pixels_of_their_class() {
        let split = SceneSplit::new(garments(), (0..10).collect(), 30, 0, SceneConfig::default());
        for i in 0..split.len() {
            let sc = split.scene(i);
            let s = sc.size;
            assert!(!sc.objects.is_empty());
            for (p, &m) in sc.mask.iter().enumerate() {
                let (y, x) = (p / s, p % s);
                let inside = |o: &SceneObject| {
                    let [bx, by, bw, bh] = o.bbox;
                    o.class == m && (bx..bx + bw).contains(&x) && (by..by + bh).contains(&y)
                };
                assert!(
                    m == 0 || sc.objects.iter().any(inside),
                    "scene {i} pixel {p}"
                );
            }
            for o in &sc.objects {
                let [bx, by, bw, bh] = o.bbox;
                assert!(o.area > 0 && o.area <= bw * bh);
                let on_edge = |x: usize, y: usize| sc.mask[y * s + x] == o.class;
                assert!(
                    (by..by + bh).any(|y| on_edge(bx, y))
                        && (by..by + bh).any(|y| on_edge(bx + bw - 1, y))
                );
                assert!(
                    (bx..bx + bw).any(|x| on_edge(x, by))
                        && (bx..bx + bw).any(|x| on_edge(x, by + bh - 1))
                );
            }
        }
    }

    #[test]
    fn masks_hold_only_the_pool_classes_and_background() {
        let pool = vec![2, 7];
        let split = SceneSplit::new(garments(), pool, 20, 0, SceneConfig::default());
        let mut seen = [0usize; 11];
        for i in 0..split.len() {
            let s = split.scene(i);
            assert_eq!(s.pixels.len(), 96 * 96);
            for &m in &s.mask {
                seen[m as usize] += 1;
            }
        }
        assert!(seen[0] > 0 && seen[3] > 0 && seen[8] > 0, "{seen:?}");
        let others: usize = seen
            .iter()
            .enumerate()
            .filter(|(k, _)| ![0, 3, 8].contains(k))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(others, 0, "{seen:?}");
    }
}
