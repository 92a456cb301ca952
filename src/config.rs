//! Model configuration in timm's vocabulary: the `VisionTransformer` keyword arguments
//! (`model_args`), the named presets (`vit_tiny_patch16_224`, `deit_small_patch16_224`, ...)
//! and the `pretrained_cfg` that says how inputs are prepared.
//!
//! Field names are timm's so that `config.json` written by `timm.models._hub.save_for_hf`
//! reads without translation.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// How the token sequence becomes one feature vector (timm's `global_pool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalPool {
    /// The class token (`x[:, 0]`).
    Token,
    /// Mean over the patch tokens (prefix tokens excluded).
    Avg,
    /// Max over the patch tokens.
    Max,
    /// Half the sum of `avg` and `max`.
    Avgmax,
}

impl GlobalPool {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "token" => Ok(Self::Token),
            "avg" => Ok(Self::Avg),
            "max" => Ok(Self::Max),
            "avgmax" => Ok(Self::Avgmax),
            other => Err(format!(
                "global_pool '{other}' is not supported (use token, avg, max or avgmax)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Avg => "avg",
            Self::Max => "max",
            Self::Avgmax => "avgmax",
        }
    }
}

/// The architecture of a pre-norm Vision Transformer, as timm's `VisionTransformer` takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    /// Input height and width in pixels.
    pub img_size: [usize; 2],
    /// Side of a square patch; the patch grid is `img_size / patch_size` (floored, as the conv does).
    pub patch_size: usize,
    /// Input channels (3 for RGB, 1 for grey).
    pub in_chans: usize,
    /// Classifier outputs; 0 means no head (features only).
    pub num_classes: usize,
    pub global_pool: GlobalPool,
    /// Token width d.
    pub embed_dim: usize,
    /// Number of transformer blocks L.
    pub depth: usize,
    pub num_heads: usize,
    /// MLP hidden width is `int(embed_dim * mlp_ratio)`, as in timm.
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    /// LayerScale initial value; `None` means no `ls1`/`ls2` (identity).
    pub init_values: Option<f64>,
    pub class_token: bool,
    /// `None` follows timm: a `fc_norm` after pooling for avg/max pooling, a final `norm` otherwise.
    pub fc_norm: Option<bool>,
    /// DeiT distillation token and second head (`dist_token`, `head_dist`).
    pub distilled: bool,
}

/// The largest model scalenet builds: 10^11 parameters (400 GB in f32), 40x the largest ViT
/// that timm ships.
pub const MAX_PARAMS: u128 = 100_000_000_000;

impl VitConfig {
    /// timm's `VisionTransformer` defaults (ViT-Base/16 at 224 px).
    pub fn base_defaults() -> Self {
        Self {
            img_size: [224, 224],
            patch_size: 16,
            in_chans: 3,
            num_classes: 1000,
            global_pool: GlobalPool::Token,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            mlp_ratio: 4.0,
            qkv_bias: true,
            init_values: None,
            class_token: true,
            fc_norm: None,
            distilled: false,
        }
    }

    pub fn grid(&self) -> [usize; 2] {
        [
            self.img_size[0] / self.patch_size,
            self.img_size[1] / self.patch_size,
        ]
    }

    pub fn num_patches(&self) -> usize {
        let [h, w] = self.grid();
        h * w
    }

