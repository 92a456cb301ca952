//! The dense-prediction studies' settings (`study.json`) and arms: UperNet (`family` `seg`) or
//! RetinaNet (`det`) trained on `fmnist-scenes` around each backbone of a finished
//! classification study (`scalenet reproduce`, e.g. the committed `studies/converged`): the
//! base, the base grown 2× with ScaleNet, the deep model trained from scratch, and the deep
//! model grown with unshared copies. Every model trains the same images with the same recipe.
//! `seg_run` runs them, `seg_report` reports them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ops::precision::Precision;

/// Everything that sizes a segmentation study; saved as `study.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegStudyConfig {
    /// `seg` (UperNet) or `det` (RetinaNet): tells this study's `study.json` from the others'.
    pub family: String,
    /// The classification study whose backbones the arms start from.
    pub backbones: PathBuf,
    /// A segmentation dataset (`fmnist-scenes`, `segfolder:DIR`, ...).
    pub data: String,
    /// The input side every segmentor runs at (scenes are resized to it).
    pub img_size: usize,
    /// UperNet's width and its auxiliary head's; a detector's FPN and head width (`channels`).
    pub channels: usize,
    pub aux_channels: usize,
    /// Training scenes (the first n of the split); every epoch reads all of them.
    pub train_subset: Option<usize>,
    /// Validation scenes read after each epoch (the final evaluation reads the whole split).
    pub val_subset: Option<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    /// Seeds of the headline arms (base, grown, scratch).
    pub seeds: usize,
    pub workers: usize,
    pub device: String,
    #[serde(default, skip_serializing)]
    pub only: Vec<String>,
    /// As the other studies': how the products are computed is not one of the settings.
    #[serde(default, skip_serializing)]
    pub precision: Precision,
}

impl SegStudyConfig {
    /// The committed study's sizes (chosen as RESULTS.md says): 48-pixel scenes, 2,000 training
    /// scenes read 4 times, AdamW with mmsegmentation's poly schedule.
    pub fn reproduce(backbones: PathBuf) -> Self {
        Self {
            family: "seg".into(),
            backbones,
            data: "fmnist-scenes".into(),
            img_size: 48,
            channels: 64,
            aux_channels: 32,
            train_subset: Some(2000),
            val_subset: Some(500),
            epochs: 4,
            batch_size: 16,
            lr: 3e-3,
            warmup_epochs: 0.25,
            weight_decay: 0.01,
            seeds: 3,
            workers: 2,
            device: "flex".into(),
            only: Vec::new(),
            precision: Precision::F32,
        }
    }

    /// The detection study's sizes: the segmentation study's scenes and backbones under
    /// RetinaNet, AdamW at 1e-3 with cosine decay, 12 epochs (at 6, one detector seed moved AP
    /// by 8 points; 3e-3 diverged; docs/RESULTS.md §4).
    pub fn reproduce_det(backbones: PathBuf) -> Self {
        Self {
            family: "det".into(),
            lr: 1e-3,
            epochs: 12,
            weight_decay: 0.05,
            val_subset: Some(300),
            ..Self::reproduce(backbones)
        }
    }

    pub fn is_det(&self) -> bool {
        self.family == "det"
    }

    pub(super) fn settings(&self) -> Self {
        Self {
            only: Vec::new(),
            precision: Precision::default(),
            ..self.clone()
        }
    }
}

/// One arm: a backbone of the classification study under UperNet.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SegArm {
    pub name: &'static str,
    /// The classification study's run whose model is the backbone; `{s}` is the seed. A seed
    /// the classification study did not run falls back to its seed 0 (the segmentor's own
    /// seed still differs).
    pub backbone: &'static str,
    /// Run at every seed (else seed 0 alone).
    pub seeded: bool,
    pub what: &'static str,
}

pub const SEG_ARMS: &[SegArm] = &[
    SegArm {
        name: "base",
        backbone: "base",
        seeded: true,
        what: "the base ViT of depth L, pretrained on Fashion-MNIST",
    },
    SegArm {
        name: "grown",
        backbone: "grown-s{s}",
        seeded: true,
        what: "the base grown to 2L positions with ScaleNet (shared blocks, adapters) and fine-tuned E epochs on classification",
    },
    SegArm {
        name: "scratch",
        backbone: "scratch-3E-s{s}",
        seeded: true,
        what: "the 2L model trained from scratch on classification for 3E epochs",
    },
    SegArm {
        name: "unshared",
        backbone: "stacked-s{s}",
        seeded: false,
        what: "the base grown to 2L with unshared copies of its blocks (twice the base's block parameters) and fine-tuned E epochs",
    },
];

impl SegArm {
    /// The backbone's model directory for seed `s`.
    pub fn backbone_dir(&self, study: &Path, s: u64) -> PathBuf {
        let runs = study.join("runs");
        let at = |s: u64| {
            runs.join(self.backbone.replace("{s}", &s.to_string()))
                .join("model")
        };
        let dir = at(s);
        if dir.join("config.json").exists() {
            dir
        } else {
            at(0)
        }
    }

    pub fn seeds(&self, cfg: &SegStudyConfig) -> u64 {
        if self.seeded {
            cfg.seeds as u64
        } else {
            1
        }
    }
}

pub fn run_name(arm: &SegArm, s: u64) -> String {
    format!("{}-s{s}", arm.name)
}
