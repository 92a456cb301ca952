use std::path::PathBuf;

use anyhow::Result;
use scalenet::device::DEVICE_HELP;
use scalenet::ops::auto_precision::Requested;
use scalenet::study::{run_study, table, StudyConfig};

#[derive(clap::Args, Debug)]
pub struct ReproduceArgs {
    /// Study directory (runs/, models/, RESULTS.md, results.png, study.json).
    #[arg(long)]
    out: PathBuf,
    /// Model family: vit, or swin (two stages of --base-depth blocks, heads h and 2h, window
    /// 7; each stage grows to 2L).
    #[arg(long, default_value = "vit", value_parser = ["vit", "swin"])]
    family: String,
    /// Dataset; the committed study uses the full Fashion-MNIST from Debian.
    #[arg(long, default_value = "fmnist")]
    data: String,
    /// Base depth L (grown and from-scratch deep models have 2L).
    #[arg(long, default_value_t = 3)]
    base_depth: usize,
    #[arg(long, default_value_t = 72)]
    embed_dim: usize,
    #[arg(long, default_value_t = 3)]
    num_heads: usize,
    #[arg(long, default_value_t = 7)]
    patch_size: usize,
    /// Epochs to pretrain the base.
    #[arg(long, default_value_t = 3)]
    base_epochs: usize,
    /// E: epochs after growth (the long from-scratch arm trains 3E).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Seeds for grown, grown-identity and scratch-3E.
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long)]
    train_subset: Option<usize>,
    #[arg(long)]
    test_subset: Option<usize>,
    /// Run only these arms (comma-separated). Headline (run by default): grown, grown-identity,
    /// scratch-3E, scratch-E, stacked, shared-only, base+E. Scaling: grown-1.5L, grown-3L,
    /// scratch-1.5L-3E, scratch-3L-3E. Variants: adapters-only, interleave, rank-8, rank-64,
    /// grown-low-lr, base+E-low-lr (a quarter of the learning rate).
    /// A study grows by running it again with other arms; finished arms are reused, and the
    /// report holds every finished arm (`--only base` rewrites it without training).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Stochastic depth rate (rises with the position, as in timm).
    #[arg(long, default_value_t = 0.0)]
    drop_path: f64,
    /// Mixup alpha (0 = off).
    #[arg(long, default_value_t = 0.0)]
    mixup: f64,
    /// RandAugment N,M (ops per image, magnitude 0-10), e.g. 2,9.
    #[arg(long, value_name = "N,M")]
    rand_augment: Option<String>,
    /// Random-erasing probability.
    #[arg(long, default_value_t = 0.0)]
    reprob: f64,
    /// Epochs of linear warmup (fractions allowed).
    #[arg(long, default_value_t = 0.3)]
    warmup_epochs: f64,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Adapter bottleneck width r of the grown arms.
    #[arg(long, default_value_t = 32)]
    adapter_rank: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
    /// auto, f32, or bf16, as `train --precision`. Not one of the study's settings: a study may
    /// go on under the other precision (each run's run.json names its own).
    #[arg(long, default_value = "auto")]
    precision: Requested,
}

pub fn reproduce(a: ReproduceArgs) -> Result<()> {
    let precision = super::train::announce_precision(a.precision, &a.device);
    let cfg = StudyConfig {
        family: a.family,
        data: a.data,
        train_subset: a.train_subset,
        test_subset: a.test_subset,
        img_size: 28,
        patch_size: a.patch_size,
        embed_dim: a.embed_dim,
        num_heads: a.num_heads,
        base_depth: a.base_depth,
        base_epochs: a.base_epochs,
        epochs: a.epochs,
        seeds: a.seeds,
        batch_size: a.batch_size,
        lr: a.lr,
        workers: a.workers,
        device: a.device,
        only: a.only,
        drop_path: a.drop_path,
        mixup: a.mixup,
        rand_augment: a
            .rand_augment
            .as_deref()
            .map(super::train::parse_rand_augment)
            .transpose()?,
        reprob: a.reprob,
        warmup_epochs: a.warmup_epochs,
        weight_decay: a.weight_decay,
        adapter_rank: a.adapter_rank,
        precision,
        ..StudyConfig::reproduce()
    };
    let results = run_study(&cfg, &a.out, &super::train::interruptible())?;
    println!("{}", table(&results));
    println!(
        "wrote {} · plots: {}",
        a.out.join("RESULTS.md").display(),
        figures(&a.out)
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where to put the demo's models and runs.
    #[arg(long, default_value = "scalenet-demo")]
    out: PathBuf,
    /// Use the full Fashion-MNIST from Debian's package instead of the built-in subset (slower).
    #[arg(long)]
    full: bool,
}

pub fn demo(a: DemoArgs) -> Result<()> {
    let mut cfg = StudyConfig::demo();
    let debian = std::path::Path::new(scalenet::data::FMNIST_DIR).is_dir();
    if a.full {
        cfg.data = "fmnist".into();
    }
    println!("scalenet demo: pretrain a small ViT on Fashion-MNIST, grow it 2x with ScaleNet, fine-tune it,");
    println!("and compare it with the same deep model trained from scratch for 3x as long.");
    if debian && !a.full {
        println!("(Debian's full Fashion-MNIST is installed: `scalenet demo --full` uses all 60k images.)");
    }
    println!(
        "data: {} · models and runs in {}\n",
        cfg.data,
        a.out.display()
    );
    let results = run_study(&cfg, &a.out, &super::train::interruptible())?;
    println!("\n{}", table(&results));
    let get = |n: &str| results.iter().find(|r| r.name == n);
    if let (Some(g), Some(s)) = (get("grown"), get("scratch-3E")) {
        let acc = |r: &scalenet::study::ArmResult| {
            100.0 * r.test_top1.iter().sum::<f64>() / r.test_top1.len().max(1) as f64
        };
        println!(
            "grown 2L after {} epoch(s): {:.2}% · from scratch 2L after {} epochs: {:.2}% · training images {:.2}x fewer",
            g.epochs,
            acc(g),
            s.epochs,
            acc(s),
            s.train_images as f64 / g.train_images.max(1) as f64
        );
    }
    let grown = a.out.join("runs/grown-s0/model");
    println!("\nplots: {}", figures(&a.out));
    println!(
        "models: base {} · grown {}",
        a.out.join("runs/base/model").display(),
        grown.display()
    );
    println!("try next:");
    println!("  scalenet info {}", grown.display());
    println!("  scalenet eval {} --data fmnist-mini", grown.display());
    println!("  scalenet predict {} some_image.png", grown.display());
    println!(
        "  scalenet forward {} --input in.safetensors --output out.safetensors",
        grown.display()
    );
    Ok(())
}

/// The figures a study wrote (scaling.png and variants.png only once their arms have run).
fn figures(out: &std::path::Path) -> String {
    ["results.png", "scaling.png", "variants.png"]
        .iter()
        .map(|f| out.join(f))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" · ")
}
