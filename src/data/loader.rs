//! Batches for an epoch, decoded and augmented in worker threads with prefetching.
//!
//! Everything random about batch `b` of epoch `e` comes from a generator seeded by
//! `(seed, e, b)`, so batches are the same for any worker count and a resumed run sees exactly
//! the batches the interrupted one would have.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution};

use super::transform::Transform;
use super::{DataError, Split};

/// What to do with an image that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBadImage {
    Fail,
    Skip,
}

/// Batch-level mixing (timm's Mixup with `mixup_alpha`, `cutmix_alpha`, switch prob 0.5).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Mixing {
    pub mixup: f64,
    pub cutmix: f64,
    pub smoothing: f64,
}

/// One batch on the host.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[b, c, h, w]` row-major
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<usize>,
    /// Soft targets `[b, classes]` (label smoothing and mixing folded in).
    pub targets: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    pub workers: usize,
    pub seed: u64,
    pub num_classes: usize,
    pub mixing: Mixing,
    pub on_bad_image: OnBadImage,
}

impl LoaderConfig {
    /// Where unreadable images are counted, when they are skipped.
    pub fn skip<'a>(&self, skipped: &'a AtomicUsize) -> Option<&'a AtomicUsize> {
        (self.on_bad_image == OnBadImage::Skip).then_some(skipped)
    }
}

