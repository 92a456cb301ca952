use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use scalenet::data::DATA_HELP;
use scalenet::device::DEVICE_HELP;
use scalenet::train::optim::TrainOnly;
use scalenet::train::{train, Hooks, Outcome, TrainConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory to train (plain or grown); not needed with --resume.
    model_dir: Option<PathBuf>,
    #[arg(long, help = DATA_HELP)]
    data: Option<String>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    #[arg(long, default_value_t = 1e-5)]
    min_lr: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_epochs: f64,
    #[arg(long, default_value_t = 1e-6)]
    warmup_lr: f64,
    /// The decay after the warmup: `cosine` (timm's) or `poly` (mmsegmentation's PolyLR,
    /// power 1; `poly:P` for power P), from --lr to --min-lr.
    #[arg(long, default_value = "cosine", value_parser = parse_sched)]
    sched: scalenet::train::schedule::Decay,
    /// Decoupled weight decay on weight matrices (not on norms, biases, pos_embed, tokens, gates).
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.1)]
    smoothing: f64,
    /// Stochastic depth at the last position (rising linearly from 0).
    #[arg(long, default_value_t = 0.0)]
    drop_path: f64,
    /// Mixup alpha (0 = off).
    #[arg(long, default_value_t = 0.0)]
    mixup: f64,
    /// CutMix alpha (0 = off).
    #[arg(long, default_value_t = 0.0)]
    cutmix: f64,
    /// Random erasing probability.
    #[arg(long, default_value_t = 0.0)]
    reprob: f64,
    /// RandAugment as N,M (operations per image, magnitude 0-10), e.g. 2,9 (timm's rand-m9-n2).
    #[arg(long, value_name = "N,M")]
    rand_augment: Option<String>,
    /// Keep an EMA of the weights with this decay (e.g. 0.9998); evaluation and the final model use it.
    #[arg(long)]
    ema: Option<f64>,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    clip_grad: Option<f64>,
    /// Accumulate gradients over K batches per update.
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// Which parameters train: all, adapters (per-position parameters of a grown model),
    /// adapters+head, or new (the blocks a growth with --no-share added, e.g. LLaMA-Pro's).
    #[arg(long, default_value = "all", value_parser = ["all", "adapters", "adapters+head", "new"])]
    train_only: String,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_split: f64,
    /// Train on a seeded random subset of N training images (language models: N windows).
    #[arg(long)]
    train_subset: Option<usize>,
    /// Evaluate on a seeded random subset of N test images (language models: N held-out
    /// windows).
    #[arg(long)]
    test_subset: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the subsets and the validation carve (default: --seed). When training a
    /// model further, give the one it was trained with, so that validation images stay unseen.
    #[arg(long)]
    data_seed: Option<u64>,
    /// Threads decoding and augmenting images.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Replace the classifier when the data's class count differs from the model's.
    #[arg(long)]
    reset_head: bool,
    /// What to do with an unreadable image.
    #[arg(long, default_value = "fail", value_parser = ["fail", "skip"])]
    on_bad_image: String,
    #[arg(long, default_value_t = 256)]
    eval_batch_size: usize,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
    /// auto, f32, or bf16: matrix products in bf16 with f32 master weights, norms, softmax and
    /// loss (as torch.autocast). auto picks bf16 on GPUs, and on CPUs where our bf16 kernel
    /// measures faster than the f32 one (measured once per CPU model, cached).
    #[arg(long, default_value = "auto")]
    precision: scalenet::ops::auto_precision::Requested,
    /// Language models: tokens per training window.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Language models: validation text (`text:PATH`) in place of a --val-split carve, e.g. a
    /// corpus's valid.jsonl (`scalenet corpus`).
    #[arg(long)]
    val_data: Option<String>,
    /// Language models: an epoch is this many tokens of the training stream, reshuffled at
    /// each pass over the windows (evaluation and a checkpoint after each). Default: one pass.
    #[arg(long)]
    epoch_tokens: Option<u64>,
    /// Run directory to create (metrics.jsonl, curves.png, checkpoint/, model/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Checkpoint and stop after N optimizer steps (for testing resume).
    #[arg(long, hide = true)]
    stop_after_steps: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let hooks = Hooks {
        stop_after_steps: args.stop_after_steps,
        ..interruptible()
    };
    let (cfg, out, resume) = match &args.resume {
        Some(dir) => (resume_config(&args, dir)?, dir.clone(), true),
        None => {
            let Some(out) = args.out.clone() else {
                bail!("--out RUN_DIR is required (or --resume RUN_DIR)")
            };
            (config_from_args(&args)?, out, false)
        }
    };
    validate(&cfg)?;
    let eval_hint = eval_hint(&cfg);
    match train(cfg, &out, resume, &hooks).map_err(super::skip_hint)? {
        Outcome::Finished { final_model } => {
            println!(
                "finished: model in {}, metrics in {}",
                final_model.display(),
                out.join("metrics.jsonl").display()
            );
            println!("next: scalenet eval {} {eval_hint}", final_model.display());
        }
        Outcome::Interrupted { checkpoint } => {
            println!(
                "stopped; checkpoint in {}. Continue with: scalenet train --resume {}",
                checkpoint.display(),
                out.display()
            );
            std::process::exit(130);
        }
    }
    Ok(())
}

