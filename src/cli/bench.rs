use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::checkpoint::model_dir::build_network;
use scalenet::checkpoint::{load_model, ModelConfig};
use scalenet::device::DEVICE_HELP;
use scalenet::model::RandomInit;
use scalenet::network::Network;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory to time: an image classifier, a segmentor or a language model (or use
    /// --arch).
    model_dir: Option<PathBuf>,
    /// A preset to time with fresh weights, e.g. deit_tiny_patch16_224.
    #[arg(long)]
    arch: Option<String>,
    /// Model argument overrides for --arch (KEY=VALUE, as in `init`).
    #[arg(long = "model-arg", value_name = "KEY=VALUE")]
    model_args: Vec<String>,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Language models: tokens per sequence.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
    /// auto, f32, or bf16 (matrix products in bf16, f32 master weights; see `train --help`).
    #[arg(long, default_value = "auto")]
    precision: scalenet::ops::auto_precision::Requested,
}

pub fn run(args: Args) -> Result<()> {
    if args.steps == 0 || args.batch_size == 0 {
        bail!("--steps and --batch-size must be at least 1");
    }
    let device = super::device(&args.device)?;
    let decision = scalenet::ops::auto_precision::resolve(args.precision, &args.device)
        .map_err(anyhow::Error::msg)?;
    let _autocast = scalenet::ops::autocast(decision.precision);
    let gpu = scalenet::device::cuda_index(&args.device);
    let mut report = match args
        .model_dir
        .as_ref()
        .filter(|d| scalenet::checkpoint::hf_dir::is_language_model(d))
    {
        Some(dir) => {
            let make = |d: &burn::tensor::Device| {
                Ok(scalenet::checkpoint::hf_dir::load_llama(dir, d)?.model)
            };
            let (b, t, steps) = (args.batch_size, args.seq_len, args.steps);
            let r = scalenet::bench::run_lm(&make, &device, gpu, b, t, steps, args.warmup)?;
            serde_json::to_value(&r)?
        }
        None if is_detector(&args) => {
            let dir = args.model_dir.as_ref().expect("a detector is a directory");
            let config = scalenet::checkpoint::det_dir::DetModelConfig::read(dir)?;
            let make = |d: &burn::tensor::Device| {
                Ok(scalenet::checkpoint::det_dir::load_detector(dir, d)?.1)
            };
            let (b, steps) = (args.batch_size, args.steps);
            let r = scalenet::bench::run_det(&make, &config, &device, gpu, b, steps, args.warmup)?;
            serde_json::to_value(&r)?
        }
        None if is_segmentor(&args) => {
            let dir = args.model_dir.as_ref().expect("a segmentor is a directory");
            let config = scalenet::checkpoint::seg_dir::SegModelConfig::read(dir)?;
            let make = |d: &burn::tensor::Device| {
                Ok(scalenet::checkpoint::seg_dir::load_segmentor(dir, d)?.1)
            };
            let (b, steps) = (args.batch_size, args.steps);
            let r = scalenet::bench::run_seg(&make, &config, &device, gpu, b, steps, args.warmup)?;
            serde_json::to_value(&r)?
        }
        None => {
            let make = |d: &burn::tensor::Device| image_model(&args, d);
            let (b, steps) = (args.batch_size, args.steps);
            let r = scalenet::bench::run(&make, &device, gpu, b, steps, args.warmup)?;
            serde_json::to_value(&r)?
        }
    };
    // The run's settings are flattened into the report.
    report["precision_reason"] = decision.reason.into();
    report["blas_reason"] = super::blas_choice().into();
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn is_detector(args: &Args) -> bool {
    args.model_dir
        .as_deref()
        .is_some_and(scalenet::checkpoint::det_dir::is_detection_dir)
}

fn is_segmentor(args: &Args) -> bool {
    args.model_dir
        .as_deref()
        .is_some_and(scalenet::checkpoint::seg_dir::is_segmentation_dir)
}

/// The model `bench` times: a model directory, or a preset with `--model-arg`s.
fn image_model(args: &Args, d: &burn::tensor::Device) -> scalenet::Result<Network> {
    match (&args.model_dir, &args.arch) {
        (Some(dir), _) => Ok(load_model(dir, d)?.network),
        (None, Some(arch)) => {
            let overrides = super::init::parse_model_args(&args.model_args)
                .map_err(|e| scalenet::Error::InvalidModel(e.to_string()))?;
            let cfg = ModelConfig::from_preset(arch, &overrides)?;
            Ok(build_network(&cfg, &mut RandomInit::new(0), d))
        }
        (None, None) => Err(scalenet::Error::InvalidModel(
            "give a MODEL_DIR or --arch NAME".into(),
        )),
    }
}
