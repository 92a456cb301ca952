use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::checkpoint::model_dir::check_output_dir;
use scalenet::checkpoint::torch_export::{export_torch, Exported};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model: a plain or grown ViT, Swin or Llama directory, a GGUF file, or a hub id.
    model: PathBuf,
    /// For PyTorch: a grown Llama gets its modeling code and `auto_map`, so that
    /// `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` loads it without
    /// scalenet; any model loads with `scalenet_torch.load(DIR)` (pip install ./python).
    #[arg(long)]
    torch: bool,
    /// The directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite a model already in --out.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> Result<()> {
    if !a.torch {
        bail!("export needs a target: --torch (the only one so far)");
    }
    let out = check_output_dir(&a.out, a.force)?;
    let how = match export_torch(&a.model, &out)? {
        Exported::GrownLlama => "a grown Llama with its remote code: AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True), or scalenet_torch.load(DIR)",
        Exported::Llama => "a plain Llama: LlamaForCausalLM.from_pretrained(DIR), or scalenet_torch.load(DIR)",
        Exported::Timm { grown: true } => "a grown timm model: scalenet_torch.load(DIR) (pip install ./python)",
        Exported::Timm { grown: false } => "a timm model: timm.create_model with its config, or scalenet_torch.load(DIR)",
    };
    println!(
        "wrote {} to {} for PyTorch: {how}",
        a.model.display(),
        out.display()
    );
    Ok(())
}
