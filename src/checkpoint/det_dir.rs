//! Detection model directories: `config.json` holds `architecture: "retinanet"`, the
//! backbone's own config (a timm config, a grown one's `scalenet` block included) under
//! `backbone`, the detector's settings ([`DetSpec`]'s keys, torchvision's defaults where
//! absent), the input's mean/std and optionally `class_names`; `model.safetensors` holds
//! `backbone.*` (with a Swin's `backbone.norm{i}`), `neck.*` and torchvision's `head.*`.

use std::path::Path;

use burn::tensor::Device;
use serde_json::{Map, Value};

use super::model_dir::{
    read_config_text, read_weights, save_dir, CheckpointSource, ModelConfig, CONFIG_FILE,
};
use super::seg_dir::{
    backbone_around, channel_stats, head_architecture, input_stats, opt_field, prefixed_backbone,
};
use crate::detect::{DetSpec, Detector, ARCHITECTURE};
use crate::error::{Error, Result};
use crate::model::weights::RandomInit;

/// A parsed detection `config.json`.
#[derive(Clone, Debug)]
pub struct DetModelConfig {
    pub backbone: ModelConfig,
    pub spec: DetSpec,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// The classes' names, in label order, when the training data named them.
    pub class_names: Option<Vec<String>>,
}

/// Whether `dir` holds a detector.
pub fn is_detection_dir(dir: &Path) -> bool {
    head_architecture(dir).is_some_and(|a| a == ARCHITECTURE)
}

/// The keys of a detection config that are not the detector's settings.
const OUTER: [&str; 5] = ["architecture", "backbone", "mean", "std", "class_names"];

impl DetModelConfig {
    /// Parses `config.json` text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let bad = |msg: String| Error::config(path, msg);
        let mut raw: Map<String, Value> =
            serde_json::from_str(text).map_err(|cause| Error::Json {
                path: path.to_path_buf(),
                cause,
            })?;
        if raw.get("architecture").and_then(Value::as_str) != Some(ARCHITECTURE) {
            return Err(bad(format!("'architecture' is not \"{ARCHITECTURE}\"")));
        }
        let backbone_raw = raw
            .get("backbone")
            .filter(|v| v.is_object())
            .ok_or_else(|| bad("no 'backbone' object".into()))?;
        let backbone = ModelConfig::parse(path, &backbone_raw.to_string())?;
        let outer: Map<String, Value> = OUTER
            .iter()
            .filter_map(|k| raw.remove(*k).map(|v| (k.to_string(), v)))
            .collect();
        let spec: DetSpec =
            serde_json::from_value(Value::Object(raw)).map_err(|e| bad(e.to_string()))?;
        spec.check(&backbone.arch).map_err(bad)?;
        let chans = backbone.arch.in_chans();
        let [mean0, std0] = input_stats(&backbone);
        let outer = Value::Object(outer);
        let stats = |key: &str, default| channel_stats(&outer, key, default, chans).map_err(bad);
        let class_names: Option<Vec<String>> = opt_field(&outer, "class_names").map_err(bad)?;
        if let Some(n) = class_names.as_ref().map(Vec::len) {
            if n != spec.num_classes {
                let k = spec.num_classes;
                return Err(bad(format!("'class_names' has {n} names for {k} classes")));
            }
        }
        Ok(Self {
            mean: stats("mean", mean0)?,
            std: stats("std", std0)?,
            backbone,
            spec,
            class_names,
        })
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let (path, text) = read_config_text(dir)?;
        Self::parse(&path, &text)
    }

    /// The `config.json` object to write.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("architecture".into(), ARCHITECTURE.into());
        if let Value::Object(spec) = serde_json::to_value(&self.spec).expect("numbers") {
            m.extend(spec);
        }
        m.insert("backbone".into(), Value::Object(self.backbone.to_json()));
        m.insert(
            "mean".into(),
            serde_json::to_value(&self.mean).expect("numbers"),
        );
        m.insert(
            "std".into(),
            serde_json::to_value(&self.std).expect("numbers"),
        );
        if let Some(names) = &self.class_names {
            m.insert(
                "class_names".into(),
                serde_json::to_value(names).expect("strings"),
            );
        }
        m
    }
}

/// Reads a detection directory and builds the model on `device`.
pub fn load_detector(dir: &Path, device: &Device) -> Result<(DetModelConfig, Detector)> {
    let config = DetModelConfig::read(dir)?;
    let mut src = CheckpointSource::new(read_weights(dir)?);
    let backbone = prefixed_backbone(&config.backbone, &mut src, device);
    let det = Detector::new(&config.spec, backbone, &mut src, device);
    src.finish()?;
    Ok((config, det))
}

/// Writes `config.json` and `model.safetensors` (each to a temporary name, then renamed).
pub fn save_detector(dir: &Path, config: &DetModelConfig, det: &Detector) -> Result<()> {
    save_dir(dir, &config.to_json(), &det.export().tensors)
}

/// What `scalenet init --arch retinanet --backbone DIR` asks for.
#[derive(Clone, Debug)]
pub struct DetInit {
    pub spec: DetSpec,
    /// The input side the detector runs at; `None` keeps the backbone's.
    pub img_size: Option<usize>,
    pub class_names: Option<Vec<String>>,
    pub seed: u64,
}

/// A detector with a fresh pyramid and head around the (plain or grown) image model in
/// `dir` ([`backbone_around`]). Empty `anchor_sizes` become [`DetSpec::anchor_sizes_for`] the
/// backbone (and are filled in `opts`).
pub fn detector_around(
    dir: &Path,
    opts: &mut DetInit,
    device: &Device,
) -> Result<(DetModelConfig, Detector)> {
    let (dir, backbone, network) = backbone_around(dir, opts.img_size, device)?;
    if opts.spec.anchor_sizes.is_empty() {
        opts.spec.anchor_sizes = DetSpec::anchor_sizes_for(&backbone.arch);
    }
    opts.spec
        .check(&backbone.arch)
        .map_err(|m| Error::config(dir.join(CONFIG_FILE), m))?;
    let [mean, std] = input_stats(&backbone);
    let config = DetModelConfig {
        backbone,
        spec: opts.spec.clone(),
        mean,
        std,
        class_names: opts.class_names.clone(),
    };
    let mut init = RandomInit::new(opts.seed);
    let det = Detector::new(&config.spec, network, &mut init, device);
    Ok((config, det))
}
