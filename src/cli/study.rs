use std::path::PathBuf;

use anyhow::Result;
use scalenet::device::DEVICE_HELP;
use scalenet::ops::auto_precision::Requested;
use scalenet::study::{
    run_lm_study, run_seg_study, run_study, table, write_lm_report, write_seg_report,
    LmStudyConfig, SegStudyConfig, StudyConfig,
};

#[derive(clap::Args, Debug)]
pub struct ReproduceArgs {
    /// Study directory (runs/, models/, RESULTS.md, results.png, study.json).
    #[arg(long)]
    out: PathBuf,
    /// Model family: vit, swin (two stages of --base-depth blocks, heads h and 2h, window 7;
    /// each stage grows to 2L), llama (the language-model study: growth operators on a tiny
    /// Llama trained on --corpus; its defaults are in brackets below), seg (UperNet on the
    /// backbones of a finished vit study, --backbones; its defaults are in brackets below) or
    /// det (RetinaNet on the same backbones and scenes' boxes).
    #[arg(long, default_value = "vit", value_parser = ["vit", "swin", "llama", "seg", "det"])]
    family: String,
    /// Dataset; the committed study uses the full Fashion-MNIST from Debian [default: fmnist;
    /// seg fmnist-scenes].
    #[arg(long)]
    data: Option<String>,
    /// Base depth L (grown and from-scratch deep models have 2L) [default: 3; llama 4].
    #[arg(long)]
    base_depth: Option<usize>,
    #[arg(long, default_value_t = 72)]
    embed_dim: usize,
    /// [default: 3; llama 6]
    #[arg(long)]
    num_heads: Option<usize>,
    #[arg(long, default_value_t = 7)]
    patch_size: usize,
    /// Epochs to pretrain the base [default: 3; llama 12 of --epoch-tokens: D1].
    #[arg(long)]
    base_epochs: Option<usize>,
    /// E: epochs after growth (the long from-scratch arm trains 3E) [default: 1; llama 6: D2; seg 4; det 12].
    #[arg(long)]
    epochs: Option<usize>,
    /// Seeds for the headline arms [default: 3].
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// [default: 256; llama 16 windows]
    #[arg(long)]
    batch_size: Option<usize>,
    /// [default: 2e-3; seg 3e-3; det 1e-3]
    #[arg(long)]
    lr: Option<f64>,
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
    /// Epochs of linear warmup (fractions allowed) [default: 0.3; llama 0.5].
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// [default: 0.05; llama 0.1]
    #[arg(long)]
    weight_decay: Option<f64>,
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
    /// Write RESULTS.md and the figures from the finished runs in --out (its study.json says
    /// what the study is) and train nothing (--family llama or seg; a vit or swin study does
    /// this with --only base).
    #[arg(long)]
    report: bool,
    #[command(flatten)]
    lm: LmArgs,
    #[command(flatten)]
    seg: SegArgs,
}

/// The segmentation study's own flags.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Segmentation and detection (--family seg, det)")]
pub struct SegArgs {
    /// A finished classification study (`scalenet reproduce`) whose base, grown-s*,
    /// scratch-3E-s* and stacked-s* models are the backbones.
    #[arg(long, default_value = "studies/converged")]
    backbones: PathBuf,
    /// The side every segmentor runs at (scenes are resized to it).
    #[arg(long, default_value_t = 48)]
    img_size: usize,
    /// UperNet's channels (its auxiliary head has half); RetinaNet's FPN and head width.
    #[arg(long, default_value_t = 64)]
    channels: usize,
}

/// The language-model study's own flags.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Language models (--family llama)")]
pub struct LmArgs {
    /// A corpus directory (`scalenet corpus`); made from Debian's packages when it does not
    /// exist [default: OUT/corpus].
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Width of the Llama.
    #[arg(long, default_value_t = 192)]
    hidden_size: usize,
    #[arg(long, default_value_t = 512)]
    intermediate_size: usize,
    #[arg(long, default_value_t = 2)]
    num_kv_heads: usize,
    /// The BPE tokenizer's size (trained on the corpus's training split).
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Tokens per epoch (one validation after each).
    #[arg(long, default_value_t = 500_000)]
    epoch_tokens: u64,
    /// Rates tried (seed 0, validation loss) for the headline arms; --lr must be one of them;
    /// `none` for no grid.
    #[arg(long, default_value = "5e-4,1e-3,2e-3,4e-3")]
    lr_grid: String,
    /// SOLAR's m: layers dropped from each copy.
    #[arg(long, default_value_t = 1)]
    dus_drop: usize,
    /// Validation windows read after each epoch (the final evaluation reads all).
    #[arg(long, default_value_t = 256)]
    val_windows: usize,
}