/// `got`, or `None` where it is an unreadable image and `skip` (skipping) counts it.
pub fn readable<T>(
    got: Result<T, DataError>,
    skip: Option<&AtomicUsize>,
) -> Result<Option<T>, DataError> {
    match (got, skip) {
        (Ok(v), _) => Ok(Some(v)),
        (Err(DataError::BadImage { .. }), Some(skipped)) => {
            skipped.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
        (Err(e), _) => Err(e),
    }
}

/// Says how many images were skipped since the last call, if any.
pub fn warn_skipped(skipped: &AtomicUsize) {
    let n = skipped.swap(0, Ordering::Relaxed);
    if n > 0 {
        eprintln!("warning: skipped {n} unreadable image(s)");
    }
}

/// A seed that differs for every (seed, epoch, batch) and mixes bits well (SplitMix64).
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut z = 0x9e37_79b9_7f4a_7c15u64;
    for &p in parts {
        z ^= p
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(z << 6)
            .wrapping_add(z >> 2);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

/// The item order of an epoch, in batches.
pub fn epoch_batches(n: usize, cfg: &LoaderConfig, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    if cfg.shuffle {
        order.shuffle(&mut StdRng::seed_from_u64(derive_seed(&[
            cfg.seed,
            epoch as u64,
            0xdada,
        ])));
    }
    let bs = cfg.batch_size.max(1);
    let mut batches: Vec<Vec<usize>> = order.chunks(bs).map(<[usize]>::to_vec).collect();
    if cfg.drop_last && batches.len() > 1 && batches.last().is_some_and(|b| b.len() < bs) {
        batches.pop();
    }
    batches
}

/// Iterates the batches of one epoch from `start_batch` on, in order, prefetching in
/// `cfg.workers` threads. `skipped` counts images skipped under `OnBadImage::Skip`.
pub fn iterate(
    split: &Split,
    transform: &Transform,
    cfg: &LoaderConfig,
    epoch: usize,
    start_batch: usize,
    skipped: Arc<AtomicUsize>,
) -> impl Iterator<Item = Result<Batch, DataError>> {
    let batches: Arc<Vec<Vec<usize>>> = Arc::new(epoch_batches(split.len(), cfg, epoch));
    let total = batches.len();
    let next = Arc::new(AtomicUsize::new(start_batch));
    let workers = cfg.workers.max(1);
    // Bounded: workers stay at most a few batches ahead of the trainer.
    let (tx, rx) = mpsc::sync_channel::<(usize, Result<Batch, DataError>)>(2 * workers);
    for _ in 0..workers {
        let (tx, next, batches, split, transform, cfg, skipped) = (
            tx.clone(),
            next.clone(),
            batches.clone(),
            split.clone(),
            transform.clone(),
            cfg.clone(),
            skipped.clone(),
        );
        std::thread::spawn(move || loop {
            let b = next.fetch_add(1, Ordering::SeqCst);
            if b >= total {
                break;
            }
            let seed = derive_seed(&[cfg.seed, epoch as u64, b as u64]);
            let out = make_batch(&split, &transform, &cfg, &batches[b], seed, &skipped);
            if tx.send((b, out)).is_err() {
                break;
            }
        });
    }
    drop(tx);
    let mut pending: BTreeMap<usize, Result<Batch, DataError>> = BTreeMap::new();
    let mut want = start_batch;
    std::iter::from_fn(move || {
        if want >= total {
            return None;
        }
        while !pending.contains_key(&want) {
            match rx.recv() {
                Ok((b, r)) => {
                    pending.insert(b, r);
                }
                Err(_) => return None,
            }
        }
        let r = pending.remove(&want);
        want += 1;
        r
    })
}

fn make_batch(
    split: &Split,
    transform: &Transform,
    cfg: &LoaderConfig,
    items: &[usize],
    seed: u64,
    skipped: &AtomicUsize,
) -> Result<Batch, DataError> {
    let [oh, ow] = transform.size;
    let c = transform.channels;
    let mut images = Vec::with_capacity(items.len() * c * oh * ow);
    let mut labels = Vec::with_capacity(items.len());
    for (k, &i) in items.iter().enumerate() {
        let Some(raw) = readable(split.get(i), cfg.skip(skipped))? else {
            continue;
        };
        let mut rng = StdRng::seed_from_u64(derive_seed(&[seed, k as u64]));
        images.extend(transform.apply(&raw, split.is_small(), &mut rng));
        labels.push(raw.label);
    }
    let b = labels.len();
    let k = cfg.num_classes;
    let mut batch_rng = StdRng::seed_from_u64(derive_seed(&[seed, 0xbeef]));
    let m = cfg.mixing;
    let off = m.smoothing / k as f64;
    let on = 1.0 - m.smoothing + off;
    let one_hot = |l: usize| -> Vec<f32> {
        (0..k)
            .map(|j| if j == l { on } else { off } as f32)
            .collect()
    };
    let mut targets: Vec<f32> = labels.iter().flat_map(|&l| one_hot(l)).collect();
    if b > 1 && (m.mixup > 0.0 || m.cutmix > 0.0) {
        // As timm: pair each sample with the batch reversed; pick cutmix or mixup with prob 0.5.
        let use_cutmix = m.cutmix > 0.0 && (m.mixup <= 0.0 || batch_rng.random_bool(0.5));
        let alpha = if use_cutmix { m.cutmix } else { m.mixup };
        let mut lam = Beta::new(alpha, alpha)
            .map(|d| d.sample(&mut batch_rng))
            .unwrap_or(1.0);
        let per = c * oh * ow;
        let orig = images.clone();
        if use_cutmix {
            let cut = (1.0 - lam).sqrt();
            let (ch, cw) = ((oh as f64 * cut) as usize, (ow as f64 * cut) as usize);
            let (cy, cx) = (batch_rng.random_range(0..oh), batch_rng.random_range(0..ow));
            let (y0, y1) = (cy.saturating_sub(ch / 2), (cy + ch / 2).min(oh));
            let (x0, x1) = (cx.saturating_sub(cw / 2), (cx + cw / 2).min(ow));
            for i in 0..b {
                let j = b - 1 - i;
                for ch_ in 0..c {
                    for y in y0..y1 {
                        for x in x0..x1 {
                            let o = ch_ * oh * ow + y * ow + x;
                            images[i * per + o] = orig[j * per + o];
                        }
                    }
                }
            }
            lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (oh * ow) as f64;
        } else {
            for i in 0..b {
                let j = b - 1 - i;
                for o in 0..per {
                    images[i * per + o] =
                        (lam as f32) * orig[i * per + o] + (1.0 - lam as f32) * orig[j * per + o];
                }
            }
        }
        let t0 = targets.clone();
        for i in 0..b {
            let j = b - 1 - i;
            for q in 0..k {
                targets[i * k + q] =
                    lam as f32 * t0[i * k + q] + (1.0 - lam as f32) * t0[j * k + q];
            }
        }
    }
    Ok(Batch {
        images,
        shape: [b, c, oh, ow],
        labels,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_the_split_once() {
        let cfg = LoaderConfig {
            batch_size: 7,
            shuffle: true,
            drop_last: false,
            workers: 3,
            seed: 1,
            num_classes: 10,
            mixing: Mixing::default(),
            on_bad_image: OnBadImage::Fail,
        };
        let b = epoch_batches(50, &cfg, 0);
        let mut all: Vec<usize> = b.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        assert_ne!(epoch_batches(50, &cfg, 0), epoch_batches(50, &cfg, 1));
    }

    #[test]
    fn same_batches_for_any_worker_count() {
        let data = crate::data::Dataset::open("fmnist-mini").unwrap();
        let split = data.train.subset(40, 0);
        let cfg_pt = crate::model::vit::config::preset("vit_tiny_patch16_224")
            .unwrap()
            .pretrained_cfg;
        let t = Transform::new(
            1,
            [28, 28],
            &cfg_pt,
            Some(crate::data::transform::Augment::for_split(true, 28)),
        );
        let mut cfg = LoaderConfig {
            batch_size: 8,
            shuffle: true,
            drop_last: false,
            workers: 1,
            seed: 5,
            num_classes: 10,
            mixing: Mixing {
                mixup: 0.8,
                cutmix: 1.0,
                smoothing: 0.1,
            },
            on_bad_image: OnBadImage::Fail,
        };
        let run = |cfg: &LoaderConfig| {
            iterate(&split, &t, cfg, 2, 0, Arc::default())
                .map(|b| b.unwrap())
                .map(|b| (b.images, b.targets))
                .collect::<Vec<_>>()
        };
        let one = run(&cfg);
        cfg.workers = 4;
        assert_eq!(one, run(&cfg));
        assert_eq!(one.len(), 5);
        for (_, t) in &one {
            for row in t.chunks(10) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }
}
