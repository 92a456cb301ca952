use std::path::PathBuf;

use anyhow::Result;
use scalenet::checkpoint::load_model;
use scalenet::data::loader::OnBadImage;
use scalenet::data::transform::Transform;
use scalenet::data::{Dataset, DATA_HELP};
use scalenet::device::DEVICE_HELP;
use scalenet::train::evaluate;

#[derive(clap::Args, Debug)]
pub struct Args {
    model_dir: PathBuf,
    #[arg(long, help = DATA_HELP)]
    data: String,
    /// Evaluate the training split instead of the test split.
    #[arg(long)]
    train_split: bool,
    /// Image models: evaluate a seeded random subset of N images of the split (as `train
    /// --test-subset` does with the same seed).
    #[arg(long)]
    test_subset: Option<usize>,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Segmentation models: whole (each image resized to the model's input) or slide[:STRIDE]
    /// (resized keeping its proportions until it covers the input, then windows of the input's
    /// size every STRIDE pixels, default ⅔ of a window; mmsegmentation's two test modes).
    #[arg(long, default_value = "whole")]
    mode: scalenet::train::seg_infer::SegMode,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value = "fail", value_parser = ["fail", "skip"])]
    on_bad_image: String,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
    /// Language models: tokens per window (each predicts the next token).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Language models: evaluate only the held-out fraction of windows that `train` with the
    /// same --val-split and seed held out (0: every window).
    #[arg(long, default_value_t = 0.0)]
    val_split: f64,
    /// The seed of the subset and the held-out windows: `train`'s --data-seed if it was given,
    /// else its --seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Language models: evaluate at most this many windows.
    #[arg(long)]
    max_windows: Option<usize>,
    /// Language models: write the evaluated windows (`input_ids` [N, seq_len + 1], i64) here,
    /// to score the same tokens with another tool.
    #[arg(long)]
    save_tokens: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if scalenet::checkpoint::hf_dir::is_language_model(&args.model_dir) {
        return language_model(args);
    }
    if scalenet::checkpoint::det_dir::is_detection_dir(&args.model_dir) {
        return detection(args);
    }
    if scalenet::checkpoint::seg_dir::is_segmentation_dir(&args.model_dir) {
        return segmentation(args);
    }
    let device = super::device(&args.device)?;
    let loaded = load_model(&args.model_dir, &device)?;
    let data = Dataset::open(&args.data)?;
    let arch = loaded.network.arch();
    if arch.num_classes() != data.num_classes() {
        anyhow::bail!(
            "{}: the model has {} classes but --data {} has {}",
            args.model_dir.join("config.json").display(),
            arch.num_classes(),
            args.data,
            data.num_classes()
        );
    }
    let split = if args.train_split {
        Some(data.train.clone())
    } else {
        data.test.clone()
    };
    let Some(mut split) = split else {
        anyhow::bail!(
            "--data {}: has no test split; pass --train-split",
            args.data
        )
    };
    if let Some(n) = args.test_subset {
        split = split.subset(n, args.seed);
    }
    let tf = Transform::new(
        arch.in_chans(),
        arch.img_size(),
        &loaded.config.pretrained_cfg,
        None,
    );
    let bar = eval_bar(split.len());
    let on_bad = if args.on_bad_image == "skip" {
        OnBadImage::Skip
    } else {
        OnBadImage::Fail
    };
    let r = evaluate(
        &loaded.network,
        &split,
        &tf,
        data.num_classes(),
        args.batch_size,
        args.workers,
        &device,
        on_bad,
        |n| bar.set_position(n as u64),
    )
    .map_err(super::skip_hint)?;
    bar.finish_and_clear();
    println!(
        "{} images · top-1 {:.2}% · top-5 {:.2}% · loss {:.4}",
        r.n,
        100.0 * r.top1,
        100.0 * r.top5,
        r.loss
    );
    for (i, (acc, n)) in r.per_class.iter().zip(&r.per_class_count).enumerate() {
        println!("  {:<16} {:>6.2}%  ({n})", data.classes[i], 100.0 * acc);
    }
    if let Some(p) = args.json {
        let v = serde_json::json!({"model": args.model_dir, "data": args.data, "n": r.n, "top1": r.top1, "top5": r.top5,
            "loss": r.loss, "per_class": data.classes.iter().zip(&r.per_class).map(|(c, a)| (c.clone(), serde_json::json!(a))).collect::<serde_json::Map<_, _>>()});
        scalenet::checkpoint::atomic::atomic_write(
            &p,
            format!("{}\n", serde_json::to_string_pretty(&v)?).as_bytes(),
        )?;
    }
    Ok(())
}