pub fn reproduce(a: ReproduceArgs) -> Result<()> {
    if a.report {
        return report_only(&a);
    }
    let precision = super::train::announce_precision(a.precision, &a.device)?;
    match a.family.as_str() {
        "llama" => return reproduce_llama(a, precision),
        "seg" | "det" => return reproduce_seg(a, precision),
        _ => {}
    }
    let d = StudyConfig::reproduce();
    let cfg = StudyConfig {
        family: a.family,
        data: a.data.unwrap_or(d.data),
        train_subset: a.train_subset,
        test_subset: a.test_subset,
        img_size: 28,
        patch_size: a.patch_size,
        embed_dim: a.embed_dim,
        num_heads: a.num_heads.unwrap_or(d.num_heads),
        base_depth: a.base_depth.unwrap_or(d.base_depth),
        base_epochs: a.base_epochs.unwrap_or(d.base_epochs),
        epochs: a.epochs.unwrap_or(d.epochs),
        seeds: a.seeds,
        batch_size: a.batch_size.unwrap_or(d.batch_size),
        lr: a.lr.unwrap_or(d.lr),
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
        warmup_epochs: a.warmup_epochs.unwrap_or(d.warmup_epochs),
        weight_decay: a.weight_decay.unwrap_or(d.weight_decay),
        adapter_rank: a.adapter_rank,
        precision,
        ..d
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

/// The language-model study: the corpus (made when missing), then every arm.
fn reproduce_llama(a: ReproduceArgs, precision: scalenet::ops::precision::Precision) -> Result<()> {
    let image_only = [
        ("--data", a.data.is_some()),
        ("--embed-dim", a.embed_dim != 72),
        ("--patch-size", a.patch_size != 7),
        ("--train-subset", a.train_subset.is_some()),
        ("--test-subset", a.test_subset.is_some()),
        ("--drop-path", a.drop_path > 0.0),
        ("--mixup", a.mixup > 0.0),
        ("--rand-augment", a.rand_augment.is_some()),
        ("--reprob", a.reprob > 0.0),
    ];
    if let Some((flag, _)) = image_only.iter().find(|(_, set)| *set) {
        anyhow::bail!("{flag} belongs to the image studies; --family llama trains on --corpus");
    }
    // The default corpus lives in the study directory and is recorded relative to it, so that
    // a study moved (archived, then continued elsewhere) finds it or makes it again.
    let corpus = match &a.lm.corpus {
        Some(c) => std::path::absolute(c)?,
        None => PathBuf::from("corpus"),
    };
    let corpus_dir = a.out.join(&corpus);
    if !corpus_dir.join("corpus.json").exists() {
        let info = scalenet::data::corpus::assemble(&Default::default(), 0, &corpus_dir)?;
        println!("{}", scalenet::data::corpus::describe(&info, &corpus_dir));
    }
    let lr_grid = match a.lm.lr_grid.as_str() {
        "none" => Vec::new(),
        g => g
            .split(',')
            .map(|t| t.trim().parse::<f64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| anyhow::anyhow!("--lr-grid '{g}': expected rates like 1e-3,2e-3"))?,
    };
    let d = LmStudyConfig::reproduce(corpus);
    let cfg = LmStudyConfig {
        vocab_size: a.lm.vocab_size,
        hidden_size: a.lm.hidden_size,
        intermediate_size: a.lm.intermediate_size,
        num_heads: a.num_heads.unwrap_or(d.num_heads),
        num_kv_heads: a.lm.num_kv_heads,
        base_depth: a.base_depth.unwrap_or(d.base_depth),
        seq_len: a.lm.seq_len,
        batch_size: a.batch_size.unwrap_or(d.batch_size),
        epoch_tokens: a.lm.epoch_tokens,
        base_epochs: a.base_epochs.unwrap_or(d.base_epochs),
        epochs: a.epochs.unwrap_or(d.epochs),
        seeds: a.seeds,
        lr: a.lr.unwrap_or(d.lr),
        lr_grid,
        warmup_epochs: a.warmup_epochs.unwrap_or(d.warmup_epochs),
        weight_decay: a.weight_decay.unwrap_or(d.weight_decay),
        adapter_rank: a.adapter_rank,
        dus_drop: a.lm.dus_drop,
        val_windows: a.lm.val_windows,
        device: a.device,
        only: a.only,
        precision,
        ..d
    };
    run_lm_study(&cfg, &a.out, &super::train::interruptible())?;
    let report = a.out.join("RESULTS.md");
    if let Ok(text) = std::fs::read_to_string(&report) {
        println!("{text}");
    }
    println!("wrote {} · plots: {}", report.display(), figures(&a.out));
    Ok(())
}

/// `--report`: the report of the study in `--out` as its finished runs stand.
fn report_only(a: &ReproduceArgs) -> Result<()> {
    let path = a.out.join("study.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}; is --out a study directory?", path.display()))?;
    let bad = |e: serde_json::Error| {
        anyhow::anyhow!(
            "{}: not a --family {} study ({e})",
            path.display(),
            a.family
        )
    };
    match a.family.as_str() {
        "seg" | "det" => {
            let cfg: SegStudyConfig = serde_json::from_str(&text).map_err(bad)?;
            if cfg.family != a.family {
                anyhow::bail!("{}: a --family {} study, not {}", path.display(), cfg.family, a.family);
            }
            write_seg_report(&cfg, &a.out)?
        }
        "llama" => write_lm_report(&serde_json::from_str(&text).map_err(bad)?, &a.out)?,
        f => anyhow::bail!("--report goes with --family llama, seg or det; a {f} study rewrites its report with --only base"),
    }
    println!(
        "wrote {} · plots: {}",
        a.out.join("RESULTS.md").display(),
        figures(&a.out)
    );
    Ok(())
}

/// The dense-prediction studies: UperNet (`--family seg`) or RetinaNet (`det`) on each backbone
/// of a finished classification study.
fn reproduce_seg(a: ReproduceArgs, precision: scalenet::ops::precision::Precision) -> Result<()> {
    let not_seg = [
        ("--base-depth", a.base_depth.is_some()),
        ("--base-epochs", a.base_epochs.is_some()),
        ("--num-heads", a.num_heads.is_some()),
        ("--embed-dim", a.embed_dim != 72),
        ("--patch-size", a.patch_size != 7),
        ("--drop-path", a.drop_path > 0.0),
        ("--mixup", a.mixup > 0.0),
        ("--rand-augment", a.rand_augment.is_some()),
        ("--reprob", a.reprob > 0.0),
    ];
    if let Some((flag, _)) = not_seg.iter().find(|(_, set)| *set) {
        anyhow::bail!(
            "{flag} belongs to the classification studies; --family {} takes its backbones from --backbones",
            a.family
        );
    }
    let d = match a.family.as_str() {
        "det" => SegStudyConfig::reproduce_det(a.seg.backbones),
        _ => SegStudyConfig::reproduce(a.seg.backbones),
    };
    let cfg = SegStudyConfig {
        data: a.data.unwrap_or(d.data.clone()),
        img_size: a.seg.img_size,
        channels: a.seg.channels,
        aux_channels: (a.seg.channels / 2).max(1),
        train_subset: a.train_subset.or(d.train_subset),
        val_subset: a.test_subset.or(d.val_subset),
        epochs: a.epochs.unwrap_or(d.epochs),
        batch_size: a.batch_size.unwrap_or(d.batch_size),
        lr: a.lr.unwrap_or(d.lr),
        warmup_epochs: a.warmup_epochs.unwrap_or(d.warmup_epochs),
        weight_decay: a.weight_decay.unwrap_or(d.weight_decay),
        seeds: a.seeds,
        workers: a.workers,
        device: a.device,
        only: a.only,
        precision,
        ..d
    };
    run_seg_study(&cfg, &a.out, &super::train::interruptible())?;
    let report = a.out.join("RESULTS.md");
    if let Ok(text) = std::fs::read_to_string(&report) {
        println!("{text}");
    }
    println!("wrote {} · plots: {}", report.display(), figures(&a.out));
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
