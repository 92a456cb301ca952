//! The training loop and its run directory.
//!
//! ```text
//! RUN_DIR/run.json          the full configuration
//! RUN_DIR/metrics.jsonl     one line per epoch
//! RUN_DIR/curves.png        loss and accuracy against epoch
//! RUN_DIR/checkpoint/       model/ (model directory), optimizer.safetensors, state.json
//! RUN_DIR/model/            the final model directory (timm layout or the grown format)
//! ```
//!
//! Every random choice is seeded from `(seed, epoch, batch)` or `(seed, step)`, and the
//! checkpoint holds the weights, AdamW moments, EMA, step counters and the running sums of the
//! current epoch, so a resumed run computes exactly what the uninterrupted run would have.

use crate::ops::{autocast, Precision};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::eval::{evaluate, EvalResult};
use super::lm::{causal_lm_loss, evaluate_lm};
use super::optim::{accumulate, freeze, grad_norm, AdamW, AdamWConfig, Ema, TrainOnly};
use super::schedule::Schedule;
use crate::checkpoint::atomic::atomic_write;
use crate::checkpoint::{load_model, save_model, ModelConfig, TensorFile};
use crate::data::loader::{derive_seed, epoch_batches, iterate, LoaderConfig, Mixing, OnBadImage};
use crate::data::text::TokenWindows;
use crate::data::transform::{Augment, Transform};
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::model::drop_path::DropPath;
use crate::model::{NamedTensor, RandomInit};
use crate::network::{LanguageModel, Network};

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
    /// Language models: tokens per training window.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
}

fn default_seq_len() -> usize {
    256
}

impl TrainConfig {
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
            seq_len: default_seq_len(),
        }
    }

    /// The seed that picks subsets and carves the validation split.
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }
}

/// Progress reporting and interruption, supplied by the caller.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Show a progress bar per epoch.
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to checkpoint and stop after the current step.
    pub interrupt: Arc<AtomicBool>,
    /// Stop (as if interrupted) after this many optimizer steps in this process; for tests.
    pub stop_after_steps: Option<usize>,
    /// Treat the gradients of this global step as non-finite (an overflow in backward that the
    /// loss does not show); for tests of the non-finite gradient guard.
    pub poison_gradients_at_step: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Finished { final_model: PathBuf },
    Interrupted { checkpoint: PathBuf },
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

/// Where a run stands; saved with each checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    epoch: usize,
    batch: usize,
    global_step: usize,
    adam_step: u64,
    loss_sum: f64,
    loss_count: usize,
    epoch_images: u64,
    #[serde(default)]
    epoch_tokens: u64,
    train_images: u64,
    wall_s: f64,
}

const CHECKPOINT: &str = "checkpoint";

/// Runs (or, with `resume`, continues) training into `out`.
pub fn train(cfg: TrainConfig, out: &Path, resume: bool, hooks: &Hooks) -> Result<Outcome> {
    let created = !resume && !out.exists();
    if !resume {
        check_new_run_dir(out)?;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    // Held to the end of the run: a second trainer on this directory is refused.
    let lock = crate::checkpoint::lock::lock_dir(out)?;
    let result = train_locked(cfg, out, resume, hooks);
    if result.is_err() && created && !out.join("run.json").exists() {
        // A run that never started leaves nothing behind, not even its lock.
        drop(lock);
        let _ = std::fs::remove_file(out.join(".lock"));
        let _ = std::fs::remove_dir(out);
    }
    result
}

fn train_locked(cfg: TrainConfig, out: &Path, resume: bool, hooks: &Hooks) -> Result<Outcome> {
    let ckpt = out.join(CHECKPOINT);
    let mut state = State::default();
    if resume {
        recover_checkpoint(out)?;
    }
    // A run stopped before its first checkpoint resumes by starting over.
    let resume = resume && ckpt.join("state.json").is_file();
    if resume {
        state = read_json(&ckpt.join("state.json"))?;
        trim_metrics(out, state.epoch)?;
    }
    let base_device = crate::device::parse_device(&cfg.device)?;
    let device = base_device.clone().autodiff();
    // Training and evaluation alike run under the run's precision, as under torch.autocast.
    let _autocast = autocast(cfg.precision);

    let source_dir = if resume {
        ckpt.join("model")
    } else {
        cfg.model_dir.clone()
    };
    if crate::checkpoint::hf_dir::is_language_model(&source_dir) {
        let task = TextTask::new(&cfg, &source_dir, &device)?;
        run_task(task, &cfg, out, resume, state, hooks, &base_device)
    } else {
        let task = VisionTask::new(&cfg, &source_dir, &device)?;
        run_task(task, &cfg, out, resume, state, hooks, &base_device)
    }
}

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

/// Images through a ViT (plain or grown), cross-entropy over classes.
struct VisionTask {
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
    fn new(cfg: &TrainConfig, source_dir: &Path, device: &Device) -> Result<Self> {
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
        let net = freeze(net, cfg.train_only);
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
            on_bad_image: if cfg.skip_bad_images {
                OnBadImage::Skip
            } else {
                OnBadImage::Fail
            },
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
        let skipped = self.skipped.swap(0, Ordering::Relaxed);
        if skipped > 0 {
            eprintln!("warning: skipped {skipped} unreadable image(s)");
        }
        Ok(())
    }

    fn save(&self, dir: &Path, net: &Network) -> Result<()> {
        save_model(dir, &self.config, net)
    }

    fn unit(&self) -> &'static str {
        "img"
    }
}

