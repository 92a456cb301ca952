//! What the training loop needs from a kind of model and data (`vision.rs`, `text.rs`,
//! `segmentation.rs`, `detection.rs`), and what the dense tasks set up alike.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Tensor;

use super::config::{EpochMetrics, TrainConfig};
use crate::data::loader::LoaderConfig;
use crate::error::{Error, Result};

/// What the loop needs from a kind of model and data: its batches, its loss, its evaluation
/// and how it saves. Everything else (AdamW, the schedule, accumulation, clipping, EMA,
/// checkpoints, exact resume, metrics) is the loop's, written once.
pub(crate) trait Task {
    type Model: Module;
    type Batch;
    fn model(&mut self) -> Self::Model;
    fn batches_per_epoch(&self) -> usize;
    /// The batches of `epoch` from batch `start` on.
    fn batches<'a>(
        &'a self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<Self::Batch>> + 'a>;
    /// The samples a batch holds: none when every image in it was unreadable and skipped.
    fn samples(&self, batch: &Self::Batch) -> usize;
    /// The mean loss of one batch, and its size (samples; tokens for throughput).
    fn loss(
        &self,
        model: &Self::Model,
        batch: Self::Batch,
        step: usize,
        micro: usize,
    ) -> (Tensor<1>, Sizes);
    /// The model after a micro-batch's backward: where state that is not trained (BatchNorm's
    /// running statistics) follows the forward that just ran.
    fn after_backward(&self, model: Self::Model) -> Self::Model {
        model
    }
    /// Validation and test metrics of `model` (weights as evaluated, EMA applied).
    fn evaluate(&self, model: &Self::Model, m: &mut EpochMetrics) -> Result<()>;
    fn save(&self, dir: &Path, model: &Self::Model) -> Result<()>;
    /// What one epoch's throughput counts.
    fn unit(&self) -> &'static str;
}

/// How much one batch holds: samples (images or windows) and, for text, tokens.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub samples: usize,
    pub tokens: usize,
}

/// The set-up segmentation and detection share: the model's class count must be the data's,
/// the loader shuffles whole batches, and `--train-subset` / `--test-subset` cap the splits.
pub(crate) struct DenseSetup {
    pub loader: LoaderConfig,
    pub train_len: usize,
    pub val_len: usize,
}

impl DenseSetup {
    /// `what` names the model in the class-count error ("segmentor", "detector").
    pub(crate) fn new(
        cfg: &TrainConfig,
        source_dir: &Path,
        what: &str,
        classes: [usize; 2],
        lens: [usize; 2],
    ) -> Result<Self> {
        let [model, data] = classes;
        if model != data {
            return Err(Error::config(
                source_dir.join("config.json"),
                format!(
                    "the {what} has {model} classes but --data {} has {data}",
                    cfg.data
                ),
            ));
        }
        let cap = |n: Option<usize>, len: usize| n.map_or(len, |n| n.min(len));
        Ok(Self {
            loader: LoaderConfig {
                batch_size: cfg.batch_size,
                shuffle: true,
                drop_last: true,
                workers: cfg.workers,
                seed: cfg.seed,
                num_classes: model,
                mixing: Default::default(),
                on_bad_image: cfg.on_bad_image(),
            },
            train_len: cap(cfg.train_subset, lens[0]),
            val_len: cap(cfg.test_subset, lens[1]),
        })
    }
}