fn config_from_args(a: &Args) -> Result<TrainConfig> {
    let Some(model_dir) = a.model_dir.clone() else {
        bail!("MODEL_DIR is required")
    };
    let Some(data) = a.data.clone() else {
        bail!("--data is required ({DATA_HELP})")
    };
    // Checked here, before the precision line, and said once for a GPU; the trainer opens it.
    // A precision the device cannot run is refused before the device is announced.
    scalenet::ops::auto_precision::supported(a.precision, &a.device).map_err(anyhow::Error::msg)?;
    super::device(&a.device)?;
    Ok(TrainConfig {
        model_dir,
        data,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        min_lr: a.min_lr,
        warmup_epochs: a.warmup_epochs,
        warmup_lr: a.warmup_lr,
        sched: a.sched,
        weight_decay: a.weight_decay,
        smoothing: a.smoothing,
        drop_path: a.drop_path,
        mixup: a.mixup,
        cutmix: a.cutmix,
        reprob: a.reprob,
        rand_augment: a
            .rand_augment
            .as_deref()
            .map(parse_rand_augment)
            .transpose()?,
        ema: a.ema,
        clip_grad: a.clip_grad,
        accum: a.accum,
        train_only: match a.train_only.as_str() {
            "adapters" => TrainOnly::Adapters,
            "adapters+head" => TrainOnly::AdaptersHead,
            "new" => TrainOnly::New,
            _ => TrainOnly::All,
        },
        val_split: a.val_split,
        train_subset: a.train_subset,
        test_subset: a.test_subset,
        seed: a.seed,
        data_seed: a.data_seed,
        workers: a.workers,
        reset_head: a.reset_head,
        skip_bad_images: a.on_bad_image == "skip",
        eval_batch_size: a.eval_batch_size,
        device: a.device.clone(),
        precision: announce_precision(a.precision, &a.device)?,
        blas: Some(super::blas_choice()),
        seq_len: a.seq_len,
        val_data: a.val_data.clone(),
        epoch_tokens: a.epoch_tokens,
    })
}

/// The run's own configuration; a model or data given on the command line must agree with it.
fn resume_config(a: &Args, dir: &std::path::Path) -> Result<TrainConfig> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (is this a run directory?)", path.display()))?;
    let mut cfg: TrainConfig = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a scalenet run config: {e}", path.display()))?;
    if let Some(m) = &a.model_dir {
        if m != &cfg.model_dir {
            bail!(
                "{}: this run trains {}, not {}",
                path.display(),
                cfg.model_dir.display(),
                m.display()
            );
        }
    }
    if let Some(d) = &a.data {
        if d != &cfg.data {
            bail!(
                "{}: this run uses --data {}, not {d}",
                path.display(),
                cfg.data
            );
        }
    }
    // Only the epoch count may change on resume (to extend a run).
    if a.epochs != 10 {
        cfg.epochs = a.epochs;
    }
    Ok(cfg)
}