    /// Tokens before the patches: class token and, for DeiT distilled, the distillation token.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + usize::from(self.distilled)
    }

    pub fn num_tokens(&self) -> usize {
        self.num_patches() + self.num_prefix_tokens()
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    pub fn mlp_hidden(&self) -> usize {
        // Python's int() truncates toward zero; the product is positive.
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Whether pooling is followed by `fc_norm` (and the final `norm` is identity).
    pub fn use_fc_norm(&self) -> bool {
        self.fc_norm.unwrap_or(matches!(
            self.global_pool,
            GlobalPool::Avg | GlobalPool::Max | GlobalPool::Avgmax
        ))
    }

    /// A lower bound on the parameter count (patch projection and position embedding, the
    /// four matrices of every block, the classifier), computed without overflow or allocation:
    /// checked against limits and against the weights file before anything is built.
    pub fn min_params(&self) -> u128 {
        let [d, p, c] = [self.embed_dim, self.patch_size, self.in_chans].map(|v| v as u128);
        let patches = (self.img_size[0] / self.patch_size.max(1)) as u128
            * (self.img_size[1] / self.patch_size.max(1)) as u128;
        let hidden = (self.embed_dim as f64 * self.mlp_ratio).min(1e30) as u128;
        let heads = 1 + u128::from(self.distilled);
        let embed = c
            .saturating_mul(p * p)
            .saturating_add(patches)
            .saturating_mul(d);
        let block = d.saturating_mul(d.saturating_mul(4).saturating_add(hidden.saturating_mul(2)));
        embed
            .saturating_add((self.depth as u128).saturating_mul(block))
            .saturating_add(
                (self.num_classes as u128)
                    .saturating_mul(d)
                    .saturating_mul(heads),
            )
    }

    /// Checks the invariants timm asserts, with messages a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        // Every size is checked before anything is allocated: a model that cannot fit any
        // machine is refused here rather than aborting the process in the allocator.
        let n = self.min_params();
        if n > MAX_PARAMS {
            return Err(format!(
                "these sizes (depth {}, embed_dim {}, mlp_ratio {}, img_size {:?}, patch_size {}, num_classes {}) imply at least {n} parameters, more than the {MAX_PARAMS} scalenet accepts",
                self.depth, self.embed_dim, self.mlp_ratio, self.img_size, self.patch_size, self.num_classes
            ));
        }
        let positive = [
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("embed_dim", self.embed_dim),
            ("num_heads", self.num_heads),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "embed_dim {} is not divisible by num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.img_size[0] < self.patch_size || self.img_size[1] < self.patch_size {
            return Err(format!(
                "img_size {:?} is smaller than patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) || self.mlp_hidden() == 0 {
            return Err(format!("mlp_ratio {} gives no MLP width", self.mlp_ratio));
        }
        if !self.class_token && self.global_pool == GlobalPool::Token {
            return Err("global_pool 'token' needs class_token = true".into());
        }
        if self.distilled && (self.global_pool != GlobalPool::Token || !self.class_token) {
            return Err("distilled models use global_pool 'token' with a class token".into());
        }
        if let Some(v) = self.init_values {
            if !v.is_finite() {
                return Err(format!("init_values {v} is not finite"));
            }
        }
        Ok(())
    }

    /// Applies timm `model_args` (a JSON object) on top of this config.
    ///
    /// Arguments that only affect training (dropout rates, weight init mode) are accepted and
    /// ignored; arguments that change the architecture in ways scalenet does not implement are
    /// rejected unless they hold timm's default value.
    pub fn apply_model_args(&mut self, args: &Map<String, Value>) -> Result<(), String> {
        for (key, value) in args {
            self.apply_arg(key, value)?;
        }
        Ok(())
    }

    fn apply_arg(&mut self, key: &str, v: &Value) -> Result<(), String> {
        let bad = |what: &str| format!("model_args.{key} = {v}: expected {what}");
        let uint = || {
            v.as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad("a non-negative integer"))
        };
        let boolean = || v.as_bool().ok_or_else(|| bad("true or false"));
        match key {
            "img_size" => {
                self.img_size = match v {
                    Value::Number(_) => {
                        let s = uint()?;
                        [s, s]
                    }
                    Value::Array(a) if a.len() == 2 => {
                        let h = a[0].as_u64().ok_or_else(|| bad("an integer or [h, w]"))?;
                        let w = a[1].as_u64().ok_or_else(|| bad("an integer or [h, w]"))?;
                        [h as usize, w as usize]
                    }
                    _ => return Err(bad("an integer or [h, w]")),
                }
            }
            "patch_size" => {
                self.patch_size = match v {
                    Value::Array(a) if a.len() == 2 && a[0] == a[1] => {
                        a[0].as_u64().ok_or_else(|| bad("an integer"))? as usize
                    }
                    Value::Array(_) => return Err(bad("a square patch (one integer)")),
                    _ => uint()?,
                }
            }
            "in_chans" => self.in_chans = uint()?,
            "num_classes" => self.num_classes = uint()?,
            "embed_dim" => self.embed_dim = uint()?,
            "depth" => self.depth = uint()?,
            "num_heads" => self.num_heads = uint()?,
            "mlp_ratio" => self.mlp_ratio = v.as_f64().ok_or_else(|| bad("a number"))?,
            "qkv_bias" => self.qkv_bias = boolean()?,
            "class_token" => self.class_token = boolean()?,
            "global_pool" => {
                let s = v.as_str().ok_or_else(|| bad("a string"))?;
                self.global_pool = GlobalPool::parse(s)?;
            }
            "init_values" => {
                self.init_values = match v {
                    Value::Null => None,
                    _ => Some(v.as_f64().ok_or_else(|| bad("a number or null"))?),
                }
            }
            "fc_norm" => {
                self.fc_norm = match v {
                    Value::Null => None,
                    _ => Some(boolean()?),
                }
            }
            // Training-time only: they do not change the function at inference.
            "drop_rate" | "pos_drop_rate" | "patch_drop_rate" | "proj_drop_rate"
            | "attn_drop_rate" | "drop_path_rate" | "weight_init" | "pretrained_strict" => {}
            // Architecture switches scalenet implements only at timm's default.
            _ => {
                let default_ok = match key {
                    "no_embed_class" | "pre_norm" | "qk_norm" | "dynamic_img_size"
                    | "dynamic_img_pad" | "scale_attn_norm" | "scale_mlp_norm" => {
                        v == &Value::Bool(false)
                    }
                    "proj_bias" | "final_norm" => v == &Value::Bool(true),
                    "reg_tokens" => v.as_u64() == Some(0),
                    "act_layer" => matches!(v.as_str(), Some("gelu") | None) && !v.is_array(),
                    "norm_layer" => matches!(v.as_str(), Some("layernorm")),
                    _ => false,
                };
                if !default_ok {
                    return Err(format!(
                        "model_args.{key} = {v} is not supported by scalenet's ViT"
                    ));
                }
            }
        }
        Ok(())
    }

    /// `model_args` as timm's `VisionTransformer` accepts them, for writing `config.json`.
    pub fn to_model_args(&self) -> Map<String, Value> {
        let img = if self.img_size[0] == self.img_size[1] {
            json!(self.img_size[0])
        } else {
            json!(self.img_size)
        };
        let mut m = Map::new();
        m.insert("img_size".into(), img);
        m.insert("patch_size".into(), json!(self.patch_size));
        m.insert("in_chans".into(), json!(self.in_chans));
        m.insert("num_classes".into(), json!(self.num_classes));
        m.insert("global_pool".into(), json!(self.global_pool.as_str()));
        m.insert("embed_dim".into(), json!(self.embed_dim));
        m.insert("depth".into(), json!(self.depth));
        m.insert("num_heads".into(), json!(self.num_heads));
        m.insert("mlp_ratio".into(), json!(self.mlp_ratio));
        m.insert("qkv_bias".into(), json!(self.qkv_bias));
        m.insert("class_token".into(), json!(self.class_token));
        if let Some(v) = self.init_values {
            m.insert("init_values".into(), json!(v));
        }
        if let Some(v) = self.fc_norm {
            m.insert("fc_norm".into(), json!(v));
        }
        m
    }
}

/// The architecture of a timm image model: the model family with its keyword arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageArch {
    Vit(VitConfig),
    Swin(crate::model::swin::SwinConfig),
}

