//! The training loop, written once for every task (`vision.rs`, `text.rs`), and its run
//! directory (`run_dir.rs`).
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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

pub use super::config::{EpochMetrics, TrainConfig};
use super::optim::{accumulate, grad_norm, AdamW, AdamWConfig, Ema};
use super::run_dir::{
    append_metrics, check_new_run_dir, read_json, recover_checkpoint, save_checkpoint,
    trim_metrics, write_json, CHECKPOINT,
};
pub use super::run_dir::{plot_curves, read_metrics};
use super::schedule::Schedule;
use super::task::Task;
use super::text::TextTask;
use super::vision::VisionTask;
use crate::checkpoint::safetensors_io::TensorFile;
use crate::error::{Error, Result};
use crate::model::weights::NamedTensor;
use crate::ops::precision::autocast;

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
    } else if crate::checkpoint::det_dir::is_detection_dir(&source_dir) {
        let task = super::detection::DetTask::new(&cfg, &source_dir, &device)?;
        run_task(task, &cfg, out, resume, state, hooks, &base_device)
    } else if crate::checkpoint::seg_dir::is_segmentation_dir(&source_dir) {
        let task = super::segmentation::SegTask::new(&cfg, &source_dir, &device)?;
        run_task(task, &cfg, out, resume, state, hooks, &base_device)
    } else {
        let task = VisionTask::new(&cfg, &source_dir, &device)?;
        run_task(task, &cfg, out, resume, state, hooks, &base_device)
    }
}

/// The loop: schedule, AdamW, accumulation, the gradient guard and clipping, EMA, per-epoch
/// evaluation, metrics and checkpoints, for any task.
fn run_task<T: Task>(
    mut task: T,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    state: State,
    hooks: &Hooks,
    base_device: &Device,
) -> Result<Outcome> {
    let net = task.model();
    let mut run = Run::new(&task, net, cfg, out, hooks, state);
    if resume {
        run.import_optimizer(base_device)?;
    } else {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
    }
    // --epochs may grow on resume; run.json keeps the latest.
    write_json(&out.join("run.json"), cfg)?;
    while run.state.epoch < cfg.epochs {
        if let Some(outcome) = run.epoch()? {
            return Ok(outcome);
        }
    }
    let final_dir = out.join("model");
    task.save(&final_dir, &run.evaluated())?;
    Ok(Outcome::Finished {
        final_model: final_dir,
    })
}

/// A run in progress: the task and its model, the optimizer, EMA and schedule, and where the
/// run stands.
struct Run<'a, T: Task> {
    task: &'a T,
    /// Taken out only for the optimizer step, which consumes it.
    net: Option<T::Model>,
    cfg: &'a TrainConfig,
    out: &'a Path,
    ckpt: PathBuf,
    hooks: &'a Hooks,
    state: State,
    schedule: Schedule,
    optim: AdamW,
    ema: Option<Ema>,
    batches_per_epoch: usize,
    accum: usize,
    /// The gradients accumulated since the last optimizer step, and from how many micro-batches.
    grads: Option<(GradientsParams, usize)>,
    steps_this_process: usize,
    cpu: String,
    threads: usize,
}

impl<'a, T: Task> Run<'a, T> {
    fn new(
        task: &'a T,
        net: T::Model,
        cfg: &'a TrainConfig,
        out: &'a Path,
        hooks: &'a Hooks,
        state: State,
    ) -> Self {
        let batches_per_epoch = task.batches_per_epoch();
        let accum = cfg.accum.max(1);
        let steps_per_epoch = batches_per_epoch.div_ceil(accum);
        let schedule = Schedule {
            lr: cfg.lr,
            min_lr: cfg.min_lr,
            warmup_lr: cfg.warmup_lr,
            warmup_steps: (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize,
            total_steps: cfg.epochs * steps_per_epoch,
            decay: cfg.sched,
        };
        let optim = AdamW::new(AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        });
        let ema = cfg.ema.map(|d| Ema::new(d, &net));
        Self {
            task,
            net: Some(net),
            cfg,
            out,
            ckpt: out.join(CHECKPOINT),
            hooks,
            state,
            schedule,
            optim,
            ema,
            batches_per_epoch,
            accum,
            grads: None,
            steps_this_process: 0,
            cpu: crate::ops::auto_precision::cpu_model(),
            threads: rayon::current_num_threads(),
        }
    }

    fn net(&self) -> &T::Model {
        self.net
            .as_ref()
            .expect("the model is back after each step")
    }

    /// AdamW's moments (and the EMA's weights) from the checkpoint.
    fn import_optimizer(&mut self, base_device: &Device) -> Result<()> {
        let file = TensorFile::read(&self.ckpt.join("optimizer.safetensors"))?;
        let tensors: Vec<NamedTensor> = file
            .tensors
            .into_iter()
            .map(|(name, t)| NamedTensor {
                name,
                shape: t.shape,
                values: t.values,
            })
            .collect();
        self.optim.import(tensors.clone(), base_device);
        self.optim.step = self.state.adam_step;
        if let Some(e) = self.ema.as_mut() {
            e.import(&tensors, base_device);
        }
        Ok(())
    }

