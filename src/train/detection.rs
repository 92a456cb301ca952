//! The detection task: samples through a RetinaNet (on a plain or grown backbone),
//! torchvision's loss (focal + L1, summed), horizontal flips, and the validation split's COCO
//! box AP each epoch (the test split is `eval`'s).

use std::path::Path;
use std::sync::atomic::AtomicUsize;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::config::{EpochMetrics, TrainConfig};
use super::det_infer::{det_batch, evaluate_detection, DetBatch};
use super::task::{DenseSetup, Sizes, Task};
use crate::checkpoint::det_dir::{load_detector, save_detector, DetModelConfig};
use crate::data::det::{DetDataset, DetSplit};
use crate::data::loader::{derive_seed, epoch_batches, warn_skipped, LoaderConfig};
use crate::detect::Detector;
use crate::error::Result;
use crate::model::drop_path::DropPath;

pub(crate) struct DetTask {
    cfg: TrainConfig,
    config: DetModelConfig,
    net: Option<Detector>,
    train: DetSplit,
    train_len: usize,
    val: DetSplit,
    val_len: usize,
    loader: LoaderConfig,
    /// Unreadable training images skipped (`--on-bad-image skip`) since the last epoch's end.
    skipped: AtomicUsize,
    device: Device,
    base_device: Device,
}

impl DetTask {
    pub(crate) fn new(cfg: &TrainConfig, source_dir: &Path, device: &Device) -> Result<Self> {
        let data = DetDataset::open(&cfg.data)?;
        let (mut config, net) = load_detector(source_dir, device)?;
        let lens = [data.train.len(), data.val.len()];
        let classes = [config.spec.num_classes, data.num_classes()];
        let set = DenseSetup::new(cfg, source_dir, "detector", classes, lens)?;
        // The saved model names its classes, for `predict` and `eval`.
        config.class_names = Some(data.classes.clone());
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
            base_device: device.clone().inner(),
            device: device.clone(),
        })
    }
}

impl Task for DetTask {
    type Model = Detector;
    type Batch = DetBatch;

    fn model(&mut self) -> Detector {
        self.net.take().expect("the model is taken once")
    }

    fn batches_per_epoch(&self) -> usize {
        epoch_batches(self.train_len, &self.loader, 0).len()
    }

    fn batches<'a>(
        &'a self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<DetBatch>> + 'a> {
        let batches = epoch_batches(self.train_len, &self.loader, epoch);
        Box::new(
            batches
                .into_iter()
                .enumerate()
                .skip(start)
                .map(move |(b, idx)| {
                    // Seeded per batch, so that a resumed run flips what an uninterrupted one did.
                    let seed = derive_seed(&[self.cfg.seed, epoch as u64, b as u64, 0xf11b]);
                    det_batch(
                        &self.config,
                        &self.train,
                        &idx,
                        Some(&mut StdRng::seed_from_u64(seed)),
                        self.loader.skip(&self.skipped),
                    )
                }),
        )
    }

    fn samples(&self, batch: &Self::Batch) -> usize {
        batch.shape[0]
    }

    fn loss(
        &self,
        net: &Detector,
        batch: DetBatch,
        step: usize,
        micro: usize,
    ) -> (Tensor<1>, Sizes) {
        let n = batch.shape[0];
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
        let seed = derive_seed(&[self.cfg.seed, step as u64, micro as u64, 0xd9]);
        let mut dp = DropPath::new(self.cfg.drop_path, net.backbone.depth(), seed);
        let mut dp_ref = (self.cfg.drop_path > 0.0).then_some(&mut dp);
        let out = net.forward_train(x, &mut dp_ref);
        let (cls, boxes) = net.loss(out, &batch.targets);
        let sizes = Sizes {
            samples: n,
            tokens: 0,
        };
        (cls + boxes, sizes)
    }

    fn evaluate(&self, net: &Detector, m: &mut EpochMetrics) -> Result<()> {
        let bs = self.cfg.eval_batch_size;
        let device = &self.base_device;
        let val = evaluate_detection(
            net,
            &self.config,
            &self.val,
            self.val_len,
            bs,
            device,
            |_| {},
        )?;
        warn_skipped(&self.skipped);
        m.val_map = Some(val.stats[0]);
        m.val_ap50 = Some(val.stats[1]);
        Ok(())
    }

    fn save(&self, dir: &Path, net: &Detector) -> Result<()> {
        save_detector(dir, &self.config, net)
    }

    fn unit(&self) -> &'static str {
        "img"
    }
}