/// Perplexity of a language model on text.
fn language_model(args: Args) -> Result<()> {
    use scalenet::data::text::{read_documents, text_spec, TokenWindows};
    let Some(path) = text_spec(&args.data) else {
        anyhow::bail!("--data {}: a language model is evaluated on text; use --data text:PATH (a .txt/.jsonl file or a directory)", args.data);
    };
    if !(0.0..1.0).contains(&args.val_split) {
        anyhow::bail!("--val-split must be in [0, 1), not {}", args.val_split);
    }
    if args.seq_len == 0 {
        anyhow::bail!("--seq-len must be positive");
    }
    let device = super::device(&args.device)?;
    let loaded = scalenet::checkpoint::hf_dir::load_llama(&args.model_dir, &device)?;
    let Some(tok) = &loaded.tokenizer else {
        anyhow::bail!(
            "{}: no tokenizer.json beside the model",
            args.model_dir.display()
        );
    };
    let (docs, _) = read_documents(path)?;
    let eos = loaded.config.eos_token_ids.first().copied();
    let mut windows = TokenWindows::new(&docs, tok, eos, args.seq_len)?;
    if args.val_split > 0.0 {
        windows = windows.split(args.val_split, args.seed).1;
    }
    if let Some(n) = args.max_windows {
        windows = windows.truncate(n);
    }
    if windows.is_empty() {
        anyhow::bail!(
            "--data {}: too little text for one window of {} tokens",
            args.data,
            args.seq_len
        );
    }
    if let Some(p) = &args.save_tokens {
        let ids: Vec<i64> = windows
            .windows
            .iter()
            .flatten()
            .map(|&t| t as i64)
            .collect();
        let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = vec![windows.len(), args.seq_len + 1];
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, shape, &bytes)?;
        let out = safetensors::serialize([("input_ids", view)], &None)?;
        scalenet::checkpoint::atomic::atomic_write(p, &out)?;
    }
    let bar = indicatif::ProgressBar::new(windows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "eval [{bar:30}] {pos}/{len} windows · {per_sec} · ETA {eta}",
        )
        .expect("valid"),
    );
    let model = &loaded.model;
    let batch = (args.batch_size / 32).max(1);
    let r = scalenet::train::lm::evaluate_lm(
        |x| model.forward(x, None),
        &windows,
        batch,
        &device,
        |n| bar.inc(n as u64),
    );
    bar.finish_and_clear();
    println!(
        "{} windows of {} tokens · loss {:.4} · perplexity {:.3}",
        r.windows, args.seq_len, r.loss, r.perplexity
    );
    if let Some(p) = args.json {
        let v = serde_json::json!({"model": args.model_dir, "data": args.data, "seq_len": args.seq_len,
            "windows": r.windows, "tokens": r.tokens, "loss": r.loss, "perplexity": r.perplexity});
        scalenet::checkpoint::atomic::atomic_write(
            &p,
            format!("{}\n", serde_json::to_string_pretty(&v)?).as_bytes(),
        )?;
    }
    Ok(())
}

/// A segmentation model on the test split (or `--train-split`): aAcc, mIoU, mAcc and the
/// per-class IoU and accuracy, as mmsegmentation's `IoUMetric` reports them.
fn segmentation(args: Args) -> Result<()> {
    use scalenet::data::seg::SegDataset;
    use scalenet::train::seg_infer::evaluate_segmentation;
    let device = super::device(&args.device)?;
    let (config, seg) = scalenet::checkpoint::seg_dir::load_segmentor(&args.model_dir, &device)?;
    let data = SegDataset::open(&args.data)?;
    same_classes(&args, config.spec.num_classes, data.num_classes())?;
    let (split, name) = pick(&args, &data.train, &data.test);
    let n = args.test_subset.map_or(split.len(), |k| k.min(split.len()));
    let bar = eval_bar(n);
    let (bs, mode) = (args.batch_size, args.mode);
    let m = evaluate_segmentation(&seg, &config, split, n, bs, mode, &device, |k| {
        bar.inc(k as u64)
    })?;
    bar.finish_and_clear();
    println!(
        "{} on {} ({name} split, {n} images, {})",
        args.model_dir.display(),
        args.data,
        args.mode
    );
    println!(
        "aAcc {:.2} · mIoU {:.2} · mAcc {:.2}",
        100.0 * m.aacc,
        100.0 * m.miou,
        100.0 * m.macc
    );
    println!("{:<14} {:>7} {:>7}", "class", "IoU", "Acc");
    let show = |v: f64| {
        if v.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}", 100.0 * v)
        }
    };
    for (k, class) in data.classes.iter().enumerate() {
        println!("{class:<14} {:>7} {:>7}", show(m.iou[k]), show(m.acc[k]));
    }
    if let Some(path) = &args.json {
        let v = serde_json::json!({"model": args.model_dir, "data": args.data, "split": name, "n": n,
            "mode": args.mode.to_string(), "aAcc": m.aacc, "mIoU": m.miou, "mAcc": m.macc, "classes": data.classes,
            "IoU": m.iou.iter().map(|x| (!x.is_nan()).then_some(*x)).collect::<Vec<_>>(),
            "Acc": m.acc.iter().map(|x| (!x.is_nan()).then_some(*x)).collect::<Vec<_>>()});
        let text = format!("{}\n", serde_json::to_string_pretty(&v)?);
        scalenet::checkpoint::atomic::atomic_write(path, text.as_bytes())?;
    }
    Ok(())
}