impl ImageArch {
    /// The preset `name` names (a pretrained tag such as `.augreg_in21k` is ignored), with its
    /// canonical name and input preparation.
    pub fn preset(name: &str) -> Option<(&'static str, ImageArch, PretrainedCfg)> {
        if let Some(p) = preset(name) {
            return Some((p.name, ImageArch::Vit(p.config), p.pretrained_cfg));
        }
        crate::model::swin::config::preset(name).map(|(n, c, p)| (n, ImageArch::Swin(c), p))
    }

    pub fn family(&self) -> &'static str {
        match self {
            ImageArch::Vit(_) => "ViT",
            ImageArch::Swin(_) => "Swin",
        }
    }

    pub fn img_size(&self) -> [usize; 2] {
        match self {
            ImageArch::Vit(c) => c.img_size,
            ImageArch::Swin(c) => c.img_size,
        }
    }

    pub fn in_chans(&self) -> usize {
        match self {
            ImageArch::Vit(c) => c.in_chans,
            ImageArch::Swin(c) => c.in_chans,
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            ImageArch::Vit(c) => c.num_classes,
            ImageArch::Swin(c) => c.num_classes,
        }
    }

    pub fn set_num_classes(&mut self, k: usize) {
        match self {
            ImageArch::Vit(c) => c.num_classes = k,
            ImageArch::Swin(c) => c.num_classes = k,
        }
    }

    pub fn global_pool(&self) -> GlobalPool {
        match self {
            ImageArch::Vit(c) => c.global_pool,
            ImageArch::Swin(c) => c.global_pool,
        }
    }

    /// Width of the features the classifier reads.
    pub fn num_features(&self) -> usize {
        match self {
            ImageArch::Vit(c) => c.embed_dim,
            ImageArch::Swin(c) => c.num_features(),
        }
    }

    /// Blocks of the base (all stages for a Swin).
    pub fn depth(&self) -> usize {
        match self {
            ImageArch::Vit(c) => c.depth,
            ImageArch::Swin(c) => c.depths.iter().sum(),
        }
    }

    pub fn min_params(&self) -> u128 {
        match self {
            ImageArch::Vit(c) => c.min_params(),
            ImageArch::Swin(c) => c.min_params(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            ImageArch::Vit(c) => c.validate(),
            ImageArch::Swin(c) => c.validate(),
        }
    }

    pub fn apply_model_args(&mut self, args: &Map<String, Value>) -> Result<(), String> {
        match self {
            ImageArch::Vit(c) => c.apply_model_args(args),
            ImageArch::Swin(c) => c.apply_model_args(args),
        }
    }

    pub fn to_model_args(&self) -> Map<String, Value> {
        match self {
            ImageArch::Vit(c) => c.to_model_args(),
            ImageArch::Swin(c) => c.to_model_args(),
        }
    }

    /// The ViT config, for what only ViTs support.
    pub fn vit(&self) -> Option<&VitConfig> {
        match self {
            ImageArch::Vit(c) => Some(c),
            ImageArch::Swin(_) => None,
        }
    }
}

