//! The grown Swin: each stage grows on its own. Stage s keeps its base blocks once and has
//! `layer_maps[s].len()` positions; position i of stage s runs base block
//! `layer_maps[s][i]` of that stage, with the stage's adapters, norms and gates as for a ViT
//! (see `growth::position`).
//!
//! Windowing follows the position, not the block it shares: position i uses shifted windows
//! when i is odd, as block i of a timm Swin of the grown depth would. The grown model is
//! therefore a standard Swin (regular and shifted windows alternate), and `--no-share` writes
//! a plain timm Swin that computes the same function. For `--init identity` the gate that
//! opens for base block j sits at a position of j's parity, so the grown model starts as the
//! base's function exactly ([`identity_gates_by_parity`]).

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::options::{new_tensors, ExpandOptions, InitMode};
use super::plan::{layer_map, MapStrategy, StagedGrowth, FORMAT_VERSION};
use super::position::{fixed_position_values, new_positions, GrownCounts, Position};
use crate::error::Error;
use crate::model::drop_path::DropPath;
use crate::model::layers::LayerNorm;
use crate::model::swin::block::{BlockGeometry, SwinBlock};
use crate::model::swin::config::SwinConfig;
use crate::model::swin::{self, SwinTransformer};
use crate::model::swin::{export_stage_blocks, new_stage_blocks, SwinEnds};
use crate::model::weights::{Init, TensorSink, WeightSource};

/// Where stage s's positions live in checkpoints.
pub fn stage_prefix(s: usize) -> String {
    format!("scalenet.stages.{s}.layers")
}

#[derive(Module, Debug)]
pub struct GrownSwin {
    pub ends: SwinEnds,
    /// Stage s's base blocks, each stored once (`layers.{s}.blocks.{j}`).
    pub stages: Vec<Vec<SwinBlock>>,
    /// Stage s's positions (`scalenet.stages.{s}.layers.{i}`).
    pub positions: Vec<Vec<Position<LayerNorm>>>,
    #[module(skip)]
    pub spec: StagedGrowth,
    /// Per stage, the windowing of even and odd positions.
    #[module(skip)]
    pub windows: Vec<[BlockGeometry; 2]>,
}

fn stage_windows(cfg: &SwinConfig) -> Vec<[BlockGeometry; 2]> {
    cfg.stages()
        .iter()
        .map(|g| [BlockGeometry::new(g, false), BlockGeometry::new(g, true)])
        .collect()
}

fn stage_positions(
    src: &mut dyn WeightSource,
    cfg: &SwinConfig,
    spec: &StagedGrowth,
    stages: &[Vec<SwinBlock>],
    device: &Device,
) -> Vec<Vec<Position<LayerNorm>>> {
    (0..stages.len())
        .map(|s| {
            let prefix = stage_prefix(s);
            let dim = cfg.stage_dim(s);
            new_positions(src, &prefix, &spec.stage(s), dim, &stages[s], device)
        })
        .collect()
}

