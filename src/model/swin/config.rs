//! timm's `SwinTransformer` keyword arguments (`model_args`) and its named presets
//! (`swin_tiny_patch4_window7_224`, ...), in timm's vocabulary.

use serde_json::{json, Map, Value};

use crate::model::image::{only_default, GlobalPool, PretrainedCfg};
use crate::model::limits::MAX_PARAMS;

// The timm arguments both image families take keep timm's flat names in each config (as
// `VitConfig` does), so that `model_args` read without translation.
/// The architecture of a Swin Transformer, as timm's `SwinTransformer` takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct SwinConfig {
    /// Input height and width in pixels; the input must have exactly this size, as timm's
    /// `strict_img_size` demands.
    pub img_size: [usize; 2],
    pub patch_size: usize,
    pub in_chans: usize,
    /// Classifier outputs; 0 means no `head.fc`.
    pub num_classes: usize,
    /// `avg`, `max` or `avgmax` over the last stage's tokens.
    pub global_pool: GlobalPool,
    /// Width of stage 0; stage s is `embed_dim · 2^s` wide.
    pub embed_dim: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    pub num_heads: Vec<usize>,
    /// The (h, w) window each stage asks for, before timm's rule shrinks it to the stage's
    /// resolution.
    pub window_size: Vec<[usize; 2]>,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
}

/// timm's `nn.LayerNorm` default: Swin uses plain `nn.LayerNorm`, not the ViT's eps 1e-6.
pub const SWIN_LN_EPS: f64 = 1e-5;

/// How one stage runs, after timm's window rule is applied to its resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageGeometry {
    /// Token width of the stage.
    pub dim: usize,
    pub heads: usize,
    /// Token grid (h, w) inside the stage (after its patch merging).
    pub resolution: [usize; 2],
    /// The window actually used: the asked window, or the resolution where that is not larger.
    pub window: [usize; 2],
    /// The shift of odd blocks: half the window, or 0 along a side that fits in one window.
    pub shift: [usize; 2],
}

impl SwinConfig {
    /// timm's `SwinTransformer` defaults (Swin-T at 224 px).
    pub fn tiny_defaults() -> Self {
        Self {
            img_size: [224, 224],
            patch_size: 4,
            in_chans: 3,
            num_classes: 1000,
            global_pool: GlobalPool::Avg,
            embed_dim: 96,
            depths: vec![2, 2, 6, 2],
            num_heads: vec![3, 6, 12, 24],
            window_size: vec![[7, 7]; 4],
            mlp_ratio: 4.0,
            qkv_bias: true,
        }
    }

    pub fn num_stages(&self) -> usize {
        self.depths.len()
    }

    pub fn grid(&self) -> [usize; 2] {
        [
            self.img_size[0] / self.patch_size.max(1),
            self.img_size[1] / self.patch_size.max(1),
        ]
    }

    pub fn stage_dim(&self, s: usize) -> usize {
        self.embed_dim << s
    }

    /// Width of the final features (the last stage's).
    pub fn num_features(&self) -> usize {
        self.stage_dim(self.num_stages().saturating_sub(1))
    }

    pub fn mlp_hidden(&self, s: usize) -> usize {
        (self.stage_dim(s) as f64 * self.mlp_ratio) as usize
    }

    /// Each stage's resolution, window and shift, by timm's rules: stage s ≥ 1 halves the grid
    /// (rounding up, the merge pads odd sides), and a side whose resolution is not larger than
    /// the window takes the resolution as its window and no shift.
    pub fn stages(&self) -> Vec<StageGeometry> {
        let mut res = self.grid();
        (0..self.num_stages())
            .map(|s| {
                if s > 0 {
                    res = res.map(|r| r.div_ceil(2));
                }
                let asked = self.window_size[s];
                let window = [0, 1].map(|i| res[i].min(asked[i]));
                let shift = [0, 1].map(|i| if res[i] <= window[i] { 0 } else { asked[i] / 2 });
                StageGeometry {
                    dim: self.stage_dim(s),
                    heads: self.num_heads[s],
                    resolution: res,
                    window,
                    shift,
                }
            })
            .collect()
    }

