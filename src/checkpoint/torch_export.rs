//! `scalenet export --torch`: a model directory that PyTorch users load without scalenet. A
//! grown Llama gets the Python package's own remote code (`configuration_scalenet.py`,
//! `modeling_scalenet.py`, `scalenet_parts.py`, compiled in from `python/scalenet_torch/`) and
//! an `auto_map`, so that `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`
//! loads it; a plain Llama is a transformers directory as it is; a ViT or Swin (plain or grown)
//! is written as its timm directory, which `scalenet_torch.load` reads.

use std::path::Path;

use serde_json::{json, Value};

use super::atomic::atomic_write;
use crate::error::{Error, Result};

/// The remote code a grown Llama's directory carries: (file name, the package's text).
pub const REMOTE_CODE: [(&str, &str); 3] = [
    (
        "configuration_scalenet.py",
        include_str!("../../python/scalenet_torch/configuration_scalenet.py"),
    ),
    (
        "modeling_scalenet.py",
        include_str!("../../python/scalenet_torch/modeling_scalenet.py"),
    ),
    (
        "scalenet_parts.py",
        include_str!("../../python/scalenet_torch/scalenet_parts.py"),
    ),
];

/// What [`export_torch`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exported {
    /// A grown Llama with remote code: transformers' Auto classes load it.
    GrownLlama,
    /// A plain Llama: transformers' `LlamaForCausalLM` loads it.
    Llama,
    /// A timm directory (plain or grown ViT or Swin): `scalenet_torch.load` reads it.
    Timm { grown: bool },
}

/// Writes the model at `model` (a directory, GGUF file or hub id) into `out` for PyTorch.
pub fn export_torch(model: &Path, out: &Path) -> Result<Exported> {
    let device = burn::tensor::Device::flex();
    if super::hf_dir::is_language_model(model) {
        let loaded = super::hf_dir::load_llama(model, &device)?;
        super::hf_dir::save_llama(
            out,
            &loaded.raw,
            &loaded.model,
            loaded.tokenizer_json.as_deref(),
        )?;
        if loaded.model.growth().is_none() {
            return Ok(Exported::Llama);
        }
        add_remote_code(out)?;
        return Ok(Exported::GrownLlama);
    }
    let loaded = super::model_dir::load_model(model, &device)?;
    super::model_dir::save_model(out, &loaded.config, &loaded.network)?;
    Ok(Exported::Timm {
        grown: loaded.config.growth.is_some(),
    })
}

/// The remote code beside the model, and the config's `auto_map` and `architectures` naming it.
fn add_remote_code(out: &Path) -> Result<()> {
    for (name, text) in REMOTE_CODE {
        atomic_write(&out.join(name), text.as_bytes())?;
    }
    let path = out.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let mut cfg: Value = serde_json::from_slice(&bytes).map_err(|cause| Error::Json {
        path: path.clone(),
        cause,
    })?;
    cfg["architectures"] = json!(["ScaleNetLlamaForCausalLM"]);
    cfg["auto_map"] = json!({
        "AutoConfig": "configuration_scalenet.ScaleNetLlamaConfig",
        "AutoModelForCausalLM": "modeling_scalenet.ScaleNetLlamaForCausalLM",
    });
    let mut text = serde_json::to_string_pretty(&cfg).expect("a JSON value serialises");
    text.push('\n');
    // Written last: a directory whose config names remote code always has it.
    atomic_write(&path, text.as_bytes())
}