/// How inputs are prepared for a model (timm's `pretrained_cfg`), kept as the raw JSON object
/// so that fields scalenet does not use survive a load/save round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct PretrainedCfg(pub Map<String, Value>);

impl PretrainedCfg {
    fn new(mean: [f64; 3], std: [f64; 3], crop_pct: f64, img: usize) -> Self {
        let v = json!({
            "input_size": [3, img, img],
            "fixed_input_size": true,
            "interpolation": "bicubic",
            "crop_pct": crop_pct,
            "crop_mode": "center",
            "mean": mean,
            "std": std,
            "num_classes": 1000,
            "pool_size": null,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        });
        match v {
            Value::Object(m) => Self(m),
            _ => unreachable!("json! of an object literal is an object"),
        }
    }

    /// ImageNet mean/std, bicubic, as timm's Swin and DeiT presets.
    pub fn imagenet(crop_pct: f64, img: usize) -> Self {
        Self::new(IMAGENET_MEAN, IMAGENET_STD, crop_pct, img)
    }

    pub fn mean(&self) -> Option<Vec<f64>> {
        self.floats("mean")
    }

    pub fn std(&self) -> Option<Vec<f64>> {
        self.floats("std")
    }

    pub fn crop_pct(&self) -> Option<f64> {
        self.0.get("crop_pct").and_then(Value::as_f64)
    }