    /// A lower bound on the parameter count, computed without overflow: checked before
    /// anything is allocated.
    pub fn min_params(&self) -> u128 {
        let mut n = (self.in_chans as u128)
            .saturating_mul((self.patch_size as u128).pow(2))
            .saturating_mul(self.embed_dim as u128);
        for (s, &depth) in self.depths.iter().enumerate().take(40) {
            let d = (self.embed_dim as u128).saturating_mul(1 << s);
            let hidden = (d as f64 * self.mlp_ratio).min(1e30) as u128;
            let block =
                d.saturating_mul(d.saturating_mul(4).saturating_add(hidden.saturating_mul(2)));
            n = n.saturating_add((depth as u128).saturating_mul(block));
        }
        let feats = (self.embed_dim as u128).saturating_mul(1 << self.num_stages().min(40));
        n.saturating_add((self.num_classes as u128).saturating_mul(feats))
    }

    /// Checks what timm asserts, and what scalenet needs, with messages a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.depths.is_empty() {
            return Err("depths is empty: a Swin needs at least one stage".into());
        }
        if self.depths.len() > 8 {
            return Err(format!(
                "depths has {} stages; scalenet builds Swins of at most 8 (each stage doubles the width)",
                self.depths.len()
            ));
        }
        if self.num_heads.len() != self.depths.len() {
            return Err(format!(
                "depths {:?} and num_heads {:?} have different lengths: every stage needs a head count",
                self.depths, self.num_heads
            ));
        }
        if self.window_size.len() != self.depths.len() {
            return Err(format!(
                "window_size gives {} stage windows for {} stages",
                self.window_size.len(),
                self.depths.len()
            ));
        }
        let n = self.min_params();
        if n > MAX_PARAMS {
            return Err(format!(
                "these sizes (depths {:?}, embed_dim {}, num_classes {}) imply at least {n} parameters, more than the {MAX_PARAMS} scalenet accepts",
                self.depths, self.embed_dim, self.num_classes
            ));
        }
        for (name, v) in [
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("embed_dim", self.embed_dim),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if let Some(s) = self.depths.iter().position(|&d| d == 0) {
            return Err(format!("depths[{s}] is 0: every stage needs a block"));
        }
        for (s, &h) in self.num_heads.iter().enumerate() {
            let d = self.stage_dim(s);
            if h == 0 || !d.is_multiple_of(h) {
                return Err(format!(
                    "stage {s} is {d} wide (embed_dim {} · 2^{s}), which num_heads[{s}] = {h} does not divide",
                    self.embed_dim
                ));
            }
        }
        if let Some(s) = self.window_size.iter().position(|w| w[0] == 0 || w[1] == 0) {
            return Err(format!("window_size of stage {s} is 0"));
        }
        if self.img_size[0] < self.patch_size || self.img_size[1] < self.patch_size {
            return Err(format!(
                "img_size {:?} is smaller than patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) || self.mlp_hidden(0) == 0 {
            return Err(format!("mlp_ratio {} gives no MLP width", self.mlp_ratio));
        }
        if self.global_pool == GlobalPool::Token {
            return Err(
                "global_pool 'token': a Swin has no class token (use avg, max or avgmax)".into(),
            );
        }
        Ok(())
    }

    /// Applies timm `model_args` (a JSON object) on top of this config.
    pub fn apply_model_args(&mut self, args: &Map<String, Value>) -> Result<(), String> {
        // The window is per stage, so it is resolved once the stage count is known.
        let mut window = None;
        for (key, v) in args {
            if key == "window_size" {
                window = Some(v);
                continue;
            }
            self.apply_arg(key, v)?;
        }
        if let Some(v) = window {
            self.window_size = parse_window(v, self.depths.len())?;
        } else if self.window_size.len() != self.depths.len() {
            let w = self.window_size.first().copied().unwrap_or([7, 7]);
            self.window_size = vec![w; self.depths.len()];
        }
        Ok(())
    }

    fn apply_arg(&mut self, key: &str, v: &Value) -> Result<(), String> {
        let bad = |what: &str| format!("model_args.{key} = {v}: expected {what}");
        let uint = |v: &Value| {
            v.as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad("a non-negative integer"))
        };
        let list = || match v {
            Value::Array(a) => a.iter().map(uint).collect::<Result<Vec<_>, _>>(),
            _ => Err(bad("a list of integers, one per stage")),
        };
        match key {
            "img_size" => self.img_size = pair(v).ok_or_else(|| bad("an integer or [h, w]"))?,
            "patch_size" => {
                let [h, w] = pair(v).ok_or_else(|| bad("an integer"))?;
                if h != w {
                    return Err(bad("a square patch (one integer)"));
                }
                self.patch_size = h;
            }
            "in_chans" => self.in_chans = uint(v)?,
            "num_classes" => self.num_classes = uint(v)?,
            "embed_dim" => self.embed_dim = uint(v)?,
            "depths" => self.depths = list()?,
            "num_heads" => self.num_heads = list()?,
            "mlp_ratio" => self.mlp_ratio = v.as_f64().ok_or_else(|| bad("a number"))?,
            "qkv_bias" => self.qkv_bias = v.as_bool().ok_or_else(|| bad("true or false"))?,
            "global_pool" => {
                let s = v.as_str().ok_or_else(|| bad("a string"))?;
                self.global_pool = GlobalPool::parse(s)?;
            }
            // Training-time only: they do not change the function at inference.
            "drop_rate" | "proj_drop_rate" | "attn_drop_rate" | "drop_path_rate"
            | "weight_init" | "pretrained_strict" => {}
            _ => {
                let is_default = match key {
                    "always_partition" | "dynamic_img_size" => v == &Value::Bool(false),
                    "strict_img_size" => v == &Value::Bool(true),
                    "head_dim" => v.is_null(),
                    "norm_layer" => matches!(v.as_str(), Some("layernorm")),
                    _ => false,
                };
                only_default(key, v, is_default, "Swin")?
            }
        }
        Ok(())
    }

    /// `model_args` as timm's `SwinTransformer` accepts them, for writing `config.json`.
    pub fn to_model_args(&self) -> Map<String, Value> {
        let pair_json = |p: [usize; 2]| if p[0] == p[1] { json!(p[0]) } else { json!(p) };
        let window = if self.window_size.windows(2).all(|w| w[0] == w[1]) {
            pair_json(self.window_size[0])
        } else {
            json!(self.window_size)
        };
        let mut m = Map::new();
        m.insert("img_size".into(), pair_json(self.img_size));
        m.insert("patch_size".into(), json!(self.patch_size));
        m.insert("in_chans".into(), json!(self.in_chans));
        m.insert("num_classes".into(), json!(self.num_classes));
        m.insert("global_pool".into(), json!(self.global_pool.as_str()));
        m.insert("embed_dim".into(), json!(self.embed_dim));
        m.insert("depths".into(), json!(self.depths));
        m.insert("num_heads".into(), json!(self.num_heads));
        m.insert("window_size".into(), window);
        m.insert("mlp_ratio".into(), json!(self.mlp_ratio));
        m.insert("qkv_bias".into(), json!(self.qkv_bias));
        m
    }
}

