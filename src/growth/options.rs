//! What a user asks of growth (`ExpandOptions`), the plan it makes for a stack of blocks, and
//! where a grown model's new tensors come from. Every family's growth starts here.

use std::collections::HashMap;

use super::plan::{layer_map, AdapterSpec, GrowthSpec, MapStrategy, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::model::weights::{Init, RandomInit, WeightSource};

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