fn validate(c: &TrainConfig) -> Result<()> {
    if scalenet::checkpoint::hf_dir::is_language_model(&c.model_dir) {
        let image_only = [
            ("--mixup", c.mixup > 0.0),
            ("--cutmix", c.cutmix > 0.0),
            ("--reprob", c.reprob > 0.0),
            ("--rand-augment", c.rand_augment.is_some()),
            ("--drop-path", c.drop_path > 0.0),
            ("--reset-head", c.reset_head),
        ];
        if let Some((flag, _)) = image_only.iter().find(|(_, set)| *set) {
            bail!(
                "{flag} applies to image models; {} is a language model",
                c.model_dir.display()
            );
        }
        if c.seq_len == 0 {
            bail!("--seq-len must be at least 1");
        }
        if c.epoch_tokens
            .is_some_and(|t| t < (c.seq_len * c.batch_size) as u64)
        {
            bail!(
                "--epoch-tokens must hold at least one batch ({} tokens)",
                c.seq_len * c.batch_size
            );
        }
    } else if let Some(flag) = [
        ("--val-data", c.val_data.is_some()),
        ("--epoch-tokens", c.epoch_tokens.is_some()),
    ]
    .iter()
    .find_map(|(f, set)| set.then_some(f))
    {
        bail!(
            "{flag} applies to language models; {} is an image model",
            c.model_dir.display()
        );
    }
    if c.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(0.0..1.0).contains(&c.val_split) {
        bail!("--val-split must be in [0, 1)");
    }
    if !(c.lr.is_finite() && c.lr > 0.0) {
        bail!("--lr must be a positive number");
    }
    if !(0.0..1.0).contains(&c.drop_path) {
        bail!("--drop-path must be in [0, 1)");
    }
    if let Some(e) = c.ema {
        if !(0.0..1.0).contains(&e) {
            bail!("--ema must be in [0, 1), e.g. 0.9998");
        }
    }
    if !(0.0..1.0).contains(&c.smoothing) {
        bail!("--smoothing must be in [0, 1)");
    }
    Ok(())
}

/// `--rand-augment N,M` (ops per image, magnitude 0–10).
pub fn parse_rand_augment(s: &str) -> Result<(usize, f64)> {
    let parts: Vec<&str> = s.split(',').collect();
    match (
        parts.first().and_then(|n| n.trim().parse::<usize>().ok()),
        parts.get(1).and_then(|m| m.trim().parse::<f64>().ok()),
    ) {
        (Some(n), Some(m)) if parts.len() == 2 && (0.0..=10.0).contains(&m) => Ok((n, m)),
        _ => bail!("--rand-augment {s}: expected N,M such as 2,9 (M between 0 and 10)"),
    }
}

/// Hooks with a progress bar whose interrupt flag Ctrl-C sets: the first Ctrl-C checkpoints
/// after the current step and stops, a second one stops at once.
pub fn interruptible() -> Hooks {
    let hooks = Hooks {
        progress: true,
        ..Hooks::default()
    };
    let flag = hooks.interrupt.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort)");
    });
    hooks
}

/// Resolves `--precision` for a training command and says what it chose and why.
pub(crate) fn announce_precision(
    requested: scalenet::ops::auto_precision::Requested,
    device: &str,
) -> Result<scalenet::ops::precision::Precision> {
    let d =
        scalenet::ops::auto_precision::resolve(requested, device).map_err(anyhow::Error::msg)?;
    println!("precision: {} ({})", d.precision, d.reason);
    println!("matrix products: {}", super::blas_choice());
    Ok(d.precision)
}

/// The data flags of the `eval` that the finished run suggests: the run's own data (and, for
/// text, its window), so that the suggestion runs as printed. Text with validation of its own
/// is evaluated on that: the training text would measure memory, not the model.
fn eval_hint(cfg: &TrainConfig) -> String {
    if cfg.data.starts_with("text:") {
        let data = cfg.val_data.as_ref().unwrap_or(&cfg.data);
        format!("--data {data} --seq-len {}", cfg.seq_len)
    } else {
        format!("--data {}", cfg.data)
    }
}

/// `cosine`, `poly` or `poly:P`.
fn parse_sched(s: &str) -> std::result::Result<scalenet::train::schedule::Decay, String> {
    use scalenet::train::schedule::Decay;
    match s.split_once(':') {
        None if s == "cosine" => Ok(Decay::Cosine),
        None if s == "poly" => Ok(Decay::Poly(1.0)),
        Some(("poly", p)) => match p.parse::<f64>() {
            Ok(p) if p.is_finite() && p > 0.0 => Ok(Decay::Poly(p)),
            _ => Err(format!("poly:{p}: the power must be a positive number")),
        },
        _ => Err(format!("'{s}': expected cosine, poly or poly:POWER")),
    }
}