/// An integer `n` as `[n, n]`, or `[h, w]`.
fn pair(v: &Value) -> Option<[usize; 2]> {
    match v {
        Value::Number(n) => n.as_u64().map(|s| [s as usize; 2]),
        Value::Array(a) if a.len() == 2 => Some([a[0].as_u64()? as usize, a[1].as_u64()? as usize]),
        _ => None,
    }
}

/// timm's `resolve_stage_window_sizes`: an int or (h, w) for all stages, or one per stage (a
/// list of two plain ints is always one (h, w)).
fn parse_window(v: &Value, stages: usize) -> Result<Vec<[usize; 2]>, String> {
    let bad =
        || format!("model_args.window_size = {v}: expected an integer, [h, w], or one per stage");
    if let Some(p) = pair(v) {
        return Ok(vec![p; stages]);
    }
    let Value::Array(items) = v else {
        return Err(bad());
    };
    let per_stage = items
        .iter()
        .map(pair)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(bad)?;
    if per_stage.len() != stages {
        return Err(format!(
            "model_args.window_size gives {} stage windows for {stages} stages",
            per_stage.len()
        ));
    }
    Ok(per_stage)
}

/// (name, embed_dim, depths, heads, window, img) of one preset.
type PresetRow = (&'static str, usize, [usize; 4], [usize; 4], usize, usize);

/// Every Swin preset scalenet knows.
#[rustfmt::skip]
const PRESETS: &[PresetRow] = &[
    ("swin_tiny_patch4_window7_224", 96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 224),
    ("swin_small_patch4_window7_224", 96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 224),
    ("swin_base_patch4_window7_224", 128, [2, 2, 18, 2], [4, 8, 16, 32], 7, 224),
    ("swin_large_patch4_window7_224", 192, [2, 2, 18, 2], [6, 12, 24, 48], 7, 224),
    ("swin_base_patch4_window12_384", 128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384),
];

pub fn preset_names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|p| p.0)
}

