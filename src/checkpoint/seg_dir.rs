//! Segmentation model directories: `config.json` holds the backbone's own config (a timm
//! config, a grown one's `scalenet` block included) under `backbone`, the head's settings,
//! `num_classes`, `ignore_index` and the input's mean/std; `model.safetensors` holds every
//! tensor under mmsegmentation's names (`backbone.*`, `neck.*`, `decode_head.*`,
//! `auxiliary_head.*`).

use std::path::Path;

use burn::tensor::Device;
use serde_json::{Map, Value};

use super::model_dir::{
    build_network, check_dir, read_weights, save_dir, CheckpointSource, ModelConfig, CONFIG_FILE,
};
use crate::error::{Error, Result};
use crate::growth::plan::Growth;
use crate::model::weights::{Init, WeightSource};
use crate::segment::head::POOL_SCALES;
use crate::segment::{AuxSpec, HeadKind, SegSpec, Segmentor};

/// A parsed segmentation `config.json`.
#[derive(Clone, Debug)]
pub struct SegModelConfig {
    pub backbone: ModelConfig,
    pub spec: SegSpec,
    pub ignore_index: u32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Whether `dir` holds a segmentation model (its config names a backbone).
pub fn is_segmentation_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v.get("backbone").is_some_and(Value::is_object))
}

impl SegModelConfig {
    /// Parses `config.json` text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let bad = |msg: String| Error::config(path, msg);
        let raw: Map<String, Value> = serde_json::from_str(text).map_err(|cause| Error::Json {
            path: path.to_path_buf(),
            cause,
        })?;
        let backbone_raw = raw
            .get("backbone")
            .filter(|v| v.is_object())
            .ok_or_else(|| bad("no 'backbone' object".into()))?;
        let backbone = ModelConfig::parse(path, &backbone_raw.to_string())?;
        let head: HeadKind = field(&raw, "architecture").map_err(bad)?;
        let decode = raw
            .get("decode_head")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        let depth = match &backbone.growth {
            Some(Growth::Stack(g)) => g.layer_map.len(),
            _ => backbone.arch.depth(),
        };
        let spec = SegSpec {
            head,
            num_classes: field(&raw, "num_classes").map_err(bad)?,
            channels: opt_field(&decode, "channels").map_err(bad)?.unwrap_or(512),
            pool_scales: opt_field(&decode, "pool_scales")
                .map_err(bad)?
                .unwrap_or(POOL_SCALES.to_vec()),
            dropout_ratio: opt_field(&decode, "dropout_ratio")
                .map_err(bad)?
                .unwrap_or(0.1),
            aux: opt_field::<AuxSpec>(&Value::Object(raw.clone()), "auxiliary_head")
                .map_err(bad)?,
            out_indices: opt_field(&Value::Object(raw.clone()), "out_indices")
                .map_err(bad)?
                .unwrap_or_else(|| crate::model::vit::default_out_indices(depth, 4)),
        };
        spec.check(&backbone.arch, depth).map_err(bad)?;
        let chans = backbone.arch.in_chans();
        let stats = |key: &str, default: f32| -> Result<Vec<f32>> {
            let v: Vec<f32> = opt_field(&Value::Object(raw.clone()), key)
                .map_err(bad)?
                .unwrap_or(vec![default; chans]);
            if v.len() != chans {
                return Err(bad(format!(
                    "'{key}' has {} values for {chans} input channels",
                    v.len()
                )));
            }
            Ok(v)
        };
        Ok(Self {
            ignore_index: opt_field(&Value::Object(raw.clone()), "ignore_index")
                .map_err(bad)?
                .unwrap_or(255),
            mean: stats("mean", 0.5)?,
            std: stats("std", 0.5)?,
            backbone,
            spec,
        })
    }

    pub fn read(dir: &Path) -> Result<Self> {
        check_dir(dir)?;
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::parse(&path, &text)
    }

    /// The `config.json` object to write.
    pub fn to_json(&self) -> Map<String, Value> {
        let s = &self.spec;
        let mut m = Map::new();
        m.insert(
            "architecture".into(),
            serde_json::to_value(s.head).expect("an enum"),
        );
        m.insert("num_classes".into(), s.num_classes.into());
        m.insert("ignore_index".into(), self.ignore_index.into());
        m.insert("backbone".into(), Value::Object(self.backbone.to_json()));
        if matches!(self.backbone.arch, crate::model::arch::ImageArch::Vit(_)) {
            m.insert(
                "out_indices".into(),
                serde_json::to_value(&s.out_indices).expect("numbers"),
            );
        }
        let decode = serde_json::json!({"channels": s.channels, "pool_scales": s.pool_scales, "dropout_ratio": s.dropout_ratio});
        m.insert("decode_head".into(), decode);
        if let Some(a) = &s.aux {
            m.insert(
                "auxiliary_head".into(),
                serde_json::to_value(a).expect("numbers"),
            );
        }
        m.insert(
            "mean".into(),
            serde_json::to_value(&self.mean).expect("numbers"),
        );
        m.insert(
            "std".into(),
            serde_json::to_value(&self.std).expect("numbers"),
        );
        m
    }
}

fn field<T: serde::de::DeserializeOwned>(
    raw: &Map<String, Value>,
    key: &str,
) -> std::result::Result<T, String> {
    let v = raw.get(key).ok_or_else(|| format!("no '{key}' field"))?;
    serde_json::from_value(v.clone()).map_err(|e| format!("'{key}': {e}"))
}

fn opt_field<T: serde::de::DeserializeOwned>(
    obj: &Value,
    key: &str,
) -> std::result::Result<Option<T>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| format!("'{key}': {e}")),
    }
}

/// Reads a segmentation directory and builds the model on `device`.
pub fn load_segmentor(dir: &Path, device: &Device) -> Result<(SegModelConfig, Segmentor)> {
    let config = SegModelConfig::read(dir)?;
    let mut src = CheckpointSource::new(read_weights(dir)?);
    let backbone = {
        let mut prefixed = |k: &str, shape: &[usize], init: Init| {
            src.tensor(&format!("backbone.{k}"), shape, init)
        };
        build_network(&config.backbone, &mut prefixed, device)
    };
    let seg = Segmentor::new(&config.spec, backbone, &mut src, device);
    src.finish()?;
    Ok((config, seg))
}

/// Writes `config.json` and `model.safetensors` (each to a temporary name, then renamed).
pub fn save_segmentor(dir: &Path, config: &SegModelConfig, seg: &Segmentor) -> Result<()> {
    save_dir(dir, &config.to_json(), &seg.export().tensors)
}
