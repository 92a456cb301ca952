//! Expansion plans: which base block runs at each position of the grown model.

use serde::{Deserialize, Serialize};

use crate::model::arch::ImageArch;

/// How base blocks are laid out over the grown depth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapStrategy {
    /// The paper's: the whole stack, then again (position i → i mod L).
    Cyclic,
    /// Each base block repeated in place (0,0,1,1,...); extra repeats spread evenly.
    Interleave,
    /// A given map.
    Explicit(Vec<usize>),
    /// A given map per stage (a Swin), written `0,1,0,1/0,1,1/...`.
    PerStage(Vec<Vec<usize>>),
    /// LLaMA-Pro's: the base in L'−L groups of equal size, each followed by a copy of its last
    /// block (4 → 6: 0,1,1,2,3,3).
    GroupCopies,
    /// SOLAR's depth up-scaling: the base without its last `drop` blocks, then the base
    /// without its first `drop` (4 → 6 with drop 1: 0,1,2,1,2,3); the depth is 2(L − drop).
    DepthUpScaling { drop: usize },
}

impl MapStrategy {
    /// Parses `cyclic`, `interleave` or a comma-separated list such as `0,1,1,2`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "cyclic" => Ok(Self::Cyclic),
            "interleave" => Ok(Self::Interleave),
            stages if stages.contains('/') => stages
                .split('/')
                .map(|m| match Self::parse(m)? {
                    Self::Explicit(v) => Ok(v),
                    _ => Err(format!("--map '{s}': each stage's map is a list of block indices")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self::PerStage),
            list => list
                .split(',')
                .map(|t| {
                    t.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("--map '{s}': expected cyclic, interleave or a list of block indices like 0,1,1,2"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Explicit),
        }
    }
}

pub use crate::model::limits::MAX_POSITIONS;

/// Builds the layer map for growing `base_depth` blocks to `target_depth` positions.
pub fn layer_map(
    strategy: &MapStrategy,
    base_depth: usize,
    target_depth: usize,
) -> Result<Vec<usize>, String> {
    if base_depth == 0 {
        return Err("the base model has no blocks to grow".into());
    }
    if target_depth > MAX_POSITIONS {
        return Err(format!(
            "target depth {target_depth} is more than the {MAX_POSITIONS} positions scalenet grows a model to"
        ));
    }
    if let &MapStrategy::DepthUpScaling { drop } = strategy {
        let map = depth_up_scaling(base_depth, target_depth, drop)?;
        validate_map(&map, base_depth)?;
        return Ok(map);
    }
    if target_depth < base_depth {
        return Err(format!(
            "target depth {target_depth} is smaller than the base depth {base_depth}; every base block needs a position"
        ));
    }
    let map = match strategy {
        MapStrategy::Cyclic => (0..target_depth).map(|i| i % base_depth).collect(),
        MapStrategy::Interleave => {
            let (k, extra) = (target_depth / base_depth, target_depth % base_depth);
            let mut map = Vec::with_capacity(target_depth);
            for j in 0..base_depth {
                // Block j gets an extra repeat when floor(j·extra/L) steps up at j+1.
                let more = (j + 1) * extra / base_depth - j * extra / base_depth;
                map.extend(std::iter::repeat_n(j, k + more));
            }
            map
        }
        MapStrategy::Explicit(m) => {
            if m.len() != target_depth {
                return Err(format!(
                    "--map has {} entries but --depth is {target_depth}",
                    m.len()
                ));
            }
            m.clone()
        }
        MapStrategy::PerStage(_) => {
            return Err("per-stage maps (with '/') are for Swins; this model has one stack".into())
        }
        MapStrategy::GroupCopies => group_copies(base_depth, target_depth)?,
        MapStrategy::DepthUpScaling { .. } => unreachable!("handled above"),
    };
    validate_map(&map, base_depth)?;
    Ok(map)
}

/// LLaMA-Pro's map: after each of L'−L equal groups, a copy of the group's last block.
fn group_copies(base: usize, target: usize) -> Result<Vec<usize>, String> {
    let extra = target - base;
    if extra == 0 || !base.is_multiple_of(extra) {
        return Err(format!(
            "llama-pro inserts one copy after each of L'-L groups of equal size: L' - L = {extra} must divide the base depth {base}"
        ));
    }
    let group = base / extra;
    Ok((0..extra)
        .flat_map(|q| (q * group..(q + 1) * group).chain([(q + 1) * group - 1]))
        .collect())
}

/// SOLAR's map: 0..L−m, then m..L.
fn depth_up_scaling(base: usize, target: usize, drop: usize) -> Result<Vec<usize>, String> {
    if drop == 0 || 2 * drop > base {
        return Err(format!(
            "--dus-drop {drop}: each copy of the {base} blocks loses {drop}, so it must be between 1 and {} for every base block to stay in the grown model",
            base / 2
        ));
    }
    let depth = 2 * (base - drop);
    if target != depth {
        return Err(format!(
            "solar-dus with --dus-drop {drop} grows {base} blocks to {depth}, not --depth {target}"
        ));
    }
    Ok((0..base - drop).chain(drop..base).collect())
}

/// The positions a growth added: those whose block already ran at an earlier position (with
/// `--init identity` they start at zero; LLaMA-Pro trains them alone).
pub fn new_layers(map: &[usize]) -> Vec<usize> {
    (0..map.len())
        .filter(|&i| map[..i].contains(&map[i]))
        .collect()
}

/// The key under which a plain model written from a growth names its added blocks.
pub const NEW_LAYERS_KEY: &str = "scalenet_new_layers";

/// The added blocks a model's `config.json` object names (none when it names none).
pub fn recorded_new_layers(config: &serde_json::Map<String, serde_json::Value>) -> Vec<usize> {
    config
        .get(NEW_LAYERS_KEY)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as usize)
                .collect()
        })
        .unwrap_or_default()
}