    /// The weights as evaluated and saved: the EMA's when enabled.
    fn evaluated(&self) -> T::Model {
        match &self.ema {
            Some(e) => e.apply(self.net().valid()),
            None => self.net().valid(),
        }
    }

    /// Trains the rest of the current epoch, evaluates and checkpoints; `Some` when the run
    /// stops here (interrupted).
    fn epoch(&mut self) -> Result<Option<Outcome>> {
        let (task, hooks, epoch) = (self.task, self.hooks, self.state.epoch);
        let started = Instant::now();
        let bar = progress_bar(
            hooks.progress,
            self.batches_per_epoch,
            self.state.batch,
            epoch,
            self.cfg.epochs,
        );
        self.grads = None;
        let mut lr = self.schedule.lr_at(self.state.global_step);
        for batch in task.batches(epoch, self.state.batch) {
            if let Err(e) = batch.and_then(|b| self.batch(b, &mut lr)) {
                bar.abandon();
                return Err(e);
            }
            let elapsed = self.state.wall_s + started.elapsed().as_secs_f64();
            bar.set_position(self.state.batch as u64);
            bar.set_message(self.bar_message(elapsed));
            let stop = hooks.interrupt.load(Ordering::SeqCst)
                || hooks
                    .stop_after_steps
                    .is_some_and(|n| self.steps_this_process >= n);
            if stop && self.grads.is_none() {
                bar.abandon_with_message("interrupted; saving a checkpoint");
                self.state.wall_s = elapsed;
                self.save_checkpoint()?;
                return Ok(Some(self.interrupted()));
            }
        }
        bar.finish_and_clear();
        self.end_epoch(started, lr)
    }

    /// One batch's forward and backward, and at the end of an accumulation group the
    /// optimizer step (`lr` becomes its learning rate).
    fn batch(&mut self, batch: T::Batch, lr: &mut f64) -> Result<()> {
        let micro = self.state.batch % self.accum;
        // A batch whose every image was unreadable and skipped (`--on-bad-image skip`) is
        // empty: it teaches nothing, but it still counts, so that a resumed run keeps its
        // place and the schedule its pace.
        if self.task.samples(&batch) > 0 {
            self.learn(batch, micro)?;
        }
        self.state.batch += 1;
        if micro + 1 == self.accum || self.state.batch == self.batches_per_epoch {
            *lr = match self.grads.take() {
                Some(grads) => self.step(grads)?,
                None => self.skip_step(),
            };
        }
        Ok(())
    }

