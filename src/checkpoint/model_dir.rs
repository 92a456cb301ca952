//! timm hub model directories: `config.json` + `model.safetensors`, as
//! `timm.models._hub.save_for_hf(model, dir, safe_serialization=True)` writes them.
//!
//! `config.json` holds `architecture` (a timm preset name), `num_classes`, `num_features`,
//! optional `model_args` (keyword arguments on top of the preset) and `pretrained_cfg`
//! (input size, mean/std, interpolation, crop). Fields scalenet does not interpret, such as
//! `label_names`, are kept and written back.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde_json::{json, Map, Value};

use super::atomic::{commit, write_temp};
use super::safetensors_io::{serialize, TensorFile};
use crate::error::{Error, Result};
use crate::growth::plan::Growth;
use crate::growth::swin::GrownSwin;
use crate::growth::vit::GrownVit;
use crate::model::arch::{suggest, ImageArch};
use crate::model::image::PretrainedCfg;
use crate::model::swin::SwinTransformer;
use crate::model::vit::VisionTransformer;
use crate::model::weights::{Init, NamedTensor, WeightSource};
use crate::network::Network;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// A parsed `config.json`.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// timm architecture name (a preset).
    pub architecture: String,
    /// The architecture after `num_classes` and `model_args` are applied.
    pub arch: ImageArch,
    pub pretrained_cfg: PretrainedCfg,
    /// The `scalenet` section of a grown model; `None` for a plain timm model.
    pub growth: Option<Growth>,
    /// The whole JSON object as read, so unknown fields survive a round trip.
    pub raw: Map<String, Value>,
}

impl ModelConfig {
    /// A config for a preset with `model_args` overrides, as `scalenet init` creates it.
    pub fn from_preset(architecture: &str, model_args: &Map<String, Value>) -> Result<Self> {
        let (name, mut arch, mut pretrained_cfg) =
            ImageArch::preset(architecture).ok_or_else(|| Error::UnknownArchitecture {
                name: architecture.to_string(),
                hint: suggest(architecture),
            })?;
        arch.apply_model_args(model_args)
            .map_err(Error::InvalidModel)?;
        arch.validate().map_err(Error::InvalidModel)?;
        pretrained_cfg.conform_to(&arch);
        Ok(Self {
            architecture: name.to_string(),
            arch,
            pretrained_cfg,
            growth: None,
            raw: Map::new(),
        })
    }

    /// Parses `config.json` text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|cause| Error::Json {
            path: path.to_path_buf(),
            cause,
        })?;
        let Value::Object(raw) = value else {
            return Err(Error::config(
                path,
                "expected a JSON object at the top level",
            ));
        };
        let arch = match raw.get("architecture") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(Error::config(path, format!("'architecture' must be a string, not {other}"))),
            None => return Err(Error::config(path, "no 'architecture' field (expected a timm model name such as \"deit_tiny_patch16_224\")")),
        };
        let (_, mut model, _) =
            ImageArch::preset(&arch).ok_or_else(|| Error::UnknownArchitecture {
                name: arch.clone(),
                hint: format!(" in {}{}", path.display(), suggest(&arch)),
            })?;
        // Old-style timm configs keep the pretrained cfg at the top level.
        let pretrained = match raw.get("pretrained_cfg") {
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(Error::config(path, "'pretrained_cfg' must be an object")),
            None => raw.clone(),
        };
        let mut args = Map::new();
        // timm builds with the top-level num_classes; global_pool there records what the
        // model had, which matters when model_args were not saved.
        if let Some(n) = raw.get("num_classes") {
            args.insert("num_classes".into(), n.clone());
        }
        if let Some(g) = raw
            .get("global_pool")
            .filter(|g| g.as_str().is_some_and(|s| !s.is_empty()))
        {
            args.insert("global_pool".into(), g.clone());
        }
        match raw.get("model_args") {
            Some(Value::Object(m)) => args.extend(m.clone()),
            Some(Value::Null) | None => {}
            Some(_) => return Err(Error::config(path, "'model_args' must be an object")),
        }
        model
            .apply_model_args(&args)
            .map_err(|m| Error::config(path, m))?;
        model.validate().map_err(|m| Error::config(path, m))?;
        let growth = match raw.get("scalenet") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Growth::parse(v, &model).map_err(|m| Error::config(path, m))?),
        };
        Ok(Self {
            architecture: arch,
            arch: model,
            pretrained_cfg: PretrainedCfg(pretrained),
            growth,
            raw,
        })
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let (path, text) = read_config_text(dir)?;
        Self::parse(&path, &text)
    }

    /// The `config.json` object to write, in timm's field order, keeping unknown fields.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("architecture".into(), json!(self.architecture));
        out.insert("num_classes".into(), json!(self.arch.num_classes()));
        out.insert("num_features".into(), json!(self.arch.num_features()));
        out.insert(
            "global_pool".into(),
            json!(self.arch.global_pool().as_str()),
        );
        out.insert(
            "model_args".into(),
            Value::Object(self.arch.to_model_args()),
        );
        let mut pcfg = self.pretrained_cfg.clone();
        pcfg.conform_to(&self.arch);
        out.insert("pretrained_cfg".into(), Value::Object(pcfg.0));
        if let Some(g) = &self.growth {
            out.insert("scalenet".into(), g.to_json());
        }
        for (k, v) in &self.raw {
            if !out.contains_key(k) && k != "scalenet" && !is_old_style_pretrained_key(k, &self.raw)
            {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

fn is_old_style_pretrained_key(key: &str, raw: &Map<String, Value>) -> bool {
    !raw.contains_key("pretrained_cfg") && key != "label_names" && key != "scalenet"
}

/// `dir/config.json`'s path and text, `dir` checked first.
pub fn read_config_text(dir: &Path) -> Result<(PathBuf, String)> {
    check_dir(dir)?;
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    Ok((path, text))
}

pub fn check_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory"),
        ));
    }
    if !dir.is_dir() {
        return Err(Error::config(
            dir,
            "is a file; expected a model directory holding config.json and model.safetensors",
        ));
    }
    Ok(())
}