    pub fn interpolation(&self) -> Option<&str> {
        self.0.get("interpolation").and_then(Value::as_str)
    }

    pub fn input_size(&self) -> Option<Vec<usize>> {
        self.0
            .get("input_size")?
            .as_array()?
            .iter()
            .map(|v| v.as_u64().map(|x| x as usize))
            .collect()
    }

    fn floats(&self, key: &str) -> Option<Vec<f64>> {
        self.0
            .get(key)?
            .as_array()?
            .iter()
            .map(Value::as_f64)
            .collect()
    }

    /// Makes `input_size` and `num_classes` agree with the model, as timm does for a model
    /// created with non-default arguments; mean/std are repeated or averaged to the channel count.
    pub fn conform_to(&mut self, arch: &ImageArch) {
        self.conform(arch.in_chans(), arch.img_size(), arch.num_classes())
    }

    /// [`Self::conform_to`] for any image model.
    pub fn conform(&mut self, c: usize, img_size: [usize; 2], num_classes: usize) {
        self.0
            .insert("input_size".into(), json!([c, img_size[0], img_size[1]]));
        self.0.insert("num_classes".into(), json!(num_classes));
        for key in ["mean", "std"] {
            if let Some(v) = self.floats(key) {
                if v.len() != c && !v.is_empty() {
                    let adapted: Vec<f64> = if c == 1 {
                        vec![v.iter().sum::<f64>() / v.len() as f64]
                    } else {
                        (0..c).map(|i| v[i % v.len()]).collect()
                    };
                    self.0.insert(key.into(), json!(adapted));
                }
            }
        }
    }
}

/// A named architecture: its config and the input preparation its weights were trained with.
#[derive(Clone, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub config: VitConfig,
    pub pretrained_cfg: PretrainedCfg,
}

const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
const INCEPTION_MEAN: [f64; 3] = [0.5, 0.5, 0.5];
const INCEPTION_STD: [f64; 3] = [0.5, 0.5, 0.5];

/// (name, patch, dim, depth, heads, img, family) for every preset timm defines.
const PRESETS: &[(&str, usize, usize, usize, usize, usize, Family)] = &[
    ("vit_tiny_patch16_224", 16, 192, 12, 3, 224, Family::Vit),
    ("vit_tiny_patch16_384", 16, 192, 12, 3, 384, Family::Vit),
    ("vit_small_patch32_224", 32, 384, 12, 6, 224, Family::Vit),
    ("vit_small_patch32_384", 32, 384, 12, 6, 384, Family::Vit),
    ("vit_small_patch16_224", 16, 384, 12, 6, 224, Family::Vit),
    ("vit_small_patch16_384", 16, 384, 12, 6, 384, Family::Vit),
    ("vit_base_patch32_224", 32, 768, 12, 12, 224, Family::Vit),
    ("vit_base_patch32_384", 32, 768, 12, 12, 384, Family::Vit),
    ("vit_base_patch16_224", 16, 768, 12, 12, 224, Family::Vit),
    ("vit_base_patch16_384", 16, 768, 12, 12, 384, Family::Vit),
    ("vit_large_patch32_224", 32, 1024, 24, 16, 224, Family::Vit),
    ("vit_large_patch32_384", 32, 1024, 24, 16, 384, Family::Vit),
    ("vit_large_patch16_224", 16, 1024, 24, 16, 224, Family::Vit),
    ("vit_large_patch16_384", 16, 1024, 24, 16, 384, Family::Vit),
    ("deit_tiny_patch16_224", 16, 192, 12, 3, 224, Family::Deit),
    ("deit_small_patch16_224", 16, 384, 12, 6, 224, Family::Deit),
    ("deit_base_patch16_224", 16, 768, 12, 12, 224, Family::Deit),
    ("deit_base_patch16_384", 16, 768, 12, 12, 384, Family::Deit),
    (
        "deit_tiny_distilled_patch16_224",
        16,
        192,
        12,
        3,
        224,
        Family::DeitDistilled,
    ),
    (
        "deit_small_distilled_patch16_224",
        16,
        384,
        12,
        6,
        224,
        Family::DeitDistilled,
    ),
    (
        "deit_base_distilled_patch16_224",
        16,
        768,
        12,
        12,
        224,
        Family::DeitDistilled,
    ),
    (
        "deit_base_distilled_patch16_384",
        16,
        768,
        12,
        12,
        384,
        Family::DeitDistilled,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Vit,
    Deit,
    DeitDistilled,
}

/// Names of all presets, in a stable order.
pub fn preset_names() -> impl Iterator<Item = &'static str> {
    PRESETS
        .iter()
        .map(|p| p.0)
        .chain(crate::model::swin::config::preset_names())
}

