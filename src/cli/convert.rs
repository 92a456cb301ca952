use std::path::PathBuf;

use anyhow::Result;
use scalenet::checkpoint::hf_dir::{build, read_parts, save_llama};
use scalenet::checkpoint::model_dir::check_output_dir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A GGUF file (llama architecture) or a transformers directory.
    model: PathBuf,
    /// The transformers directory to write: config.json, model.safetensors (f32) and
    /// tokenizer.json.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite a model already in --out.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let out = check_output_dir(&args.out, args.force)?;
    let parts = read_parts(&args.model)?;
    let loaded = build(parts, &burn::tensor::Device::flex())?;
    save_llama(
        &out,
        &loaded.raw,
        &loaded.model,
        loaded.tokenizer_json.as_deref(),
    )?;
    eprintln!(
        "wrote {} ({} layers, {} parameters, f32) to {}",
        args.model.display(),
        loaded.config.num_hidden_layers,
        loaded.model.num_params(),
        out.display()
    );
    Ok(())
}
