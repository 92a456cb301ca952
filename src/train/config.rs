//! What defines a run (`run.json`) and what each of its epochs records (`metrics.jsonl`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::optim::TrainOnly;
use crate::ops::precision::Precision;

/// Everything that defines a run; saved as `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model_dir: PathBuf,
    pub data: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub warmup_lr: f64,
    /// How the learning rate falls after the warmup (cosine in runs made before it existed).
    #[serde(default)]
    pub sched: super::schedule::Decay,
    pub weight_decay: f64,
    pub smoothing: f64,
    pub drop_path: f64,
    pub mixup: f64,
    pub cutmix: f64,
    pub reprob: f64,
    /// RandAugment as (ops, magnitude); `None` is off.
    #[serde(default)]
    pub rand_augment: Option<(usize, f64)>,
    pub ema: Option<f64>,
    pub clip_grad: Option<f64>,
    pub accum: usize,
    pub train_only: TrainOnly,
    pub val_split: f64,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    pub seed: u64,
    /// Seed of the data choices: the training and test subsets and the validation carve.
    /// `None` is `seed`. A model trained further needs the carve it was trained with, or its
    /// validation images were its training images.
    #[serde(default)]
    pub data_seed: Option<u64>,
    pub workers: usize,
    pub reset_head: bool,
    pub skip_bad_images: bool,
    pub eval_batch_size: usize,
    pub device: String,
    /// Matrix products in bf16 with f32 master weights (`--precision bf16`).
    #[serde(default)]
    pub precision: Precision,
    /// What ran the large f32 products on the CPU and why (`--blas`), as the run began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blas: Option<String>,
    /// Language models: tokens per training window.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Language models: validation text of its own (`text:PATH`, e.g. a corpus's
    /// valid.jsonl) in place of a carve of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_data: Option<String>,
    /// Language models: an epoch is this many tokens of the training stream (the windows
    /// shuffled afresh at each pass over them), so that evaluations fall at token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_tokens: Option<u64>,
}

fn default_seq_len() -> usize {
    256
}

impl TrainConfig {
    /// What the loader does with an unreadable image (`--on-bad-image`).
    pub fn on_bad_image(&self) -> crate::data::loader::OnBadImage {
        use crate::data::loader::OnBadImage;
        if self.skip_bad_images {
            OnBadImage::Skip
        } else {
            OnBadImage::Fail
        }
    }

    /// `scalenet train`'s defaults for a model and a dataset.
    pub fn new(model_dir: PathBuf, data: impl Into<String>) -> Self {
        Self {
            model_dir,
            data: data.into(),
            epochs: 10,
            batch_size: 128,
            lr: 5e-4,
            min_lr: 1e-5,
            warmup_epochs: 1.0,
            warmup_lr: 1e-6,
            sched: Default::default(),
            weight_decay: 0.05,
            smoothing: 0.1,
            drop_path: 0.0,
            mixup: 0.0,
            cutmix: 0.0,
            reprob: 0.0,
            rand_augment: None,
            ema: None,
            clip_grad: None,
            accum: 1,
            train_only: TrainOnly::All,
            val_split: 0.1,
            train_subset: None,
            test_subset: None,
            seed: 0,
            data_seed: None,
            workers: 2,
            reset_head: false,
            skip_bad_images: false,
            eval_batch_size: 256,
            device: "flex".into(),
            precision: Precision::F32,
            blas: None,
            seq_len: default_seq_len(),
            val_data: None,
            epoch_tokens: None,
        }
    }

    /// The seed that picks subsets and carves the validation split.
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub lr: f64,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub val_loss: Option<f64>,
    /// Language models: exp(val_loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_perplexity: Option<f64>,
    pub test_top1: Option<f64>,
    pub test_top5: Option<f64>,
    /// Segmentation: the validation split's mIoU and pixel accuracy (mmsegmentation's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_miou: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_aacc: Option<f64>,
    /// Detection: the validation split's COCO box AP (0.50:0.95) and AP50 (pycocotools').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_map: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_ap50: Option<f64>,
    /// Image models: training throughput.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub img_per_s: Option<f64>,
    /// Language models: training throughput in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    pub wall_s: f64,
    /// Samples seen in training so far, all epochs (images, or token windows).
    pub train_images: u64,
    /// Language models: tokens trained on so far, all epochs (windows × `--seq-len`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_tokens: Option<u64>,
    /// The CPU this epoch ran on (model name with family/model numbers): a run may resume on
    /// another machine, and its speed is only comparable on the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// The threads it trained with: two runs sharing a machine's cores each run slower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}