/// Looks up a timm architecture name. Pretrained-tag suffixes (`.augreg_in21k`) are ignored.
pub fn preset(name: &str) -> Option<Preset> {
    let base = name.split('.').next().unwrap_or(name);
    let &(name, patch, dim, depth, heads, img, family) = PRESETS.iter().find(|p| p.0 == base)?;
    let config = VitConfig {
        img_size: [img, img],
        patch_size: patch,
        embed_dim: dim,
        depth,
        num_heads: heads,
        distilled: family == Family::DeitDistilled,
        ..VitConfig::base_defaults()
    };
    let crop = |at224: f64| if img == 224 { at224 } else { 1.0 };
    let pretrained_cfg = match family {
        Family::Vit => PretrainedCfg::new(INCEPTION_MEAN, INCEPTION_STD, crop(0.9), img),
        Family::Deit | Family::DeitDistilled => {
            let mut p = PretrainedCfg::new(IMAGENET_MEAN, IMAGENET_STD, crop(0.875), img);
            if family == Family::DeitDistilled {
                p.0.insert("classifier".into(), json!(["head", "head_dist"]));
            }
            p
        }
    };
    Some(Preset {
        name,
        config,
        pretrained_cfg,
    })
}

/// A short "did you mean" hint for an unknown architecture name.
pub fn suggest(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let close: Vec<&str> = preset_names()
        .filter(|p| {
            let stem = lower.split('_').take(2).collect::<Vec<_>>().join("_");
            !stem.is_empty() && p.starts_with(&stem)
        })
        .take(6)
        .collect();
    if close.is_empty() {
        format!(
            " (known: {}; see `scalenet init --help`)",
            preset_names().take(4).collect::<Vec<_>>().join(", ") + ", ..."
        )
    } else {
        format!(" (did you mean one of: {}?)", close.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_have_timm_shapes() {
        for name in preset_names() {
            let (_, arch, _) = ImageArch::preset(name).unwrap();
            arch.validate().unwrap();
        }
        let t = preset("deit_tiny_patch16_224").unwrap().config;
        assert_eq!(
            (t.embed_dim, t.depth, t.num_heads, t.num_tokens()),
            (192, 12, 3, 197)
        );
        let d = preset("deit_base_distilled_patch16_384").unwrap().config;
        assert_eq!(d.num_tokens(), 24 * 24 + 2);
        assert!(preset("vit_small_patch16_224.augreg_in21k_ft_in1k").is_some());
    }

    #[test]
    fn model_args_override_and_reject() {
        let mut c = preset("vit_tiny_patch16_224").unwrap().config;
        let args: Map<String, Value> = serde_json::from_str(
            r#"{"img_size": [32, 48], "patch_size": 8, "in_chans": 1, "global_pool": "avg",
                "drop_path_rate": 0.1, "init_values": 1e-5, "reg_tokens": 0}"#,
        )
        .unwrap();
        c.apply_model_args(&args).unwrap();
        assert_eq!(c.img_size, [32, 48]);
        assert_eq!(c.grid(), [4, 6]);
        assert!(c.use_fc_norm());
        let bad: Map<String, Value> = serde_json::from_str(r#"{"reg_tokens": 4}"#).unwrap();
        assert!(c.apply_model_args(&bad).unwrap_err().contains("reg_tokens"));
        c.num_heads = 5;
        assert!(c.validate().unwrap_err().contains("divisible"));
    }
}