/// Text through a language model (plain or grown Llama), next-token cross-entropy.
struct TextTask {
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
    fn new(cfg: &TrainConfig, source_dir: &Path, device: &Device) -> Result<Self> {
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
        let (mut train, val) = if cfg.val_split > 0.0 {
            let (t, v) = windows.split(cfg.val_split, data_seed);
            (t, Some(v))
        } else {
            (windows, None)
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
        let net = freeze(loaded.model, cfg.train_only);
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
        epoch_batches(self.train.len(), &self.loader, 0).len()
    }

    fn batches<'a>(
        &'a self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<Vec<usize>>> + 'a> {
        Box::new(
            epoch_batches(self.train.len(), &self.loader, epoch)
                .into_iter()
                .skip(start)
                .map(Ok),
        )
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

/// The loop: schedule, AdamW, accumulation, the gradient guard and clipping, EMA, per-epoch
/// evaluation, metrics and checkpoints, for any task.
fn run_task<T: Task>(
    mut task: T,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    mut state: State,
    hooks: &Hooks,
    base_device: &Device,
) -> Result<Outcome> {
    let ckpt = out.join(CHECKPOINT);
    let mut net = task.model();
    let batches_per_epoch = task.batches_per_epoch();
    let accum = cfg.accum.max(1);
    let steps_per_epoch = batches_per_epoch.div_ceil(accum);
    let schedule = Schedule {
        lr: cfg.lr,
        min_lr: cfg.min_lr,
        warmup_lr: cfg.warmup_lr,
        warmup_steps: (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize,
        total_steps: cfg.epochs * steps_per_epoch,
    };
    let mut optim = AdamW::new(AdamWConfig {
        weight_decay: cfg.weight_decay,
        ..AdamWConfig::default()
    });
    let mut ema = cfg.ema.map(|d| Ema::new(d, &net));
    if resume {
        let file = TensorFile::read(&ckpt.join("optimizer.safetensors"))?;
        let tensors: Vec<NamedTensor> = file
            .tensors
            .into_iter()
            .map(|(name, t)| NamedTensor {
                name,
                shape: t.shape,
                values: t.values,
            })
            .collect();
        optim.import(tensors.clone(), base_device);
        optim.step = state.adam_step;
        if let Some(e) = ema.as_mut() {
            e.import(&tensors, base_device);
        }
    } else {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        write_json(&out.join("run.json"), cfg)?;
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
    }
    // --epochs may grow on resume; run.json keeps the latest.
    if resume {
        write_json(&out.join("run.json"), cfg)?;
    }

    let save = |dir: &Path, net: &T::Model| task.save(dir, net);
    let cpu = crate::ops::auto_precision::cpu_model();
    let threads = rayon::current_num_threads();
    let mut steps_this_process = 0usize;
    while state.epoch < cfg.epochs {
        let epoch = state.epoch;
        let started = Instant::now();
        let bar = progress_bar(
            hooks.progress,
            batches_per_epoch,
            state.batch,
            epoch,
            cfg.epochs,
        );
        let mut grads_acc: Option<GradientsParams> = None;
        let mut lr = schedule.lr_at(state.global_step);
        for batch in task.batches(epoch, state.batch) {
            let batch = batch?;
            let micro = state.batch % accum;
            let (loss, sizes) = task.loss(&net, batch, state.global_step, micro);
            let b = sizes.samples;
            let loss_value = loss.clone().into_scalar::<f32>() as f64;
            if !loss_value.is_finite() {
                bar.abandon();
                return Err(Error::InvalidModel(format!(
                    "training loss became {loss_value} at epoch {} batch {}; stopped without saving this state. \
                     The last good checkpoint is {} (try a lower --lr or --clip-grad 1.0)",
                    epoch + 1,
                    state.batch,
                    ckpt.display()
                )));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            match grads_acc.as_mut() {
                Some(acc) => accumulate(&net, acc, grads),
                None => grads_acc = Some(grads),
            }
            state.batch += 1;
            state.loss_sum += loss_value * b as f64;
            state.loss_count += b;
            state.epoch_images += b as u64;
            state.epoch_tokens += sizes.tokens as u64;
            state.train_images += b as u64;
            if micro + 1 == accum || state.batch == batches_per_epoch {
                let grads = grads_acc
                    .take()
                    .expect("gradients of at least one micro-batch");
                let mut scale = 1.0 / (micro + 1) as f64;
                // Checked on every step, clipped or not: a finite loss can still have
                // overflowed gradients (bf16 backward, a spike), and stepping with them turns
                // every weight into NaN, which the next checkpoint would then keep.
                let mut norm = grad_norm(&net, &grads) * scale;
                if hooks.poison_gradients_at_step == Some(state.global_step) {
                    norm = f64::NAN;
                }
                if !norm.is_finite() {
                    bar.abandon();
                    return Err(Error::InvalidModel(format!(
                        "the gradient norm became {norm} at epoch {} batch {} (step {}); stopped without saving this state. \
                         The last good checkpoint is {} (try a lower --lr, --clip-grad 1.0, or --precision f32)",
                        epoch + 1,
                        state.batch,
                        state.global_step,
                        ckpt.display()
                    )));
                }
                if let Some(c) = cfg.clip_grad {
                    if norm > c {
                        scale *= c / norm;
                    }
                }
                lr = schedule.lr_at(state.global_step);
                net = optim.step(lr, net, grads, scale);
                state.global_step += 1;
                steps_this_process += 1;
                if let Some(e) = ema.as_mut() {
                    e.update(&net);
                }
            }
            let elapsed = state.wall_s + started.elapsed().as_secs_f64();
            bar.set_position(state.batch as u64);
            let done = if task.unit() == "tok" {
                state.epoch_tokens
            } else {
                state.epoch_images
            };
            bar.set_message(format!(
                "loss {:.4} · {:.1} {}/s",
                state.loss_sum / state.loss_count.max(1) as f64,
                done as f64 / elapsed.max(1e-9),
                task.unit()
            ));
            let stop = hooks.interrupt.load(Ordering::SeqCst)
                || hooks
                    .stop_after_steps
                    .is_some_and(|n| steps_this_process >= n);
            if stop && grads_acc.is_none() {
                bar.abandon_with_message("interrupted; saving a checkpoint");
                state.wall_s = elapsed;
                state.adam_step = optim.step;
                save_checkpoint(&ckpt, &save, &net, &optim, ema.as_ref(), &state)?;
                return Ok(Outcome::Interrupted { checkpoint: ckpt });
            }
        }
        bar.finish_and_clear();
        let train_s = state.wall_s + started.elapsed().as_secs_f64();

        // Evaluate (with EMA weights when enabled).
        let eval_net = match &ema {
            Some(e) => e.apply(net.valid()),
            None => net.valid(),
        };
        let per_s = |n: u64| n as f64 / train_s.max(1e-9);
        let mut m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: state.loss_sum / state.loss_count.max(1) as f64,
            lr,
            val_top1: None,
            val_top5: None,
            val_loss: None,
            val_perplexity: None,
            test_top1: None,
            test_top5: None,
            img_per_s: (task.unit() == "img").then(|| per_s(state.epoch_images)),
            tokens_per_s: (task.unit() == "tok").then(|| per_s(state.epoch_tokens)),
            wall_s: 0.0,
            train_images: state.train_images,
            train_tokens: (task.unit() == "tok").then(|| state.train_images * cfg.seq_len as u64),
            cpu: Some(cpu.clone()),
            threads: Some(threads),
        };
        task.evaluate(&eval_net, &mut m)?;
        m.wall_s = state.wall_s + started.elapsed().as_secs_f64();
        append_metrics(out, &m)?;
        if hooks.progress {
            let speed = match (m.img_per_s, m.tokens_per_s) {
                (_, Some(t)) => format!("{t:.1} tok/s"),
                (Some(i), _) => format!("{i:.1} img/s"),
                _ => String::new(),
            };
            let quality = match m.val_perplexity {
                Some(p) => format!("val perplexity {p:.3}"),
                None => format!(
                    "val top-1 {} · test top-1 {}",
                    pct(m.val_top1),
                    pct(m.test_top1)
                ),
            };
            eprintln!(
                "epoch {}/{} · loss {:.4} · {quality} · {speed} · {:.0}s",
                m.epoch, cfg.epochs, m.train_loss, m.wall_s
            );
        }
        state = State {
            epoch: epoch + 1,
            global_step: state.global_step,
            adam_step: optim.step,
            train_images: state.train_images,
            ..State::default()
        };
        save_checkpoint(&ckpt, &save, &net, &optim, ema.as_ref(), &state)?;
        let _ = plot_curves(out);
        if hooks.interrupt.load(Ordering::SeqCst) {
            return Ok(Outcome::Interrupted { checkpoint: ckpt });
        }
    }
    let final_dir = out.join("model");
    let final_net = match &ema {
        Some(e) => e.apply(net.valid()),
        None => net.valid(),
    };
    save(&final_dir, &final_net)?;
    Ok(Outcome::Finished {
        final_model: final_dir,
    })
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.2}%", 100.0 * x))
        .unwrap_or_else(|| "-".into())
}

fn progress_bar(
    show: bool,
    len: usize,
    pos: usize,
    epoch: usize,
    epochs: usize,
) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "epoch {}/{epochs} [{{bar:30}}] {{pos}}/{{len}} batches · {{msg}} · ETA {{eta}}",
            epoch + 1
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(pos as u64);
    bar
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

fn save_checkpoint<M>(
    dir: &Path,
    save_model: &impl Fn(&Path, &M) -> Result<()>,
    net: &M,
    optim: &AdamW,
    ema: Option<&Ema>,
    state: &State,
) -> Result<()> {
    // Write into a fresh directory, then swap it in, so a crash mid-save keeps the old one.
    let parent = dir.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".{CHECKPOINT}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = (|| {
        save_model(&tmp.join("model"), net)?;
        let mut tensors = optim.export();
        if let Some(e) = ema {
            tensors.extend(e.export());
        }
        crate::checkpoint::write_tensors(&tmp.join("optimizer.safetensors"), &tensors)?;
        write_json(&tmp.join("state.json"), state)
    })();
    if let Err(e) = written {
        // A full disk must not also leave half a checkpoint behind; the error names the
        // checkpoint, not a temporary path that no longer exists.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(match e {
            Error::Io { cause, .. } => Error::io(dir, cause),
            e => e,
        });
    }
    // One atomic swap where the file system has it: at every instant `checkpoint/` is a
    // complete checkpoint, the old or the new. (Two renames leave a moment without one.)
    if dir.exists() && exchange(&tmp, dir).is_ok() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(());
    }
    let old = parent.join(format!(".{CHECKPOINT}.old-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Swaps two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
        let (a, b) = (c(a)?, c(b)?);
        // SAFETY: two NUL-terminated paths relative to the working directory.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (a, b);
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// After a crash: the checkpoint a two-rename save had moved aside comes back if `checkpoint/`
/// is missing, and the leftovers of interrupted saves go. The run's lock is held, so no other
/// process is writing here.
fn recover_checkpoint(out: &Path) -> Result<()> {
    let ckpt = out.join(CHECKPOINT);
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    let mut leftovers: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!(".{CHECKPOINT}.old-"))
                    || n.starts_with(&format!(".{CHECKPOINT}.tmp-"))
            })
        })
        .collect();
    leftovers.sort();
    for p in leftovers {
        let is_old = p.to_string_lossy().contains(".old-");
        if is_old && !ckpt.exists() && p.join("state.json").is_file() {
            std::fs::rename(&p, &ckpt).map_err(|e| Error::io(&ckpt, e))?;
        } else {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    Ok(())
}

/// Drops the metrics of epochs past the checkpoint (a crash between writing an epoch's metrics
/// and its checkpoint), so that the redone epoch is not listed twice.
fn trim_metrics(out: &Path, epochs_done: usize) -> Result<()> {
    let path = out.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["epoch"].as_u64())
                .is_some_and(|e| e as usize <= epochs_done)
        })
        .collect();
    if keep.len() != text.lines().count() {
        let mut kept = keep.join("\n");
        if !kept.is_empty() {
            kept.push('\n');
        }
        atomic_write(&path, kept.as_bytes())?;
    }
    Ok(())
}