    /// A non-empty micro-batch's forward and backward; its gradients join the group's.
    fn learn(&mut self, batch: T::Batch, micro: usize) -> Result<()> {
        let (loss, sizes) = self
            .task
            .loss(self.net(), batch, self.state.global_step, micro);
        let loss_value = loss.clone().into_scalar::<f32>() as f64;
        if !loss_value.is_finite() {
            return Err(Error::InvalidModel(format!(
                "training loss became {loss_value} at epoch {} batch {}; stopped without saving this state. \
                 The last good checkpoint is {} (try a lower --lr or --clip-grad 1.0)",
                self.state.epoch + 1,
                self.state.batch,
                self.ckpt.display()
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), self.net());
        let net = self.net.take().expect("model");
        self.net = Some(self.task.after_backward(net));
        match self.grads.as_mut() {
            Some((acc, n)) => {
                accumulate(self.net.as_ref().expect("model"), acc, grads);
                *n += 1;
            }
            None => self.grads = Some((grads, 1)),
        }
        let (b, state) = (sizes.samples, &mut self.state);
        state.loss_sum += loss_value * b as f64;
        state.loss_count += b;
        state.epoch_images += b as u64;
        state.epoch_tokens += sizes.tokens as u64;
        state.train_images += b as u64;
        Ok(())
    }

    /// The end of an accumulation group whose every micro-batch was empty: no update, but the
    /// step is counted.
    fn skip_step(&mut self) -> f64 {
        let lr = self.schedule.lr_at(self.state.global_step);
        self.state.global_step += 1;
        self.steps_this_process += 1;
        lr
    }

    /// The optimizer step over the gradients accumulated from `micro_batches` micro-batches;
    /// returns its learning rate.
    fn step(&mut self, (grads, micro_batches): (GradientsParams, usize)) -> Result<f64> {
        let mut scale = 1.0 / micro_batches as f64;
        // Checked on every step, clipped or not: a finite loss can still have overflowed
        // gradients (bf16 backward, a spike), and stepping with them turns every weight into
        // NaN, which the next checkpoint would then keep.
        let mut norm = grad_norm(self.net(), &grads) * scale;
        if self.hooks.poison_gradients_at_step == Some(self.state.global_step) {
            norm = f64::NAN;
        }
        if !norm.is_finite() {
            return Err(Error::InvalidModel(format!(
                "the gradient norm became {norm} at epoch {} batch {} (step {}); stopped without saving this state. \
                 The last good checkpoint is {} (try a lower --lr, --clip-grad 1.0, or --precision f32)",
                self.state.epoch + 1,
                self.state.batch,
                self.state.global_step,
                self.ckpt.display()
            )));
        }
        if let Some(c) = self.cfg.clip_grad {
            if norm > c {
                scale *= c / norm;
            }
        }
        let lr = self.schedule.lr_at(self.state.global_step);
        let net = self.net.take().expect("model");
        let net = self.net.insert(self.optim.step(lr, net, grads, scale));
        if let Some(e) = self.ema.as_mut() {
            e.update(net);
        }
        self.state.global_step += 1;
        self.steps_this_process += 1;
        Ok(lr)
    }

    /// The progress bar's message: the epoch's mean loss and throughput.
    fn bar_message(&self, elapsed: f64) -> String {
        let s = &self.state;
        let unit = self.task.unit();
        let done = if unit == "tok" {
            s.epoch_tokens
        } else {
            s.epoch_images
        };
        format!(
            "loss {:.4} · {:.1} {unit}/s",
            s.loss_sum / s.loss_count.max(1) as f64,
            done as f64 / elapsed.max(1e-9),
        )
    }

    /// Evaluates (with EMA weights when enabled), records the epoch's metrics, and
    /// checkpoints the start of the next epoch.
    fn end_epoch(&mut self, started: Instant, lr: f64) -> Result<Option<Outcome>> {
        let train_s = self.state.wall_s + started.elapsed().as_secs_f64();
        let mut m = self.metrics(lr, train_s);
        self.task.evaluate(&self.evaluated(), &mut m)?;
        m.wall_s = self.state.wall_s + started.elapsed().as_secs_f64();
        append_metrics(self.out, &m)?;
        if self.hooks.progress {
            eprintln!("{}", epoch_line(&m, self.cfg.epochs));
        }
        self.state = State {
            epoch: self.state.epoch + 1,
            global_step: self.state.global_step,
            train_images: self.state.train_images,
            ..State::default()
        };
        self.save_checkpoint()?;
        let _ = plot_curves(self.out);
        Ok(self
            .hooks
            .interrupt
            .load(Ordering::SeqCst)
            .then(|| self.interrupted()))
    }

    /// The epoch's metrics before evaluation.
    fn metrics(&self, lr: f64, train_s: f64) -> EpochMetrics {
        let s = &self.state;
        let (img, text) = (self.task.unit() == "img", self.task.unit() == "tok");
        let per_s = |n: u64| n as f64 / train_s.max(1e-9);
        EpochMetrics {
            epoch: s.epoch + 1,
            train_loss: s.loss_sum / s.loss_count.max(1) as f64,
            lr,
            val_top1: None,
            val_top5: None,
            val_loss: None,
            val_perplexity: None,
            test_top1: None,
            test_top5: None,
            val_miou: None,
            val_aacc: None,
            val_map: None,
            val_ap50: None,
            img_per_s: img.then(|| per_s(s.epoch_images)),
            tokens_per_s: text.then(|| per_s(s.epoch_tokens)),
            wall_s: 0.0,
            train_images: s.train_images,
            train_tokens: text.then(|| s.train_images * self.cfg.seq_len as u64),
            cpu: Some(self.cpu.clone()),
            threads: Some(self.threads),
        }
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        self.state.adam_step = self.optim.step;
        let save = |dir: &Path, net: &T::Model| self.task.save(dir, net);
        save_checkpoint(
            &self.ckpt,
            &save,
            self.net(),
            &self.optim,
            self.ema.as_ref(),
            &self.state,
        )
    }

    fn interrupted(&self) -> Outcome {
        Outcome::Interrupted {
            checkpoint: self.ckpt.clone(),
        }
    }
}

/// The line printed after each epoch: loss, quality and speed.
fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    let speed = match (m.img_per_s, m.tokens_per_s) {
        (_, Some(t)) => format!("{t:.1} tok/s"),
        (Some(i), _) => format!("{i:.1} img/s"),
        _ => String::new(),
    };
    let quality = match (m.val_perplexity, m.val_miou, m.val_map) {
        (Some(p), _, _) => format!("val perplexity {p:.3}"),
        (_, _, Some(ap)) => format!("val AP {} · val AP50 {}", pct(Some(ap)), pct(m.val_ap50)),
        (_, Some(miou), _) => format!(
            "val mIoU {} · val aAcc {}",
            pct(Some(miou)),
            pct(m.val_aacc)
        ),
        _ => format!(
            "val top-1 {} · test top-1 {}",
            pct(m.val_top1),
            pct(m.test_top1)
        ),
    };
    format!(
        "epoch {}/{epochs} · loss {:.4} · {quality} · {speed} · {:.0}s",
        m.epoch, m.train_loss, m.wall_s
    )
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