/// Serves tensors from a checkpoint and keeps account of what was missing, mis-shaped or
/// never asked for, so that all key problems can be reported together.
pub struct CheckpointSource {
    file: TensorFile,
    missing: Vec<String>,
    mismatch: Option<(String, Vec<usize>, Vec<usize>)>,
}

impl CheckpointSource {
    pub fn new(file: TensorFile) -> Self {
        Self {
            file,
            missing: Vec::new(),
            mismatch: None,
        }
    }

    /// Reports missing and unexpected keys together, then the first shape mismatch.
    pub fn finish(self) -> Result<()> {
        let unexpected: Vec<String> = self.file.tensors.keys().cloned().collect();
        if !self.missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::Keys {
                path: self.file.path,
                missing: self.missing,
                unexpected,
            });
        }
        if let Some((key, expected, got)) = self.mismatch {
            return Err(Error::ShapeMismatch {
                path: self.file.path,
                key,
                expected,
                got,
            });
        }
        Ok(())
    }
}

impl WeightSource for CheckpointSource {
    fn tensor(&mut self, key: &str, shape: &[usize], _init: Init) -> Vec<f32> {
        let n = shape.iter().product();
        match self.file.tensors.remove(key) {
            None => {
                self.missing.push(key.to_string());
                vec![0.0; n]
            }
            Some(t) if t.shape != shape => {
                if self.mismatch.is_none() {
                    self.mismatch = Some((key.to_string(), shape.to_vec(), t.shape));
                }
                vec![0.0; n]
            }
            Some(t) => t.values,
        }
    }
}

/// A plain timm model read from a directory.
pub struct LoadedVit {
    pub config: ModelConfig,
    pub model: VisionTransformer,
}

/// A plain or grown model read from a directory.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub network: Network,
}

/// Reads a plain timm model directory; a grown directory is an error that says so.
pub fn load_vit(dir: &Path, device: &Device) -> Result<LoadedVit> {
    match load_model(dir, device)? {
        LoadedModel {
            config,
            network: Network::Plain(model),
        } => Ok(LoadedVit { config, model }),
        LoadedModel { .. } => Err(Error::config(
            dir.join(CONFIG_FILE),
            "is a grown scalenet model; this command needs a plain timm model directory",
        )),
    }
}