impl GrownSwin {
    /// Builds the model from `src` (a grown checkpoint, or an init). `spec` must be valid.
    pub fn new(
        cfg: &SwinConfig,
        spec: &StagedGrowth,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Self {
        let ends = SwinEnds::new(src, cfg, device);
        let stages = new_stage_blocks(src, cfg, device);
        let positions = stage_positions(src, cfg, spec, &stages, device);
        Self {
            ends,
            stages,
            positions,
            spec: spec.clone(),
            windows: stage_windows(cfg),
        }
    }

    /// Grows a base model: its tensors move in unchanged; positions come from `src`.
    pub fn from_base(
        base: SwinTransformer,
        spec: &StagedGrowth,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Self {
        let cfg = base.ends.config.clone();
        let positions = stage_positions(src, &cfg, spec, &base.stages, device);
        Self {
            ends: base.ends,
            stages: base.stages,
            positions,
            spec: spec.clone(),
            windows: stage_windows(&cfg),
        }
    }

    /// Grows `base` stage by stage to `opts.depths`, each stage with its own layer map from
    /// `opts.map`: its tensors move in unchanged, positions start as for a ViT.
    pub fn grow(base: SwinTransformer, opts: &ExpandOptions) -> crate::error::Result<Self> {
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
                "a Swin takes one map per stage, separated by '/': e.g. --map 0,1,0,1/0,1/..."
                    .into(),
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
            lora: opts.lora.clone(),
        };
        let widths: Vec<usize> = (0..n).map(|s| cfg.stage_dim(s)).collect();
        spec.validate(&cfg.depths, &widths)
            .map_err(Error::InvalidModel)?;
        let fixed = fixed_stage_values(&base, &spec).map_err(Error::InvalidModel)?;
        let mut src = new_tensors(fixed, opts.seed);
        let device = base.ends.proj_bias.val().device();
        Ok(Self::from_base(base, &spec, &mut src, &device))
    }

    pub fn config(&self) -> &SwinConfig {
        &self.ends.config
    }

    // The same thin forwards as `SwinTransformer`'s; the forward itself is `swin::features`.
    /// `[batch, chans, h, w]` → last-stage tokens before the final norm; stochastic depth by
    /// position in the whole network when `dp` is given.
    pub fn forward_features_train(
        &self,
        x: Tensor<4>,
        dp: &mut Option<&mut DropPath>,
    ) -> Tensor<3> {
        let depths: Vec<usize> = self.positions.iter().map(Vec::len).collect();
        swin::features(&self.ends, &depths, x, dp, &|s, i, x, position, dp| {
            let block = &self.stages[s][self.spec.layer_maps[s][i]];
            let windows = &self.windows[s][i % 2];
            self.positions[s][i].forward(block, x, windows, position, dp)
        })
    }

    /// `[batch, chans, h, w]` → `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.ends
            .head(self.forward_features_train(x, &mut None), false)
    }

