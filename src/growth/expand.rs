//! Turning a base model into a grown one (what `scalenet expand` does): the model and config to
//! save. How each family grows is in its own file (`GrownVit::grow`, `GrownSwin::grow`,
//! `GrownLlama::grow`), over the options and plan of `growth::options`.

use super::llama::GrownLlama;
use super::options::{plan, ExpandOptions};
use super::plan::{new_layers, Growth, NEW_LAYERS_KEY};
use super::swin::GrownSwin;
use super::vit::GrownVit;
use crate::checkpoint::model_dir::ModelConfig;
use crate::error::Result;
use crate::model::arch::ImageArch;
use crate::model::llama::Llama;
use crate::model::swin::SwinTransformer;
use crate::model::vit::VisionTransformer;
use crate::network::{LanguageModel, Network};

/// Grows `base` as `opts` says; returns the config and network to save.
pub fn expand(
    base: VisionTransformer,
    base_config: &ModelConfig,
    opts: &ExpandOptions,
) -> Result<(ModelConfig, Network)> {
    let grown = GrownVit::grow(base, opts)?;
    let mut config = base_config.clone();
    if opts.no_share {
        let plain = grown.unshared(&grown.embed.pos_embed.val().device());
        config.arch = ImageArch::Vit(plain.config.clone());
        config.growth = None;
        let added = new_layers(&grown.layer_map);
        config
            .raw
            .insert(NEW_LAYERS_KEY.into(), serde_json::json!(added));
        return Ok((config, Network::Plain(plain)));
    }
    config.growth = Some(Growth::Stack(grown.spec.clone()));
    Ok((config, Network::Grown(grown)))
}

/// Grows a Swin stage by stage (see [`GrownSwin::grow`]); returns the config and network to save.
pub fn expand_swin(
    base: SwinTransformer,
    base_config: &ModelConfig,
    opts: &ExpandOptions,
) -> Result<(ModelConfig, Network)> {
    let grown = GrownSwin::grow(base, opts)?;
    let mut config = base_config.clone();
    if opts.no_share {
        let plain = grown.unshared(&grown.ends.proj_bias.val().device());
        config.arch = ImageArch::Swin(plain.config().clone());
        config.growth = None;
        return Ok((config, Network::Swin(plain)));
    }
    config.growth = Some(Growth::Stages(grown.spec.clone()));
    Ok((config, Network::GrownSwin(grown)))
}

/// Grows a Llama as `opts` say: a grown model, or with `no_share` a plain one of copies.
pub fn expand_llama(base: Llama, opts: &ExpandOptions) -> Result<LanguageModel> {
    let spec = plan(opts, base.config.num_hidden_layers, base.config.hidden_size)?;
    let device = base.ends.embed_tokens.val().device();
    let grown = GrownLlama::grow(base, &spec, opts.seed);
    if opts.no_share {
        return Ok(LanguageModel::Plain(grown.unshared(&device)));
    }
    Ok(LanguageModel::Grown(grown))
}

/// What [`expand_llama_dir`] wrote.
pub struct GrownLlamaDir {
    pub model: LanguageModel,
    pub base_params: usize,
    /// The positions that are new blocks (`--no-share` growths), for `train --train-only new`.
    pub added: Vec<usize>,
}

/// Grows the plain Llama in `base_dir` (a transformers directory or a GGUF file) as `opts`
/// say and saves it, with the base's tokenizer, in `out`. With `no_share` the added layers
/// are recorded in the config (`NEW_LAYERS_KEY`), for LLaMA-Pro's training of them alone.
pub fn expand_llama_dir(
    base_dir: &std::path::Path,
    opts: &ExpandOptions,
    out: &std::path::Path,
) -> Result<GrownLlamaDir> {
    use crate::checkpoint::hf_dir::{load_llama, save_llama};
    let base = load_llama(base_dir, &burn::tensor::Device::flex())?;
    let LanguageModel::Plain(model) = base.model else {
        return Err(crate::error::Error::Refused {
            path: base_dir.to_path_buf(),
            msg: "is already a grown model; expand a plain model".into(),
        });
    };
    let base_params = model.num_params();
    let (depth, width) = (model.config.num_hidden_layers, model.config.hidden_size);
    let mut raw = base.raw.clone();
    let mut added = Vec::new();
    if opts.no_share {
        added = new_layers(&plan(opts, depth, width)?.layer_map);
        raw.insert(NEW_LAYERS_KEY.into(), added.clone().into());
    }
    let grown = expand_llama(model, opts)?;
    save_llama(out, &raw, &grown, base.tokenizer_json.as_deref())?;
    Ok(GrownLlamaDir {
        model: grown,
        base_params,
        added,
    })
}
