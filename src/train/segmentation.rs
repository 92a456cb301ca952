//! The segmentation task: scenes through a segmentor (UperNet or the linear probe on a plain or
//! grown backbone), mmsegmentation's loss, BatchNorm statistics kept as torch keeps them, and
//! the validation split's mIoU each epoch (the test split is `eval`'s).

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::AtomicUsize;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::config::{EpochMetrics, TrainConfig};
use super::seg_infer::{evaluate_segmentation, normalise, SegMode};
use super::task::{DenseSetup, Sizes, Task};
use crate::checkpoint::seg_dir::{load_segmentor, save_segmentor, SegModelConfig};
use crate::data::loader::{derive_seed, epoch_batches, readable, warn_skipped, LoaderConfig};
use crate::data::seg::{SegDataset, SegSplit};
use crate::data::seg_augment::augment;
use crate::data::seg_sample::{adapt_channels, resize_sample};
use crate::error::Result;
use crate::model::drop_path::DropPath;
use crate::segment::layers::TrainState;
use crate::segment::loss::{segmentation_loss, PixelLabels};
use crate::segment::Segmentor;

/// Normalised images `[n, c, h, w]` and their labels `[n, h, w]`.
pub struct SegBatch {
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<u8>,
}

pub(crate) struct SegTask {
    cfg: TrainConfig,
    config: SegModelConfig,
    net: Option<Segmentor>,
    train: SegSplit,
    train_len: usize,
    val: SegSplit,
    val_len: usize,
    loader: LoaderConfig,
    /// Unreadable training images skipped (`--on-bad-image skip`) since the last epoch's end.
    skipped: AtomicUsize,
    /// The batch statistics of the last training forward, for `after_backward`.
    stats: RefCell<Vec<(String, [Tensor<1>; 2])>>,
    device: Device,
    base_device: Device,
}

impl SegTask {
    pub(crate) fn new(cfg: &TrainConfig, source_dir: &Path, device: &Device) -> Result<Self> {
        let data = SegDataset::open(&cfg.data)?;
        let (config, net) = load_segmentor(source_dir, device)?;
        let lens = [data.train.len(), data.val.len()];
        let classes = [config.spec.num_classes, data.num_classes()];
        let set = DenseSetup::new(cfg, source_dir, "segmentor", classes, lens)?;
        Ok(Self {
            train_len: set.train_len,
            val_len: set.val_len,
            train: data.train,
            val: data.val,
            cfg: cfg.clone(),
            config,
            net: Some(net),
            loader: set.loader,
            skipped: AtomicUsize::new(0),
            stats: RefCell::new(Vec::new()),
            base_device: device.clone().inner(),
            device: device.clone(),
        })
    }
}

/// Samples `indices` of `split` at the model's input, normalised by `config`'s mean and std;
/// with `augment_seed`, through mmsegmentation's training pipeline (`seg_augment`), else resized.
/// With `skip`, unreadable images are left out and counted there.
pub fn seg_batch(
    config: &SegModelConfig,
    split: &SegSplit,
    indices: &[usize],
    augment_seed: Option<u64>,
    skip: Option<&AtomicUsize>,
) -> Result<SegBatch> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut shape = [0; 4];
    let [mh, mw] = config.backbone.arch.img_size();
    let chans = config.backbone.arch.in_chans();
    for &i in indices {
        let Some(sample) = readable(split.get(i), skip)? else {
            continue;
        };
        let raw = adapt_channels(sample, chans);
        let s = match augment_seed {
            Some(seed) => augment(
                raw,
                [mh, mw],
                &mut StdRng::seed_from_u64(derive_seed(&[seed, i as u64])),
            ),
            None => resize_sample(raw, [mh, mw]),
        };
        shape = [shape[0] + 1, s.shape[0], s.shape[1], s.shape[2]];
        images.extend(normalise(
            [&config.mean, &config.std],
            &s.pixels,
            s.shape[1] * s.shape[2],
        ));
        labels.extend(s.mask);
    }
    Ok(SegBatch {
        images,
        shape,
        labels,
    })
}

impl Task for SegTask {
    type Model = Segmentor;
    type Batch = SegBatch;

    fn model(&mut self) -> Segmentor {
        self.net.take().expect("the model is taken once")
    }

    fn batches_per_epoch(&self) -> usize {
        epoch_batches(self.train_len, &self.loader, 0).len()
    }

    fn batches<'a>(
        &'a self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<SegBatch>> + 'a> {
        let augment_seed = derive_seed(&[self.cfg.seed, epoch as u64, 0xf1a9]);
        Box::new(
            epoch_batches(self.train_len, &self.loader, epoch)
                .into_iter()
                .skip(start)
                .map(move |idx| {
                    let skip = self.loader.skip(&self.skipped);
                    seg_batch(&self.config, &self.train, &idx, Some(augment_seed), skip)
                }),
        )
    }

    fn samples(&self, batch: &Self::Batch) -> usize {
        batch.shape[0]
    }

    fn loss(
        &self,
        net: &Segmentor,
        batch: SegBatch,
        step: usize,
        micro: usize,
    ) -> (Tensor<1>, Sizes) {
        let [n, _, h, w] = batch.shape;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
        let seed = derive_seed(&[self.cfg.seed, step as u64, micro as u64, 0xd9]);
        let mut dp = DropPath::new(self.cfg.drop_path, net.backbone.depth(), seed);
        let mut dp_ref = (self.cfg.drop_path > 0.0).then_some(&mut dp);
        let drop_seed = derive_seed(&[self.cfg.seed, step as u64, micro as u64, 0xd2]);
        let mut state = TrainState::new(self.config.spec.dropout_ratio, drop_seed);
        let (logits, aux) = net.forward_train(x, &mut dp_ref, &mut Some(&mut state));
        *self.stats.borrow_mut() = state.stats;
        let aux_weight = self.config.spec.aux.as_ref().map_or(0.0, |a| a.loss_weight);
        let labels = PixelLabels {
            values: &batch.labels,
            shape: [n, h, w],
            ignore_index: self.config.ignore_index as u8,
        };
        let loss = segmentation_loss(logits, aux.map(|a| (a, aux_weight)), &labels);
        (
            loss,
            Sizes {
                samples: n,
                tokens: 0,
            },
        )
    }

    fn after_backward(&self, mut net: Segmentor) -> Segmentor {
        net.update_running(std::mem::take(&mut *self.stats.borrow_mut()));
        net
    }

    fn evaluate(&self, net: &Segmentor, m: &mut EpochMetrics) -> Result<()> {
        let bs = self.cfg.eval_batch_size;
        let val = evaluate_segmentation(
            net,
            &self.config,
            &self.val,
            self.val_len,
            bs,
            SegMode::Whole,
            &self.base_device,
            |_| {},
        )?;
        warn_skipped(&self.skipped);
        m.val_miou = Some(val.miou);
        m.val_aacc = Some(val.aacc);
        Ok(())
    }

    fn save(&self, dir: &Path, net: &Segmentor) -> Result<()> {
        save_segmentor(dir, &self.config, net)
    }

    fn unit(&self) -> &'static str {
        "img"
    }
}