/// Looks up a timm Swin name (a pretrained tag such as `.ms_in1k` is ignored): its config and
/// pretrained cfg.
pub fn preset(name: &str) -> Option<(&'static str, SwinConfig, PretrainedCfg)> {
    let base = name.split('.').next().unwrap_or(name);
    let &(name, dim, depths, heads, window, img) = PRESETS.iter().find(|p| p.0 == base)?;
    let config = SwinConfig {
        img_size: [img, img],
        embed_dim: dim,
        depths: depths.to_vec(),
        num_heads: heads.to_vec(),
        window_size: vec![[window; 2]; 4],
        ..SwinConfig::tiny_defaults()
    };
    let mut pcfg = PretrainedCfg::imagenet(if img == 224 { 0.9 } else { 1.0 }, img);
    pcfg.0.insert("classifier".into(), json!("head.fc"));
    Some((name, config, pcfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for name in preset_names() {
            let (_, c, _) = preset(name).unwrap();
            c.validate().unwrap();
        }
    }

    /// timm's rule: a stage whose resolution is not larger than the window takes the
    /// resolution as its window and does not shift.
    #[test]
    fn window_shrinks_to_small_stages() {
        let (_, c, _) = preset("swin_tiny_patch4_window7_224").unwrap();
        let g = c.stages();
        let res: Vec<_> = g.iter().map(|s| s.resolution).collect();
        assert_eq!(res, vec![[56, 56], [28, 28], [14, 14], [7, 7]]);
        assert_eq!(g[2].shift, [3, 3]);
        assert_eq!((g[3].window, g[3].shift), ([7, 7], [0, 0]));
        let mut c = c;
        c.img_size = [28, 28];
        let g = c.stages();
        assert_eq!(g[1].resolution, [4, 4]);
        assert_eq!((g[1].window, g[1].shift), ([4, 4], [0, 0]));
    }

    #[test]
    fn bad_args_are_named() {
        let mut c = SwinConfig::tiny_defaults();
        let args = json!({"depths": [2, 2], "num_heads": [3, 6, 12]});
        c.apply_model_args(args.as_object().unwrap()).unwrap();
        assert!(c.validate().unwrap_err().contains("different lengths"));
        let mut c = SwinConfig::tiny_defaults();
        let args = json!({"always_partition": true});
        let e = c.apply_model_args(args.as_object().unwrap()).unwrap_err();
        assert!(e.contains("always_partition"), "{e}");
    }
}
