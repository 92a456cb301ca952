//! Turning a base model into a grown one (what `scalenet expand` does).

use burn::tensor::Device;

use super::grown::{fixed_position_values, GrownVit, POSITIONS};
use super::plan::{
    identity_gates, layer_map, AdapterSpec, Growth, GrowthSpec, MapStrategy, StagedGrowth,
    FORMAT_VERSION,
};
use crate::checkpoint::ModelConfig;
use crate::error::{Error, Result};
use crate::model::llama::Llama;
use crate::model::{Init, RandomInit, VisionTransformer, WeightSource};
use crate::network::{LanguageModel, Network};

use super::llama::GrownLlama;
use super::swin::{fixed_stage_values, GrownSwin};
use crate::config::ImageArch;
use crate::model::swin::SwinTransformer;

/// How positions start out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitMode {
    /// The paper's: shared blocks, zero-output adapters, no gates.
    Paper,
    /// Per-position gates, 1 at each base block's first position and 0 after, so the grown
    /// model computes the base model's function at step 0.
    Identity,
}

#[derive(Clone, Debug)]
pub struct ExpandOptions {
    pub depth: usize,
    /// A Swin's grown depth per stage (empty for single-stack models).
    pub depths: Vec<usize>,
    pub map: MapStrategy,
    /// `None` shares blocks without any adjustment.
    pub adapter: Option<AdapterSpec>,
    pub unshared_norms: bool,
    pub init: InitMode,
    /// Write independent copies as a plain timm model (the stacking baseline).
    pub no_share: bool,
    pub seed: u64,
}

/// Grows `base` as `opts` says; returns the config and network to save.
pub fn expand(
    base: VisionTransformer,
    base_config: &ModelConfig,
    opts: &ExpandOptions,
) -> Result<(ModelConfig, Network)> {
    let cfg = &base.config;
    let spec = plan(opts, cfg.depth, cfg.embed_dim)?;
    let gates = identity_gates(&spec.layer_map);
    let mut fixed = fixed_position_values(&base.blocks, POSITIONS, &spec, cfg.embed_dim, &gates);
    let mut rng = RandomInit::new(opts.seed);
    let mut src = |key: &str, shape: &[usize], init: Init| match fixed.remove(key) {
        Some(v) => v,
        None => rng.tensor(key, shape, init),
    };
    let device: Device = base.embed.pos_embed.val().device();
    let grown = GrownVit::from_base(base, &spec, &mut src, &device);

    let mut config = base_config.clone();
    if opts.no_share {
        let plain = grown.unshared(&device);
        config.arch = ImageArch::Vit(plain.config.clone());
        config.growth = None;
        return Ok((config, Network::Plain(plain)));
    }
    config.growth = Some(Growth::Stack(spec));
    Ok((config, Network::Grown(grown)))
}

/// Grows a Swin stage by stage to `opts.depths`, each stage with its own layer map from
/// `opts.map`; returns the config and network to save.
pub fn expand_swin(
    base: SwinTransformer,
    base_config: &ModelConfig,
    opts: &ExpandOptions,
) -> Result<(ModelConfig, Network)> {
    let cfg = base.config().clone();
    let n = cfg.num_stages();
    if opts.depths.len() != n {
        return Err(Error::InvalidModel(format!(
            "--depths gives {} stage depths, but the base Swin has {n} stages (depths {:?})",
            opts.depths.len(),
            cfg.depths
        )));
    }
    let strategy = |s: usize| match &opts.map {
        MapStrategy::PerStage(maps) => maps
            .get(s)
            .cloned()
            .map(MapStrategy::Explicit)
            .ok_or_else(|| format!("--map gives {} stage maps for {n} stages", maps.len())),
        MapStrategy::Explicit(_) => Err(
            "a Swin takes one map per stage, separated by '/': e.g. --map 0,1,0,1/0,1/...".into(),
        ),
        m => Ok(m.clone()),
    };
    let mut layer_maps = Vec::with_capacity(n);
    for s in 0..n {
        let map = strategy(s)
            .and_then(|m| layer_map(&m, cfg.depths[s], opts.depths[s]))
            .map_err(|m| Error::InvalidModel(format!("stage {s}: {m}")))?;
        layer_maps.push(map);
    }
    let spec = StagedGrowth {
        format_version: FORMAT_VERSION,
        base_depths: cfg.depths.clone(),
        layer_maps,
        adapter: opts.adapter.clone(),
        unshared_norms: opts.unshared_norms,
        layer_scale: opts.init == InitMode::Identity,
    };
    let widths: Vec<usize> = (0..n).map(|s| cfg.stage_dim(s)).collect();
    spec.validate(&cfg.depths, &widths)
        .map_err(Error::InvalidModel)?;
    let mut fixed = fixed_stage_values(&base, &spec).map_err(Error::InvalidModel)?;
    let mut rng = RandomInit::new(opts.seed);
    let mut src = |key: &str, shape: &[usize], init: Init| match fixed.remove(key) {
        Some(v) => v,
        None => rng.tensor(key, shape, init),
    };
    let device: Device = base.ends.proj_bias.val().device();
    let grown = GrownSwin::from_base(base, &spec, &mut src, &device);
    let mut config = base_config.clone();
    if opts.no_share {
        let plain = grown.unshared(&device);
        config.arch = ImageArch::Swin(plain.config().clone());
        config.growth = None;
        return Ok((config, Network::Swin(plain)));
    }
    config.growth = Some(Growth::Stages(spec));
    Ok((config, Network::GrownSwin(grown)))
}

/// The growth spec `opts` describe for a base of `base_depth` blocks of width `width`.
pub fn plan(opts: &ExpandOptions, base_depth: usize, width: usize) -> Result<GrowthSpec> {
    let map = layer_map(&opts.map, base_depth, opts.depth).map_err(Error::InvalidModel)?;
    let spec = GrowthSpec {
        format_version: FORMAT_VERSION,
        base_depth,
        layer_map: map,
        adapter: opts.adapter.clone(),
        unshared_norms: opts.unshared_norms,
        layer_scale: opts.init == InitMode::Identity,
    };
    spec.validate(base_depth, width)
        .map_err(Error::InvalidModel)?;
    Ok(spec)
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
