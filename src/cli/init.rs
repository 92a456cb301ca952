use anyhow::{bail, Result};
use scalenet::checkpoint::model_dir::build_network;
use scalenet::checkpoint::seg_dir::{save_segmentor, segmentor_around, SegInit};
use scalenet::checkpoint::{save_model, ModelConfig};
use scalenet::model::arch::preset_names;
use scalenet::model::RandomInit;
use scalenet::segment::HeadKind;
use serde_json::{Map, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// timm architecture, e.g. deit_tiny_patch16_224 (`--arch list` prints them all), or
    /// `llama` for a Llama-family decoder (its sizes as --model-arg hidden_size=... etc.), or
    /// `upernet` / `seg-linear` for a semantic segmentor around --backbone, `retinanet` for a
    /// detector around it.
    #[arg(long)]
    arch: String,
    /// Segmentation and detection: the image model (plain or grown ViT or Swin) to put the
    /// heads on.
    #[arg(long, value_name = "MODEL_DIR")]
    backbone: Option<std::path::PathBuf>,
    /// Segmentation: classes, background included (default 11, fmnist-scenes'); detection:
    /// object classes, no background (default 10, fmnist-scenes' garments).
    #[arg(long)]
    num_classes: Option<usize>,
    /// Detection: the feature pyramid's width (torchvision's RetinaNet uses 256).
    #[arg(long, default_value_t = 64)]
    fpn_channels: usize,
    /// Detection: one anchor base size per pyramid level, finest first, e.g. 32,64,128,256,512
    /// (torchvision's); each gives three scales and three aspect ratios. Default: four times
    /// each level's stride, which is torchvision's on a backbone of patch 16 (ViT) or 4 (Swin).
    #[arg(long, value_delimiter = ',')]
    anchor_sizes: Vec<f32>,
    /// Segmentation: UperNet's width (mmsegmentation's configs use 512 beside a 768-wide
    /// backbone; 64 keeps that proportion for a small one).
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Segmentation: the FCN auxiliary head's width (mmsegmentation's configs use 256).
    #[arg(long, default_value_t = 32)]
    aux_channels: usize,
    /// Segmentation and detection: the input side the model runs at (fmnist-scenes: 96); a ViT's position
    /// table is resampled as timm does. Default: the backbone's.
    #[arg(long)]
    img_size: Option<usize>,
    /// Override a model argument, timm-style: img_size=32, in_chans=1, depth=6, global_pool=avg.
    /// Values are JSON (numbers, true/false, [h,w]); bare words are strings.
    #[arg(long = "model-arg", value_name = "KEY=VALUE")]
    model_args: Vec<String>,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    out: super::OutDir,
}

pub fn run(args: Args) -> Result<()> {
    if args.arch == "list" {
        for name in preset_names() {
            println!("{name}");
        }
        return Ok(());
    }
    if args.arch == scalenet::detect::ARCHITECTURE {
        return init_detector(&args);
    }
    if let Some(head) = segmentation_head(&args.arch, args.backbone.is_some())? {
        return init_segmentor(&args, head);
    }
    let overrides = parse_model_args(&args.model_args)?;
    if args.arch == "llama" {
        return init_llama(&args, &overrides);
    }
    let config = ModelConfig::from_preset(&args.arch, &overrides)?;
    let out = args.out.checked()?;
    let device = burn::tensor::Device::flex();
    let model = build_network(&config, &mut RandomInit::new(args.seed), &device);
    save_model(&out, &config, &model)?;
    let n = model.num_params();
    println!(
        "initialised {} ({} parameters) in {}",
        config.architecture,
        scalenet::units::thousands(n),
        out.display()
    );
    Ok(())
}

/// The segmentation head `--arch` names, if it names one; `--backbone` goes with it.
fn segmentation_head(arch: &str, has_backbone: bool) -> Result<Option<HeadKind>> {
    let head = match arch {
        "upernet" => Some(HeadKind::Upernet),
        "seg-linear" => Some(HeadKind::Linear),
        _ => None,
    };
    match (head, has_backbone) {
        (Some(_), false) => {
            bail!("--arch {arch} needs --backbone MODEL_DIR (an image model, plain or grown)")
        }
        (None, true) => {
            bail!("--backbone goes with --arch upernet, seg-linear or retinanet, not {arch}")
        }
        (h, _) => Ok(h),
    }
}