/// Every entry is a base block index, and every base block appears at least once.
pub fn validate_map(map: &[usize], base_depth: usize) -> Result<(), String> {
    if let Some((i, &j)) = map.iter().enumerate().find(|(_, &j)| j >= base_depth) {
        return Err(format!(
            "layer_map[{i}] = {j} is out of range: the base has blocks 0..{}",
            base_depth.saturating_sub(1)
        ));
    }
    let unused: Vec<String> = (0..base_depth)
        .filter(|j| !map.contains(j))
        .map(|j| j.to_string())
        .collect();
    if !unused.is_empty() {
        return Err(format!(
            "layer_map never uses base block(s) {}; every base block must appear at least once",
            unused.join(", ")
        ));
    }
    Ok(())
}

/// Gate values for `--init identity`: 1 at the first position of each base block, 0 after,
/// so the grown model computes the base model's function at step 0.
pub fn identity_gates(map: &[usize]) -> Vec<f32> {
    let mut seen = std::collections::HashSet::new();
    map.iter()
        .map(|j| if seen.insert(*j) { 1.0 } else { 0.0 })
        .collect()
}

/// Where adapters sit beside a block's branches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    Attn,
    Mlp,
}

/// The adapter's nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// Exact (erf) GELU.
    Gelu,
}

/// Adapter hyper-parameters, as stored in `config.json` under `scalenet.adapter`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSpec {
    pub placement: Vec<Placement>,
    pub rank: usize,
    pub scale: f64,
    pub activation: Activation,
}

impl Default for AdapterSpec {
    fn default() -> Self {
        Self {
            placement: vec![Placement::Attn, Placement::Mlp],
            rank: 32,
            scale: 0.1,
            activation: Activation::Relu,
        }
    }
}

impl AdapterSpec {
    pub fn has(&self, p: Placement) -> bool {
        self.placement.contains(&p)
    }
}

/// Relaxed Recursive Transformers' relaxation (Bae et al., 2024): every linear layer of the
/// block a position runs gets the position's own low-rank update, `W + scale · B A` (A
/// `[rank, in]` drawn as PEFT draws it, B `[out, rank]` zero, so a position starts as its
/// shared block).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    pub rank: usize,
    pub scale: f64,
}

/// The `scalenet` section of a grown model's `config.json` (format version 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowthSpec {
    pub format_version: u32,
    pub base_depth: usize,
    pub layer_map: Vec<usize>,
    pub adapter: Option<AdapterSpec>,
    pub unshared_norms: bool,
    pub layer_scale: bool,
    /// Per-position LoRA on the shared linear layers; absent in files written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
}

pub const FORMAT_VERSION: u32 = 1;

impl GrowthSpec {
    pub fn depth(&self) -> usize {
        self.layer_map.len()
    }

    /// Internal consistency, and fit with the base: `model_depth` and `width` are the depth and
    /// `embed_dim` in `model_args`.
    pub fn validate(&self, model_depth: usize, width: usize) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "scalenet.format_version {} is not supported (this scalenet reads version {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.base_depth != model_depth {
            return Err(format!(
                "scalenet.base_depth {} contradicts model_args depth {model_depth}",
                self.base_depth
            ));
        }
        if self.layer_map.is_empty() {
            return Err("scalenet.layer_map is empty".into());
        }
        if self.layer_map.len() > MAX_POSITIONS {
            return Err(format!(
                "scalenet.layer_map has {} positions, more than the {MAX_POSITIONS} scalenet accepts",
                self.layer_map.len()
            ));
        }
        validate_map(&self.layer_map, self.base_depth).map_err(|m| format!("scalenet.{m}"))?;
        if let Some(a) = &self.adapter {
            if a.placement.is_empty() {
                return Err(
                    "scalenet.adapter.placement is empty; use \"adapter\": null for no adapters"
                        .into(),
                );
            }
            if a.rank == 0 {
                return Err("scalenet.adapter.rank must be positive".into());
            }
            if a.rank > width {
                return Err(format!(
                    "scalenet.adapter.rank {} is larger than the width {width}: an adapter's down-projection must narrow",
                    a.rank
                ));
            }
            if !a.scale.is_finite() {
                return Err(format!("scalenet.adapter.scale {} is not finite", a.scale));
            }
        }
        if let Some(l) = &self.lora {
            if l.rank == 0 || l.rank > width {
                return Err(format!(
                    "scalenet.lora.rank {} must be 1 to the width {width}",
                    l.rank
                ));
            }
            if !l.scale.is_finite() {
                return Err(format!("scalenet.lora.scale {} is not finite", l.scale));
            }
        }
        Ok(())
    }
}

