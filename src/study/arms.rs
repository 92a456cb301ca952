//! What a study is: its settings (`study.json`) and its arms, each a way to make a model and a
//! training length, all with one recipe.

use serde::{Deserialize, Serialize};

use crate::ops::precision::Precision;

/// Everything that sizes a study; saved as `study.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyConfig {
    /// `vit`, or `swin`: two stages of `base_depth` blocks each (heads h and 2h, window 7),
    /// every stage grown to 2L.
    #[serde(default = "vit_family")]
    pub family: String,
    pub data: String,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    pub val_split: f64,
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    /// L; the grown and from-scratch deep models have 2L positions.
    pub base_depth: usize,
    /// Epochs to pretrain the base.
    pub base_epochs: usize,
    /// E: epochs of fine-tuning after growth (scratch-long trains 3E).
    pub epochs: usize,
    /// Seeds for the arms the claim rests on (grown, identity, scratch 3E).
    pub seeds: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub smoothing: f64,
    pub drop_path: f64,
    /// Mixup alpha (0 = off).
    #[serde(default)]
    pub mixup: f64,
    /// RandAugment (ops per image, magnitude), as `train --rand-augment`.
    #[serde(default)]
    pub rand_augment: Option<(usize, f64)>,
    /// Random-erasing probability.
    #[serde(default)]
    pub reprob: f64,
    pub adapter_rank: usize,
    pub adapter_scale: f64,
    pub workers: usize,
    pub device: String,
    /// Arms to run (all when empty).
    pub only: Vec<String>,
    /// The arithmetic of the matrix products (resolved, never auto). Like `only`, not one of
    /// the settings: bf16 and f32 train to the same accuracy (PERFORMANCE.md), and a study may
    /// move to a CPU where the other one is faster. Each run's run.json says which it used.
    #[serde(default, skip_serializing)]
    pub precision: Precision,
}

fn vit_family() -> String {
    "vit".into()
}

impl StudyConfig {
    /// The settings behind the results, as study.json keeps them: which arms one call runs is
    /// not one of them (a study grows by `--only`).
    pub(super) fn settings(&self) -> StudyConfig {
        StudyConfig {
            only: Vec::new(),
            precision: Precision::default(),
            ..self.clone()
        }
    }

    /// The committed study: full Fashion-MNIST, sized for about 90 minutes on 2 CPU cores.
    pub fn reproduce() -> Self {
        Self {
            family: vit_family(),
            data: "fmnist".into(),
            train_subset: None,
            test_subset: None,
            val_split: 0.1,
            img_size: 28,
            patch_size: 7,
            embed_dim: 72,
            num_heads: 3,
            base_depth: 3,
            base_epochs: 3,
            epochs: 1,
            seeds: 3,
            batch_size: 256,
            lr: 2e-3,
            warmup_epochs: 0.3,
            weight_decay: 0.05,
            smoothing: 0.1,
            drop_path: 0.0,
            mixup: 0.0,
            rand_augment: None,
            reprob: 0.0,
            adapter_rank: 32,
            adapter_scale: 0.1,
            workers: 2,
            device: "flex".into(),
            only: vec![],
            precision: Precision::F32,
        }
    }

    /// The demo: the built-in subset, a few minutes on 2 cores.
    pub fn demo() -> Self {
        Self {
            data: "fmnist-mini".into(),
            base_depth: 2,
            base_epochs: 6,
            epochs: 3,
            seeds: 1,
            batch_size: 128,
            warmup_epochs: 0.5,
            only: ["base", "grown", "scratch-3E"].map(String::from).to_vec(),
            ..Self::reproduce()
        }
    }
}

/// The base's seed, and so the seed of the validation carve of every arm grown from it.
pub(super) const BASE_SEED: u64 = 0;

/// One arm: how its model is made and how long it trains.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arm {
    pub name: &'static str,
    pub what: &'static str,
    pub epochs_factor: usize,
    pub seeded: bool,
    /// Depth in halves of L: 4 is 2L (the headline's), 3 is 1.5L, 6 is 3L, 2 the base's.
    pub halves: usize,
    /// The study's learning rate is divided by this (1 but for the fine-tuning-rate arms).
    pub lr_divisor: usize,
}

impl Arm {
    pub fn depth(&self, l: usize) -> usize {
        self.halves * l / 2
    }
}

const fn arm(
    name: &'static str,
    what: &'static str,
    epochs_factor: usize,
    seeded: bool,
    halves: usize,
) -> Arm {
    Arm {
        name,
        what,
        epochs_factor,
        seeded,
        halves,
        lr_divisor: 1,
    }
}

/// Every arm a study can run. Without `--only`, a study runs the headline arms (the first
/// seven); the scaling and variant arms are chosen by name.
pub const ARMS: &[Arm] = &[
    arm(
        "grown",
        "base grown to 2L (ScaleNet: shared blocks + adapters, paper init), E epochs",
        1,
        true,
        4,
    ),
    arm(
        "grown-identity",
        "base grown to 2L with identity init (gates), E epochs",
        1,
        true,
        4,
    ),
    arm("scratch-3E", "2L from scratch, 3E epochs", 3, true, 4),
    arm("scratch-E", "2L from scratch, E epochs", 1, false, 4),
    arm(
        "stacked",
        "base stacked to 2L as independent copies (no sharing), E epochs",
        1,
        false,
        4,
    ),
    arm(
        "shared-only",
        "base grown to 2L, shared blocks without adapters, E epochs",
        1,
        false,
        4,
    ),
    arm(
        "base+E",
        "the base (depth L) trained E more epochs",
        1,
        false,
        2,
    ),
    // The scaling curve: the same base grown to 1.5L and 3L, and scratch models of those depths.
    arm(
        "grown-1.5L",
        "base grown to 1.5L (paper init), E epochs",
        1,
        false,
        3,
    ),
    arm(
        "grown-3L",
        "base grown to 3L (paper init), E epochs",
        1,
        false,
        6,
    ),
    arm(
        "scratch-1.5L-3E",
        "1.5L from scratch, 3E epochs",
        3,
        false,
        3,
    ),
    arm("scratch-3L-3E", "3L from scratch, 3E epochs", 3, false, 6),
    // What a user would try to spend less.
    arm(
        "adapters-only",
        "base grown to 2L, only adapters trained (shared blocks frozen), E epochs",
        1,
        false,
        4,
    ),
    arm(
        "interleave",
        "base grown to 2L with the interleave map (0,0,1,1,...), E epochs",
        1,
        false,
        4,
    ),
    arm(
        "rank-8",
        "base grown to 2L with adapter rank 8, E epochs",
        1,
        false,
        4,
    ),
    arm(
        "rank-64",
        "base grown to 2L with adapter rank 64, E epochs",
        1,
        false,
        4,
    ),
    // Both arms that start from the converged base dip during a warm-up to the from-scratch
    // rate; a user fine-tuning would take a lower one.
    Arm {
        lr_divisor: 4,
        ..arm(
            "grown-low-lr",
            "base grown to 2L (paper init), E epochs at a quarter of the learning rate",
            1,
            false,
            4,
        )
    },
    Arm {
        lr_divisor: 4,
        ..arm(
            "base+E-low-lr",
            "the base (depth L) trained E more epochs at a quarter of the learning rate",
            1,
            false,
            2,
        )
    },
];

/// The arms a study runs when `--only` is not given.
pub(super) const HEADLINE_ARMS: usize = 7;
/// The scaling arms follow the headline ones in `ARMS`; the variants follow them.
pub(super) const SCALING_ARMS: usize = 4;