fn check_new_run_dir(out: &Path) -> Result<()> {
    if out.join("run.json").exists() {
        return Err(Error::Refused {
            path: out.to_path_buf(),
            msg: "already holds a run; pass --resume to continue it, or choose another --out"
                .into(),
        });
    }
    Ok(())
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("serialisable");
    text.push('\n');
    atomic_write(path, text.as_bytes())
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|cause| Error::Json {
        path: path.to_path_buf(),
        cause,
    })
}

fn append_metrics(out: &Path, m: &EpochMetrics) -> Result<()> {
    use std::io::Write;
    let path = out.join("metrics.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    let line = format!("{}\n", serde_json::to_string(m).expect("serialisable"));
    f.write_all(line.as_bytes()).map_err(|e| {
        // No half line for the next epoch's line to run into (a full disk).
        let _ = f.set_len(len);
        Error::io(&path, e)
    })
}

/// Reads `metrics.jsonl` of a run.
pub fn read_metrics(out: &Path) -> Result<Vec<EpochMetrics>> {
    let path = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|cause| Error::Json {
                path: path.clone(),
                cause,
            })
        })
        .collect()
}

/// Writes `curves.png`: training loss, and validation/test top-1 against epoch.
pub fn plot_curves(out: &Path) -> Result<()> {
    use crate::plot::{render, Chart, Series};
    let ms = read_metrics(out)?;
    let series = |name: &str, f: &dyn Fn(&EpochMetrics) -> Option<f64>| Series {
        name: name.into(),
        points: ms
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect(),
        markers: ms.len() < 20,
        ..Series::default()
    };
    let lm = ms
        .iter()
        .any(|m| m.val_perplexity.is_some() || m.train_tokens.is_some());
    let loss = Chart {
        title: if lm {
            "loss (train: epoch mean; val: held-out windows)".into()
        } else {
            "loss (train: epoch mean on augmented images)".into()
        },
        x_label: "epoch".into(),
        y_label: "loss".into(),
        series: vec![
            series("train", &|m| Some(m.train_loss)),
            series("val", &|m| m.val_loss),
        ],
    };
    // A language model has perplexity where a classifier has accuracy.
    let acc = if lm {
        Chart {
            title: "validation perplexity".into(),
            x_label: "epoch".into(),
            y_label: "perplexity".into(),
            series: vec![series("val", &|m| m.val_perplexity)],
        }
    } else {
        Chart {
            title: "top-1 accuracy (%)".into(),
            x_label: "epoch".into(),
            y_label: "top-1 %".into(),
            series: vec![
                series("val", &|m| m.val_top1.map(|v| 100.0 * v)),
                series("test", &|m| m.test_top1.map(|v| 100.0 * v)),
            ],
        }
    };
    let charts = [loss.into(), acc.into()];
    render(&charts, &out.join("curves.png"))
}
