//! The ViT's configuration in timm's vocabulary: the `VisionTransformer` keyword arguments
//! (`model_args`) and the named presets (`vit_tiny_patch16_224`, `deit_small_patch16_224`, ...)
//! with the `pretrained_cfg` their weights were trained with.
//!
//! Field names are timm's so that `config.json` written by `timm.models._hub.save_for_hf`
//! reads without translation.

use serde_json::{json, Map, Value};

use crate::model::image::{
    only_default, GlobalPool, PretrainedCfg, IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN,
    INCEPTION_STD,
};
use crate::model::limits::MAX_PARAMS;

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
                let is_default = match key {
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
                only_default(key, v, is_default, "ViT")?
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

/// A named architecture: its config and the input preparation its weights were trained with.
#[derive(Clone, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub config: VitConfig,
    pub pretrained_cfg: PretrainedCfg,
}

/// (name, patch, dim, depth, heads, img, family) for every preset timm defines.
#[rustfmt::skip]
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
    ("deit_tiny_distilled_patch16_224", 16, 192, 12, 3, 224, Family::DeitDistilled),
    ("deit_small_distilled_patch16_224", 16, 384, 12, 6, 224, Family::DeitDistilled),
    ("deit_base_distilled_patch16_224", 16, 768, 12, 12, 224, Family::DeitDistilled),
    ("deit_base_distilled_patch16_384", 16, 768, 12, 12, 384, Family::DeitDistilled),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Vit,
    Deit,
    DeitDistilled,
}

/// Names of the ViT and DeiT presets, in a stable order.
pub fn preset_names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|p| p.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_have_timm_shapes() {
        for name in preset_names() {
            preset(name).unwrap().config.validate().unwrap();
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