    /// Each stage's output as `[batch, c, h, w]`, as `SwinTransformer::forward_stages`.
    pub fn forward_stages(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> Vec<Tensor<4>> {
        let depths: Vec<usize> = self.positions.iter().map(Vec::len).collect();
        let outs = swin::stage_outputs(&self.ends, &depths, x, dp, &|s, i, x, position, dp| {
            let block = &self.stages[s][self.spec.layer_maps[s][i]];
            let windows = &self.windows[s][i % 2];
            self.positions[s][i].forward(block, x, windows, position, dp)
        });
        swin::stage_maps(self.config(), outs)
    }

    /// Positions the input passes through, all stages.
    pub fn depth(&self) -> usize {
        self.positions.iter().map(Vec::len).sum()
    }

    pub fn export(&self) -> TensorSink {
        let mut out = TensorSink::default();
        self.ends.export(&mut out);
        export_stage_blocks(&self.stages, &mut out);
        for (s, positions) in self.positions.iter().enumerate() {
            for (i, p) in positions.iter().enumerate() {
                p.export(&format!("{}.{i}", stage_prefix(s)), &mut out);
            }
        }
        out
    }

    /// A plain timm Swin with the grown depths whose blocks are independent copies (the
    /// stacking baseline). Position norms replace the copy's norms; gates are folded into the
    /// rows of `attn.proj` and `mlp.fc2` (timm's Swin has no LayerScale). Adapters have no
    /// timm equivalent and are left out, which is exact while their up-projections are zero,
    /// as after `expand`.
    pub fn unshared(&self, device: &Device) -> SwinTransformer {
        let tensors: HashMap<String, Vec<f32>> = self.export().into_map();
        let mut config = self.config().clone();
        config.depths = self.spec.depths();
        let maps = &self.spec.layer_maps;
        let mut src = |key: &str, _: &[usize], _: Init| -> Vec<f32> {
            let parsed = key.strip_prefix("layers.").and_then(|r| {
                let (s, r) = r.split_once(".blocks.")?;
                let (i, tail) = r.split_once('.')?;
                Some((s.parse::<usize>().ok()?, i.parse::<usize>().ok()?, tail))
            });
            let Some((s, i, tail)) = parsed else {
                return tensors[key].clone();
            };
            let own = tensors.get(&format!("{}.{i}.{tail}", stage_prefix(s)));
            let base = &tensors[&format!("layers.{s}.blocks.{}.{tail}", maps[s][i])];
            let mut v = own.unwrap_or(base).clone();
            let gate = match tail {
                "attn.proj.weight" | "attn.proj.bias" => "ls1",
                "mlp.fc2.weight" | "mlp.fc2.bias" => "ls2",
                _ => return v,
            };
            if let Some(g) = tensors.get(&format!("{}.{i}.{gate}.gamma", stage_prefix(s))) {
                // torch layout: row r of a weight (and entry r of a bias) is output channel r.
                let cols = v.len() / g.len();
                for (r, row) in v.chunks_mut(cols).enumerate() {
                    row.iter_mut().for_each(|x| *x *= g[r]);
                }
            }
            v
        };
        SwinTransformer::new(&config, &mut src, device)
    }

    /// Parameter counts by group (the patch merges count with the embeddings).
    pub fn param_counts(&self) -> GrownCounts {
        let [embed, merges, norm, head] = self.ends.num_params();
        let stage_block = |s: usize| self.stages[s].first().map_or(0, SwinBlock::num_params);
        let all = || self.positions.iter().flatten();
        GrownCounts {
            embeddings: embed + merges,
            shared_blocks: self
                .stages
                .iter()
                .flatten()
                .map(SwinBlock::num_params)
                .sum(),
            adapters: all().map(|p| p.adapter_params()).sum(),
            position_norms: all().map(|p| p.norm_params()).sum(),
            gates: all().map(|p| p.gate_params()).sum(),
            norm,
            head,
            unshared_blocks: (0..self.stages.len())
                .map(|s| stage_block(s) * self.positions[s].len())
                .sum(),
        }
    }
}

/// Gates for `--init identity` on a Swin stage: for base blocks 0, 1, … in turn, the first
/// later position of the block's own parity (so it runs with the windows it was trained
/// with) opens with 1; all others start at 0. Maps where some block never sits at such a
/// position, in order, are refused.
pub fn identity_gates_by_parity(map: &[usize]) -> Result<Vec<f32>, String> {
    let base_depth = map.iter().max().map_or(0, |m| m + 1);
    let mut gates = vec![0.0; map.len()];
    let mut next = 0;
    for j in 0..base_depth {
        let Some(i) = (next..map.len()).find(|&i| map[i] == j && i % 2 == j % 2) else {
            return Err(format!(
                "--init identity needs base block {j} at a position of its parity ({}) after position {}, so that it runs with the windows it was trained with; map {map:?} has none (use cyclic or interleave)",
                if j % 2 == 0 { "even" } else { "odd" },
                next as i64 - 1,
            ));
        };
        gates[i] = 1.0;
        next = i + 1;
    }
    Ok(gates)
}

/// Norms and gates of every stage's positions that do not start random (see
/// `grown::fixed_position_values`).
pub fn fixed_stage_values(
    base: &SwinTransformer,
    spec: &StagedGrowth,
) -> Result<HashMap<String, Vec<f32>>, String> {
    let mut fixed = HashMap::new();
    for (s, blocks) in base.stages.iter().enumerate() {
        let stage = spec.stage(s);
        let gates = if spec.layer_scale {
            identity_gates_by_parity(&stage.layer_map).map_err(|m| format!("stage {s}: {m}"))?
        } else {
            vec![0.0; stage.depth()]
        };
        let dim = base.config().stage_dim(s);
        fixed.extend(fixed_position_values(
            blocks,
            &stage_prefix(s),
            &stage,
            dim,
            &gates,
        ));
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::identity_gates_by_parity;

    #[test]
    fn identity_gates_respect_parity() {
        // cyclic: the base's own positions
        assert_eq!(
            identity_gates_by_parity(&[0, 1, 0, 1]).unwrap(),
            vec![1.0, 1.0, 0.0, 0.0]
        );
        // interleave: block 1 opens at position 3, its parity, not at 2
        assert_eq!(
            identity_gates_by_parity(&[0, 0, 1, 1]).unwrap(),
            vec![1.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            identity_gates_by_parity(&[0, 1, 2, 0, 1, 2]).unwrap(),
            vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
        );
        let e = identity_gates_by_parity(&[1, 0]).unwrap_err();
        assert!(e.contains("block 0"), "{e}");
    }
}
