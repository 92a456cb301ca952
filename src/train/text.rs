//! The text task: token windows through a Llama (plain or grown), next-token cross-entropy.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use super::config::{EpochMetrics, TrainConfig};
use super::lm::{causal_lm_loss, evaluate_lm};
use super::optim::{added_layers, freeze};
use super::task::{Sizes, Task};
use crate::data::loader::{epoch_batches, LoaderConfig, Mixing, OnBadImage};
use crate::data::text::TokenWindows;
use crate::error::{Error, Result};
use crate::network::LanguageModel;

/// Text through a language model (plain or grown Llama), next-token cross-entropy.
pub(crate) struct TextTask {
    cfg: TrainConfig,
    raw: serde_json::Map<String, serde_json::Value>,
    tokenizer_json: Option<Vec<u8>>,
    net: Option<LanguageModel>,
    train: TokenWindows,
    val: Option<TokenWindows>,
    loader: LoaderConfig,
    base_device: Device,
    device: Device,
}

impl TextTask {
    pub(crate) fn new(cfg: &TrainConfig, source_dir: &Path, device: &Device) -> Result<Self> {
        let Some(path) = crate::data::text::text_spec(&cfg.data) else {
            return Err(Error::InvalidModel(format!(
                "--data {}: a language model trains on text; use --data text:PATH (a .txt/.jsonl file or a directory)",
                cfg.data
            )));
        };
        let loaded = crate::checkpoint::hf_dir::load_llama(source_dir, device)?;
        let Some(tok) = &loaded.tokenizer else {
            return Err(Error::InvalidModel(format!(
                "{}: no tokenizer.json beside the model; training on text needs one",
                source_dir.display()
            )));
        };
        let (docs, _) = crate::data::text::read_documents(path)?;
        let eos = loaded.config.eos_token_ids.first().copied();
        let windows = TokenWindows::new(&docs, tok, eos, cfg.seq_len)?;
        let data_seed = cfg.data_seed();
        let (mut train, val) = match &cfg.val_data {
            Some(spec) => {
                let Some(vpath) = crate::data::text::text_spec(spec) else {
                    return Err(Error::InvalidModel(format!(
                        "--val-data {spec}: expected text:PATH"
                    )));
                };
                let (vdocs, _) = crate::data::text::read_documents(vpath)?;
                (
                    windows,
                    Some(TokenWindows::new(&vdocs, tok, eos, cfg.seq_len)?),
                )
            }
            None if cfg.val_split > 0.0 => {
                let (t, v) = windows.split(cfg.val_split, data_seed);
                (t, Some(v))
            }
            None => (windows, None),
        };
        if let Some(n) = cfg.train_subset {
            train = train.subset(n, data_seed);
        }
        let val = val.map(|v| match cfg.test_subset {
            Some(n) => v.subset(n, data_seed),
            None => v,
        });
        if train.len() < cfg.batch_size {
            return Err(Error::InvalidModel(format!(
                "--data {}: {} training windows of {} tokens, fewer than one batch of {}",
                cfg.data,
                train.len(),
                cfg.seq_len,
                cfg.batch_size
            )));
        }
        let added = added_layers(cfg.train_only, &loaded.raw, source_dir)?;
        let net = freeze(loaded.model, cfg.train_only, &added);
        let loader = LoaderConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            drop_last: true,
            workers: 1,
            seed: cfg.seed,
            num_classes: 0,
            mixing: Mixing::default(),
            on_bad_image: OnBadImage::Fail,
        };
        Ok(Self {
            cfg: cfg.clone(),
            raw: loaded.raw,
            tokenizer_json: loaded.tokenizer_json,
            net: Some(net),
            train,
            val,
            loader,
            base_device: device.clone().inner(),
            device: device.clone(),
        })
    }

    fn batches_per_pass(&self) -> usize {
        epoch_batches(self.train.len(), &self.loader, 0).len()
    }

    fn ids(&self, v: Vec<i64>, b: usize, device: &Device) -> Tensor<2, burn::tensor::Int> {
        Tensor::from_data(TensorData::new(v, [b, self.cfg.seq_len]), device)
    }
}

impl Task for TextTask {
    type Model = LanguageModel;
    type Batch = Vec<usize>;

    fn model(&mut self) -> LanguageModel {
        self.net.take().expect("the model is taken once")
    }

    fn batches_per_epoch(&self) -> usize {
        match self.cfg.epoch_tokens {
            Some(t) => (t as usize / (self.cfg.seq_len * self.loader.batch_size)).max(1),
            None => self.batches_per_pass(),
        }
    }

    fn batches<'a>(
        &'a self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<Vec<usize>>> + 'a> {
        if self.cfg.epoch_tokens.is_none() {
            return Box::new(
                epoch_batches(self.train.len(), &self.loader, epoch)
                    .into_iter()
                    .skip(start)
                    .map(Ok),
            );
        }
        // The stream: pass p over the windows in its own order, then pass p + 1.
        let per_pass = self.batches_per_pass();
        let first = epoch * self.batches_per_epoch() + start;
        let last = (epoch + 1) * self.batches_per_epoch();
        let mut pass: Option<(usize, Vec<Vec<usize>>)> = None;
        Box::new((first..last).map(move |g| {
            let p = g / per_pass;
            if pass.as_ref().is_none_or(|(q, _)| *q != p) {
                pass = Some((p, epoch_batches(self.train.len(), &self.loader, p)));
            }
            Ok(pass.as_ref().expect("set above").1[g % per_pass].clone())
        }))
    }

    fn samples(&self, batch: &Self::Batch) -> usize {
        batch.len()
    }

    fn loss(&self, net: &LanguageModel, idx: Vec<usize>, _: usize, _: usize) -> (Tensor<1>, Sizes) {
        let b = idx.len();
        let (inputs, targets) = self.train.batch(&idx);
        let x = self.ids(inputs, b, &self.device);
        let y = self.ids(targets, b, &self.device);
        let loss = causal_lm_loss(net.forward(x, None), y);
        (
            loss,
            Sizes {
                samples: b,
                tokens: b * self.cfg.seq_len,
            },
        )
    }

    fn evaluate(&self, net: &LanguageModel, m: &mut EpochMetrics) -> Result<()> {
        if let Some(val) = &self.val {
            let r = evaluate_lm(
                |x| net.forward(x, None),
                val,
                self.cfg.eval_batch_size.clamp(1, 8),
                &self.base_device,
                |_| {},
            );
            m.val_loss = Some(r.loss);
            m.val_perplexity = Some(r.perplexity);
        }
        Ok(())
    }

    fn save(&self, dir: &Path, net: &LanguageModel) -> Result<()> {
        crate::checkpoint::hf_dir::save_llama(dir, &self.raw, net, self.tokenizer_json.as_deref())
    }

    fn unit(&self) -> &'static str {
        "tok"
    }
}