fn init_segmentor(args: &Args, head: HeadKind) -> Result<()> {
    let opts = SegInit {
        head,
        num_classes: args.num_classes.unwrap_or(11),
        channels: args.channels,
        aux_channels: args.aux_channels,
        img_size: args.img_size,
        seed: args.seed,
    };
    let backbone = args
        .backbone
        .as_deref()
        .expect("checked by segmentation_head");
    let out = args.out.checked()?;
    let (config, seg) = segmentor_around(backbone, &opts, &burn::tensor::Device::flex())?;
    save_segmentor(&out, &config, &seg)?;
    let [h, w] = config.backbone.arch.img_size();
    println!(
        "initialised {} on {} ({} backbone + {} head parameters, {h}×{w} input, {} classes) in {}",
        args.arch,
        backbone.display(),
        scalenet::units::thousands(seg.backbone.num_params()),
        scalenet::units::thousands(seg.head_params()),
        config.spec.num_classes,
        out.display()
    );
    Ok(())
}

fn init_detector(args: &Args) -> Result<()> {
    use scalenet::checkpoint::det_dir::{detector_around, save_detector, DetInit};
    use scalenet::detect::DetSpec;

    let Some(backbone) = args.backbone.as_deref() else {
        bail!("--arch retinanet needs --backbone MODEL_DIR (an image model, plain or grown)");
    };
    let out = args.out.checked()?;
    let mut opts = DetInit {
        spec: DetSpec {
            num_classes: args.num_classes.unwrap_or(10),
            fpn_channels: args.fpn_channels,
            anchor_sizes: args.anchor_sizes.clone(),
            ..DetSpec::default()
        },
        img_size: args.img_size,
        class_names: None,
        seed: args.seed,
    };
    let device = burn::tensor::Device::flex();
    let (config, det) = detector_around(backbone, &mut opts, &device)?;
    save_detector(&out, &config, &det)?;
    let [h, w] = config.backbone.arch.img_size();
    let sizes: Vec<String> = config
        .spec
        .anchor_sizes
        .iter()
        .map(f32::to_string)
        .collect();
    println!(
        "initialised retinanet on {} ({} backbone + {} pyramid and head parameters, {h}×{w} input, {} classes, anchors {}) in {}",
        backbone.display(),
        scalenet::units::thousands(det.backbone.num_params()),
        scalenet::units::thousands(det.head_params()),
        config.spec.num_classes,
        sizes.join("/"),
        out.display()
    );
    Ok(())
}

/// A random Llama-family decoder as a transformers directory, with transformers' init (normal
/// 0.02 for embeddings and projections, ones for the norms).
fn init_llama(args: &Args, overrides: &Map<String, Value>) -> Result<()> {
    use scalenet::model::llama::{Llama, LlamaConfig};
    let (raw, cfg) = LlamaConfig::for_init(overrides).map_err(|e| anyhow::anyhow!("llama: {e}"))?;
    let out = args.out.checked()?;
    let model = Llama::new(
        &cfg,
        &mut RandomInit::new(args.seed),
        &burn::tensor::Device::flex(),
    );
    let n = model.num_params();
    let model = scalenet::network::LanguageModel::Plain(model);
    scalenet::checkpoint::hf_dir::save_llama(&out, &raw, &model, None)?;
    println!(
        "initialised a Llama of {} layers, width {} ({} parameters) in {}; it has no tokenizer: \
         `scalenet tokenizer train` makes one (its <|endoftext|>, id 0, is the bos and eos here), or copy a tokenizer.json of {} tokens",
        cfg.num_hidden_layers,
        cfg.hidden_size,
        scalenet::units::thousands(n),
        out.display(),
        cfg.vocab_size
    );
    Ok(())
}

/// `key=value` pairs → a JSON object; values parse as JSON, falling back to strings.
pub fn parse_model_args(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--model-arg '{pair}': expected KEY=VALUE, e.g. img_size=32");
        };
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        if k.trim().is_empty() {
            bail!("--model-arg '{pair}': empty key");
        }
        map.insert(k.trim().to_string(), value);
    }
    Ok(map)
}