/// A detector on the test split (or `--train-split`): COCO box AP as pycocotools'
/// `COCOeval.summarize()` prints it, and the AP of each class.
fn detection(args: Args) -> Result<()> {
    use scalenet::data::det::DetDataset;
    use scalenet::train::det_infer::evaluate_detection;
    let device = super::device(&args.device)?;
    let (config, det) = scalenet::checkpoint::det_dir::load_detector(&args.model_dir, &device)?;
    let data = DetDataset::open(&args.data)?;
    same_classes(&args, config.spec.num_classes, data.num_classes())?;
    let (split, name) = pick(&args, &data.train, &data.test);
    let n = args.test_subset.map_or(split.len(), |k| k.min(split.len()));
    let bar = eval_bar(n);
    let m = evaluate_detection(&det, &config, split, n, args.batch_size, &device, |k| {
        bar.inc(k as u64)
    })?;
    bar.finish_and_clear();
    println!(
        "{} on {} ({name} split, {n} images)",
        args.model_dir.display(),
        args.data
    );
    const NAMES: [&str; 12] = [
        "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
    ];
    let show = |v: f64| {
        if v < 0.0 {
            "-".to_string()
        } else {
            format!("{:.2}", 100.0 * v)
        }
    };
    let line: Vec<String> = NAMES
        .iter()
        .zip(&m.stats)
        .map(|(k, &v)| format!("{k} {}", show(v)))
        .collect();
    println!("{}", line[..6].join(" · "));
    println!("{}", line[6..].join(" · "));
    println!("{:<14} {:>7}", "class", "AP");
    for (class, &ap) in data.classes.iter().zip(&m.per_class) {
        println!("{class:<14} {:>7}", show(ap));
    }
    if let Some(path) = &args.json {
        let stats: serde_json::Map<String, serde_json::Value> = NAMES
            .iter()
            .zip(&m.stats)
            .map(|(k, &v)| (k.to_string(), serde_json::json!((v >= 0.0).then_some(v))))
            .collect();
        let v = serde_json::json!({"model": args.model_dir, "data": args.data, "split": name, "n": n,
            "stats": stats, "classes": data.classes,
            "AP_per_class": m.per_class.iter().map(|x| (*x >= 0.0).then_some(*x)).collect::<Vec<_>>()});
        let text = format!("{}\n", serde_json::to_string_pretty(&v)?);
        scalenet::checkpoint::atomic::atomic_write(path, text.as_bytes())?;
    }
    Ok(())
}

/// A dense model's classes against its data's.
fn same_classes(args: &Args, model: usize, data: usize) -> Result<()> {
    if model != data {
        let (dir, spec) = (args.model_dir.display(), &args.data);
        anyhow::bail!("{dir} has {model} classes but --data {spec} has {data}");
    }
    Ok(())
}

/// The split `eval` scores: test, or train with `--train-split`; and its name.
fn pick<'a, S>(args: &Args, train: &'a S, test: &'a S) -> (&'a S, &'static str) {
    if args.train_split {
        (train, "train")
    } else {
        (test, "test")
    }
}

fn eval_bar(n: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "eval [{bar:30}] {pos}/{len} images · {per_sec} · ETA {eta}",
        )
        .expect("valid"),
    );
    bar
}
