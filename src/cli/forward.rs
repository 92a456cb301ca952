use std::path::PathBuf;

use anyhow::Result;
use scalenet::checkpoint::{load_model, write_tensors};
use scalenet::device::{parse_device, DEVICE_HELP};
use scalenet::inference::{run_batched, ImageBatch};
use scalenet::model::NamedTensor;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json + model.safetensors).
    model_dir: PathBuf,
    /// safetensors file holding `input`: [N, C, H, W] f32, already normalised.
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write; it receives `logits`: [N, num_classes] f32.
    #[arg(long)]
    output: PathBuf,
    /// Images per forward pass; bounds memory use.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = parse_device(&args.device)?;
    let loaded = load_model(&args.model_dir, &device)?;
    let images = ImageBatch::read(&args.input, &loaded.config.vit)?;
    let model = &loaded.network;
    let (logits, width) = run_batched(
        &images,
        args.batch_size,
        &device,
        |x| model.forward(x),
        |_| {},
    );
    let out = NamedTensor {
        name: "logits".into(),
        shape: vec![images.len(), width],
        values: logits,
    };
    write_tensors(&args.output, &[out])?;
    eprintln!(
        "wrote logits [{}, {}] to {}",
        images.len(),
        width,
        args.output.display()
    );
    Ok(())
}
