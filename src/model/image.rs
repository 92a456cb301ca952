//! What every timm image family shares: how the token grid becomes one feature vector
//! (`global_pool`) and how inputs are prepared (`pretrained_cfg`).

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

/// An architecture switch that scalenet implements only at timm's default: `Ok` when
/// `is_default`, else the message that `family` does not support `key = v`.
pub fn only_default(key: &str, v: &Value, is_default: bool, family: &str) -> Result<(), String> {
    if is_default {
        Ok(())
    } else {
        Err(format!(
            "model_args.{key} = {v} is not supported by scalenet's {family}"
        ))
    }
}

/// How inputs are prepared for a model (timm's `pretrained_cfg`), kept as the raw JSON object
/// so that fields scalenet does not use survive a load/save round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct PretrainedCfg(pub Map<String, Value>);

impl PretrainedCfg {
    pub fn new(mean: [f64; 3], std: [f64; 3], crop_pct: f64, img: usize) -> Self {
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

    /// Makes `input_size` and `num_classes` agree with a model of `c` channels, `img_size` and
    /// `num_classes`, as timm does for a model created with non-default arguments; mean/std are
    /// repeated or averaged to the channel count.
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

pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
pub const INCEPTION_MEAN: [f64; 3] = [0.5, 0.5, 0.5];
pub const INCEPTION_STD: [f64; 3] = [0.5, 0.5, 0.5];
