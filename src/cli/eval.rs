use std::path::PathBuf;

use anyhow::Result;
use scalenet::checkpoint::load_model;
use scalenet::data::loader::OnBadImage;
use scalenet::data::transform::Transform;
use scalenet::data::{Dataset, DATA_HELP};
use scalenet::device::{parse_device, DEVICE_HELP};
use scalenet::train::evaluate;

#[derive(clap::Args, Debug)]
pub struct Args {
    model_dir: PathBuf,
    #[arg(long, help = DATA_HELP)]
    data: String,
    /// Evaluate the training split instead of the test split.
    #[arg(long)]
    train_split: bool,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value = "fail", value_parser = ["fail", "skip"])]
    on_bad_image: String,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = parse_device(&args.device)?;
    let loaded = load_model(&args.model_dir, &device)?;
    let data = Dataset::open(&args.data)?;
    let vit = loaded.network.config();
    if vit.num_classes != data.num_classes() {
        anyhow::bail!(
            "{}: the model has {} classes but --data {} has {}",
            args.model_dir.join("config.json").display(),
            vit.num_classes,
            args.data,
            data.num_classes()
        );
    }
    let split = if args.train_split {
        Some(data.train.clone())
    } else {
        data.test.clone()
    };
    let Some(split) = split else {
        anyhow::bail!(
            "--data {}: has no test split; pass --train-split",
            args.data
        )
    };
    let tf = Transform::new(
        vit.in_chans,
        vit.img_size,
        &loaded.config.pretrained_cfg,
        None,
    );
    let bar = indicatif::ProgressBar::new(split.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "eval [{bar:30}] {pos}/{len} images · {per_sec} · ETA {eta}",
        )
        .expect("valid"),
    );
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
    )?;
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