/// The `scalenet` section of a grown Swin: the same switches as [`GrowthSpec`], with one
/// base depth and one layer map per stage (stage s's positions run stage s's blocks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedGrowth {
    pub format_version: u32,
    pub base_depths: Vec<usize>,
    pub layer_maps: Vec<Vec<usize>>,
    pub adapter: Option<AdapterSpec>,
    pub unshared_norms: bool,
    pub layer_scale: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
}

impl StagedGrowth {
    /// Stage `s` as a single-stack spec.
    pub fn stage(&self, s: usize) -> GrowthSpec {
        GrowthSpec {
            format_version: self.format_version,
            base_depth: self.base_depths[s],
            layer_map: self.layer_maps[s].clone(),
            adapter: self.adapter.clone(),
            unshared_norms: self.unshared_norms,
            layer_scale: self.layer_scale,
            lora: self.lora.clone(),
        }
    }

    /// Grown depth of each stage.
    pub fn depths(&self) -> Vec<usize> {
        self.layer_maps.iter().map(Vec::len).collect()
    }

    /// Fit with the base: `depths` from `model_args`, `widths` each stage's width.
    pub fn validate(&self, depths: &[usize], widths: &[usize]) -> Result<(), String> {
        if self.base_depths != depths {
            return Err(format!(
                "scalenet.base_depths {:?} contradicts model_args depths {depths:?}",
                self.base_depths
            ));
        }
        if self.layer_maps.len() != depths.len() {
            return Err(format!(
                "scalenet.layer_maps has {} maps for {} stages",
                self.layer_maps.len(),
                depths.len()
            ));
        }
        for s in 0..depths.len() {
            self.stage(s)
                .validate(depths[s], widths[s])
                .map_err(|m| format!("stage {s}: {m}"))?;
        }
        Ok(())
    }
}

/// What a grown image model's `scalenet` section holds: one map for a ViT, one per stage for
/// a Swin.
#[derive(Clone, Debug, PartialEq)]
pub enum Growth {
    Stack(GrowthSpec),
    Stages(StagedGrowth),
}

impl Growth {
    /// Reads the section for a base of architecture `arch`, checking it fits.
    pub fn parse(v: &serde_json::Value, arch: &ImageArch) -> Result<Self, String> {
        let bad = |e: serde_json::Error| format!("'scalenet' section: {e}");
        match arch {
            ImageArch::Vit(c) => {
                let spec: GrowthSpec = serde_json::from_value(v.clone()).map_err(bad)?;
                spec.validate(c.depth, c.embed_dim)?;
                Ok(Growth::Stack(spec))
            }
            ImageArch::Swin(c) => {
                let spec: StagedGrowth = serde_json::from_value(v.clone()).map_err(bad)?;
                let widths: Vec<usize> = (0..c.num_stages()).map(|s| c.stage_dim(s)).collect();
                spec.validate(&c.depths, &widths)?;
                Ok(Growth::Stages(spec))
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Growth::Stack(s) => serde_json::to_value(s),
            Growth::Stages(s) => serde_json::to_value(s),
        }
        .expect("growth specs serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyclic_and_interleave() {
        let c = layer_map(&MapStrategy::Cyclic, 12, 18).unwrap();
        assert_eq!(c, (0..12).chain(0..6).collect::<Vec<_>>());
        assert_eq!(
            layer_map(&MapStrategy::Interleave, 3, 6).unwrap(),
            vec![0, 0, 1, 1, 2, 2]
        );
        let i = layer_map(&MapStrategy::Interleave, 4, 6).unwrap();
        assert_eq!(i, vec![0, 1, 1, 2, 3, 3]);
        let i = layer_map(&MapStrategy::Interleave, 12, 18).unwrap();
        assert_eq!(i.len(), 18);
        assert!(i.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            layer_map(&MapStrategy::Interleave, 5, 5).unwrap(),
            vec![0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn violations_are_reported() {
        assert!(layer_map(&MapStrategy::Explicit(vec![0, 0, 1]), 3, 3)
            .unwrap_err()
            .contains("block(s) 2"));
        assert!(layer_map(&MapStrategy::Explicit(vec![0, 1, 3]), 3, 3)
            .unwrap_err()
            .contains("out of range"));
        assert!(layer_map(&MapStrategy::Cyclic, 4, 3)
            .unwrap_err()
            .contains("smaller"));
        assert!(layer_map(&MapStrategy::Explicit(vec![0, 1]), 2, 3)
            .unwrap_err()
            .contains("entries"));
        assert!(MapStrategy::parse("0,x").is_err());
    }

    #[test]
    fn identity_gates_open_first_occurrence() {
        assert_eq!(identity_gates(&[0, 1, 0, 1]), vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(identity_gates(&[0, 0, 1, 1]), vec![1.0, 0.0, 1.0, 0.0]);
    }
}