/// Reads `dir/config.json` and `dir/model.safetensors` and builds the model on `device`; `dir`
/// may be a hub id in the local Hugging Face cache (`checkpoint::hub`).
pub fn load_model(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let dir = &super::hub::resolve(dir)?;
    let config = ModelConfig::read(dir)?;
    let file = read_weights(dir)?;
    // Building allocates every tensor the config implies (zeros where the file lacks one)
    // before the key check can name what is missing. That stays within a bound set by the
    // file's size; a config that implies far more than the file holds is refused here.
    let needed = config.arch.min_params();
    let held: u128 = file.tensors.values().map(|t| t.values.len() as u128).sum();
    if needed > held.saturating_mul(4).saturating_add(1 << 24) {
        let v = &config.arch;
        return Err(Error::config(
            dir.join(CONFIG_FILE),
            format!(
                "implies at least {needed} parameters ({} blocks, {} features, num_classes {}, img_size {:?}), but {} holds only {held} values: the config contradicts the weights",
                v.depth(),
                v.num_features(),
                v.num_classes(),
                v.img_size(),
                file.path.display()
            ),
        ));
    }
    let mut src = CheckpointSource::new(file);
    let network = build_network(&config, &mut src, device);
    src.finish()?;
    Ok(LoadedModel { config, network })
}

/// The network `config` describes, its tensors from `src`.
pub fn build_network(config: &ModelConfig, src: &mut dyn WeightSource, device: &Device) -> Network {
    match (&config.arch, &config.growth) {
        (ImageArch::Vit(c), None) => Network::Plain(VisionTransformer::new(c, src, device)),
        (ImageArch::Vit(c), Some(Growth::Stack(spec))) => {
            Network::Grown(GrownVit::new(c, spec, src, device))
        }
        (ImageArch::Swin(c), None) => Network::Swin(SwinTransformer::new(c, src, device)),
        (ImageArch::Swin(c), Some(Growth::Stages(spec))) => {
            Network::GrownSwin(GrownSwin::new(c, spec, src, device))
        }
        (_, Some(_)) => unreachable!("Growth::parse reads the growth kind of the architecture"),
    }
}

/// Saves a plain or grown model; the config's `growth` must match the network.
pub fn save_model(dir: &Path, config: &ModelConfig, network: &Network) -> Result<()> {
    save_dir(dir, &config.to_json(), &network.export().tensors)
}

pub fn read_weights(dir: &Path) -> Result<TensorFile> {
    check_dir(dir)?;
    TensorFile::read(&dir.join(WEIGHTS_FILE))
}

/// Writes `config.json` and `model.safetensors` into `dir` (created if needed). Both files are
/// fully written to temporary names before either is renamed into place.
pub fn save_dir(dir: &Path, config: &Map<String, Value>, tensors: &[NamedTensor]) -> Result<()> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let result = write_model_files(dir, config, tensors);
    if result.is_err() && created {
        // Nothing of a failed save stays behind (remove_dir only takes an empty directory).
        let _ = std::fs::remove_dir(dir);
    }
    result
}

fn write_model_files(
    dir: &Path,
    config: &Map<String, Value>,
    tensors: &[NamedTensor],
) -> Result<()> {
    let weights_path = dir.join(WEIGHTS_FILE);
    let config_path = dir.join(CONFIG_FILE);
    let weights = serialize(tensors).map_err(|msg| Error::Safetensors {
        path: weights_path.clone(),
        msg,
    })?;
    let mut text = serde_json::to_string_pretty(config).expect("a JSON map always serialises");
    text.push('\n');
    let tmp_w = write_temp(&weights_path, &weights)?;
    let tmp_c = match write_temp(&config_path, text.as_bytes()) {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_w);
            return Err(e);
        }
    };
    if let Err(e) = commit(&tmp_w, &weights_path) {
        let _ = std::fs::remove_file(&tmp_c);
        return Err(e);
    }
    commit(&tmp_c, &config_path)
}

/// Saves a plain model in timm's layout.
pub fn save_vit(dir: &Path, config: &ModelConfig, model: &VisionTransformer) -> Result<()> {
    save_dir(dir, &config.to_json(), &model.export().tensors)
}

/// Refuses to write into a directory that already holds a model, unless `force`.
pub fn check_output_dir(dir: &Path, force: bool) -> Result<PathBuf> {
    if dir.is_file() {
        return Err(Error::Refused {
            path: dir.to_path_buf(),
            msg: "is a file; --out needs a directory".into(),
        });
    }
    if !force && (dir.join(CONFIG_FILE).exists() || dir.join(WEIGHTS_FILE).exists()) {
        return Err(Error::Refused {
            path: dir.to_path_buf(),
            msg: "already holds a model; choose another --out or pass --force to overwrite".into(),
        });
    }
    Ok(dir.to_path_buf())
}
