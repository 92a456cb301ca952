//! What the training loop needs from a kind of model and data (`vision.rs`, `text.rs`).

use std::path::Path;

use burn::module::Module;
use burn::tensor::Tensor;

use super::config::EpochMetrics;
use crate::error::Result;

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
