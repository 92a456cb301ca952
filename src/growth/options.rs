//! What a user asks of growth (`ExpandOptions`), the plan it makes for a stack of blocks, and
//! where a grown model's new tensors come from. Every family's growth starts here.

use std::collections::HashMap;

use super::plan::{layer_map, AdapterSpec, GrowthSpec, LoraSpec, MapStrategy, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::model::weights::{Init, RandomInit, WeightSource};

/// The growth operators of the literature, each a preset over [`ExpandOptions`]; what a
/// method does not fix (the seed, per-position norms, and for `stack` and `shared` the map)
/// stays as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// ScaleNet (Hao et al., 2025): shared blocks, per-position parallel adapters.
    ScaleNet,
    /// G_stack (Du et al., 2024): the base's blocks stacked (cyclic), unshared copies.
    Stack,
    /// Shared stacking or looping (ALBERT, MobileLLM-LS): shared blocks, nothing per position.
    Shared,
    /// LLaMA-Pro (Wu et al., 2024): after each group of blocks, a copy of its last block with
    /// its output projections (`o_proj`, `down_proj`; a ViT's LayerScale) at zero, so the
    /// grown model starts as the base's function.
    LlamaPro,
    /// SOLAR depth up-scaling (Kim et al., 2023): the base without its last m blocks, then the
    /// base without its first m, unshared.
    SolarDus,
    /// Relaxed Recursive Transformers (Bae et al., 2024): shared blocks, each position's linear
    /// layers relaxed by its own LoRA (B zero, so it starts as shared looping).
    RelaxedRecursive,
}

/// LoRA's rank when `relaxed-recursive` is asked for without one.
pub const DEFAULT_LORA_RANK: usize = 8;

impl Method {
    pub const NAMES: [&'static str; 6] = [
        "scalenet",
        "stack",
        "shared",
        "llama-pro",
        "solar-dus",
        "relaxed-recursive",
    ];

    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "scalenet" => Self::ScaleNet,
            "stack" => Self::Stack,
            "shared" => Self::Shared,
            "llama-pro" => Self::LlamaPro,
            "solar-dus" => Self::SolarDus,
            "relaxed-recursive" => Self::RelaxedRecursive,
            other => {
                return Err(format!(
                    "--method '{other}': expected one of {}",
                    Self::NAMES.join(", ")
                ))
            }
        })
    }

    /// `opts` with what the method fixes; `dus_drop` is SOLAR's m, for `solar-dus` alone.
    pub fn apply(
        self,
        opts: ExpandOptions,
        dus_drop: Option<usize>,
    ) -> std::result::Result<ExpandOptions, String> {
        match (self, dus_drop) {
            (Self::SolarDus, None) => return Err("--method solar-dus needs --dus-drop m".into()),
            (Self::SolarDus, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err("--dus-drop goes with --method solar-dus".into()),
        }
        if opts.lora.is_some() && self != Self::RelaxedRecursive {
            return Err("--lora-rank goes with --method relaxed-recursive".into());
        }
        let plain = |map, init, no_share| ExpandOptions {
            map,
            adapter: None,
            init,
            no_share,
            ..opts.clone()
        };
        Ok(match self {
            Self::ScaleNet => opts.clone(),
            Self::Stack => plain(opts.map.clone(), InitMode::Paper, true),
            Self::Shared => plain(opts.map.clone(), InitMode::Paper, false),
            Self::LlamaPro => plain(MapStrategy::GroupCopies, InitMode::Identity, true),
            Self::SolarDus => {
                let drop = dus_drop.expect("checked above");
                plain(MapStrategy::DepthUpScaling { drop }, InitMode::Paper, true)
            }
            Self::RelaxedRecursive => ExpandOptions {
                lora: Some(opts.lora.clone().unwrap_or(LoraSpec {
                    rank: DEFAULT_LORA_RANK,
                    scale: 1.0,
                })),
                ..plain(opts.map.clone(), InitMode::Paper, false)
            },
        })
    }
}

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
    /// Per-position LoRA on the shared blocks' linear layers (`relaxed-recursive`).
    pub lora: Option<LoraSpec>,
    pub seed: u64,
}

/// The growth spec `opts` describe for a base of `base_depth` blocks of width `width`.
pub fn plan(opts: &ExpandOptions, base_depth: usize, width: usize) -> Result<GrowthSpec> {
    // SOLAR's depth follows from what it drops; a given --depth is checked against it.
    let depth = match (&opts.map, opts.depth) {
        (&MapStrategy::DepthUpScaling { drop }, 0) => 2 * base_depth.saturating_sub(drop),
        (_, d) => d,
    };
    let map = layer_map(&opts.map, base_depth, depth).map_err(Error::InvalidModel)?;
    let spec = GrowthSpec {
        format_version: FORMAT_VERSION,
        base_depth,
        layer_map: map,
        adapter: opts.adapter.clone(),
        unshared_norms: opts.unshared_norms,
        layer_scale: opts.init == InitMode::Identity,
        lora: opts.lora.clone(),
    };
    spec.validate(base_depth, width)
        .map_err(Error::InvalidModel)?;
    Ok(spec)
}

/// Where a grown model's new tensors come from: `fixed` values where given (norms copied from
/// the base, gates of the identity schedule), else drawn from `seed` with each tensor's init.
pub fn new_tensors(
    mut fixed: HashMap<String, Vec<f32>>,
    seed: u64,
) -> impl FnMut(&str, &[usize], Init) -> Vec<f32> {
    let mut rng = RandomInit::new(seed);
    move |key: &str, shape: &[usize], init: Init| match fixed.remove(key) {
        Some(v) => v,
        None => rng.tensor(key, shape, init),
    }
}
