//! The vision task: images through a ViT or Swin (plain or grown), cross-entropy over classes,
//! with the augmentations, mixing and stochastic depth of timm's recipe.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::{EpochMetrics, TrainConfig};
use super::eval::{evaluate, EvalResult};
use super::optim::{added_layers, freeze};
use super::task::{Sizes, Task};
use crate::checkpoint::model_dir::{load_model, save_model, ModelConfig};
use crate::data::loader::{
    derive_seed, epoch_batches, iterate, warn_skipped, LoaderConfig, Mixing,
};
use crate::data::transform::{Augment, Transform};
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::model::drop_path::DropPath;
use crate::model::weights::RandomInit;
use crate::network::Network;

/// Images through a ViT (plain or grown), cross-entropy over classes.
pub(crate) struct VisionTask {
    cfg: TrainConfig,
    config: ModelConfig,
    net: Option<Network>,
    k: usize,
    train_split: Split,
    val_split: Option<Split>,
    test_split: Option<Split>,
    train_tf: Transform,
    eval_tf: Transform,
    loader: LoaderConfig,
    skipped: Arc<AtomicUsize>,
    base_device: Device,
    device: Device,
}

impl VisionTask {
    pub(crate) fn new(cfg: &TrainConfig, source_dir: &Path, device: &Device) -> Result<Self> {
        let data = Dataset::open(&cfg.data)?;
        let data_seed = cfg.data_seed();
        let mut train_split = data.train.clone();
        if let Some(n) = cfg.train_subset {
            train_split = train_split.subset(n, data_seed);
        }
        let (train_split, val_split) = if cfg.val_split > 0.0 {
            let (t, v) = train_split.carve(cfg.val_split, data_seed);
            (t, Some(v))
        } else {
            (train_split, None)
        };
        let test_split = data.test.clone().map(|t| match cfg.test_subset {
            Some(n) => t.subset(n, data_seed),
            None => t,
        });
        if train_split.is_empty() {
            return Err(Error::InvalidModel(format!(
                "--data {}: the training split is empty",
                cfg.data
            )));
        }
        let loaded = load_model(source_dir, device)?;
        let mut config = loaded.config;
        let mut net = loaded.network;
        let k = data.num_classes();
        if config.arch.num_classes() != k {
            if !cfg.reset_head {
                return Err(Error::BadConfig {
                    path: source_dir.join("config.json"),
                    msg: format!(
                        "the model has {} classes but --data {} has {k}; pass --reset-head to replace the classifier",
                        config.arch.num_classes(), cfg.data
                    ),
                });
            }
            net = reset_head(net, &mut config, k, cfg.seed, device);
        }
        let added = added_layers(cfg.train_only, &config.raw, source_dir)?;
        let net = freeze(net, cfg.train_only, &added);
        let (in_chans, img_size) = (config.arch.in_chans(), config.arch.img_size());
        let mut augment = Augment::for_split(train_split.is_small(), img_size[0]);
        augment.erase_prob = cfg.reprob;
        augment.rand_augment = cfg.rand_augment;
        let train_tf = Transform::new(in_chans, img_size, &config.pretrained_cfg, Some(augment));
        let eval_tf = Transform::new(in_chans, img_size, &config.pretrained_cfg, None);
        let loader = LoaderConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            drop_last: true,
            workers: cfg.workers,
            seed: cfg.seed,
            num_classes: k,
            mixing: Mixing {
                mixup: cfg.mixup,
                cutmix: cfg.cutmix,
                smoothing: cfg.smoothing,
            },
            on_bad_image: cfg.on_bad_image(),
        };
        Ok(Self {
            cfg: cfg.clone(),
            config,
            net: Some(net),
            k,
            train_split,
            val_split,
            test_split,
            train_tf,
            eval_tf,
            loader,
            skipped: Arc::new(AtomicUsize::new(0)),
            base_device: device.clone().inner(),
            device: device.clone(),
        })
    }
}

impl Task for VisionTask {
    type Model = Network;
    type Batch = crate::data::loader::Batch;

    fn model(&mut self) -> Network {
        self.net.take().expect("the model is taken once")
    }

    fn batches_per_epoch(&self) -> usize {
        epoch_batches(self.train_split.len(), &self.loader, 0).len()
    }

    fn batches<'a>(
        &'a self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<Self::Batch>> + 'a> {
        Box::new(
            iterate(
                &self.train_split,
                &self.train_tf,
                &self.loader,
                epoch,
                start,
                self.skipped.clone(),
            )
            .map(|b| b.map_err(Error::from)),
        )
    }

    fn samples(&self, batch: &Self::Batch) -> usize {
        batch.labels.len()
    }

    fn loss(
        &self,
        net: &Network,
        batch: Self::Batch,
        step: usize,
        micro: usize,
    ) -> (Tensor<1>, Sizes) {
        let b = batch.labels.len();
        let k = self.k;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
        let y = Tensor::<2>::from_data(TensorData::new(batch.targets, [b, k]), &self.device);
        let mut dp = DropPath::new(
            self.cfg.drop_path,
            net.depth(),
            derive_seed(&[self.cfg.seed, step as u64, micro as u64, 0xd9]),
        );
        let mut dp_ref = (self.cfg.drop_path > 0.0).then_some(&mut dp);
        let logits = net.forward_train(x, &mut dp_ref);
        let loss = (y * log_softmax(logits, 1)).sum_dim(1).mean().neg();
        (
            loss,
            Sizes {
                samples: b,
                tokens: 0,
            },
        )
    }

    fn evaluate(&self, net: &Network, m: &mut EpochMetrics) -> Result<()> {
        let run_eval = |split: &Split| -> Result<EvalResult> {
            evaluate(
                net,
                split,
                &self.eval_tf,
                self.k,
                self.cfg.eval_batch_size,
                self.cfg.workers,
                &self.base_device,
                self.loader.on_bad_image,
                |_| {},
            )
        };
        let val = self.val_split.as_ref().map(&run_eval).transpose()?;
        let test = self.test_split.as_ref().map(&run_eval).transpose()?;
        m.val_top1 = val.as_ref().map(|v| v.top1);
        m.val_top5 = val.as_ref().map(|v| v.top5);
        m.val_loss = val.as_ref().map(|v| v.loss);
        m.test_top1 = test.as_ref().map(|v| v.top1);
        m.test_top5 = test.as_ref().map(|v| v.top5);
        warn_skipped(&self.skipped);
        Ok(())
    }

    fn save(&self, dir: &Path, net: &Network) -> Result<()> {
        save_model(dir, &self.config, net)
    }

    fn unit(&self) -> &'static str {
        "img"
    }
}

/// A fresh classifier for `k` classes (timm's head init), for `--reset-head`.
fn reset_head(
    mut net: Network,
    config: &mut ModelConfig,
    k: usize,
    seed: u64,
    device: &Device,
) -> Network {
    config.arch.set_num_classes(k);
    net.reset_head(k, &mut RandomInit::new(seed ^ 0x4ead), device);
    net
}
