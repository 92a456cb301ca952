//! Segmentation model directories: `config.json` holds the backbone's own config (a timm
//! config, a grown one's `scalenet` block included) under `backbone`, the head's settings,
//! `num_classes`, `ignore_index` and the input's mean/std; `model.safetensors` holds every
//! tensor under mmsegmentation's names (`backbone.*`, `neck.*`, `decode_head.*`,
//! `auxiliary_head.*`).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Device;
use serde_json::{Map, Value};

use super::model_dir::{
    build_network, read_config_text, read_weights, save_dir, CheckpointSource, ModelConfig,
    CONFIG_FILE,
};
use crate::error::{Error, Result};
use crate::growth::plan::Growth;
use crate::model::arch::ImageArch;
use crate::model::weights::{Init, RandomInit, WeightSource};
use crate::segment::head::POOL_SCALES;
use crate::segment::{AuxSpec, HeadKind, SegSpec, Segmentor};

/// A parsed segmentation `config.json`.
#[derive(Clone, Debug)]
pub struct SegModelConfig {
    pub backbone: ModelConfig,
    pub spec: SegSpec,
    pub ignore_index: u32,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// The `architecture` of a model built around a backbone (its config names one): a
/// segmentor's head or a detector's name; `None` for any other directory.
pub fn head_architecture(dir: &Path) -> Option<String> {
    let v = std::fs::read_to_string(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())?;
    v.get("backbone").filter(|b| b.is_object())?;
    Some(
        v.get("architecture")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    )
}

/// Whether `dir` holds a segmentation model (its config names a backbone, and no detector).
pub fn is_segmentation_dir(dir: &Path) -> bool {
    head_architecture(dir).is_some_and(|a| a != crate::detect::ARCHITECTURE)
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
        let obj = Value::Object(raw.clone());
        let stats = |key: &str, default: f64| {
            channel_stats(&obj, key, vec![default; chans], chans).map_err(bad)
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
        let (path, text) = read_config_text(dir)?;
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

/// A config's per-channel input `mean` or `std` (`default` where absent), one value per input
/// channel.
pub(super) fn channel_stats(
    obj: &Value,
    key: &str,
    default: Vec<f64>,
    chans: usize,
) -> std::result::Result<Vec<f64>, String> {
    let v: Vec<f64> = opt_field(obj, key)?.unwrap_or(default);
    if v.len() != chans {
        let n = v.len();
        return Err(format!("'{key}' has {n} values for {chans} input channels"));
    }
    Ok(v)
}

pub(super) fn opt_field<T: serde::de::DeserializeOwned>(
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
    let backbone = prefixed_backbone(&config.backbone, &mut src, device);
    let seg = Segmentor::new(&config.spec, backbone, &mut src, device);
    src.finish()?;
    Ok((config, seg))
}

/// A dense model's backbone, its tensors under `backbone.` in `src`.
pub fn prefixed_backbone(
    config: &ModelConfig,
    src: &mut CheckpointSource,
    device: &Device,
) -> crate::network::Network {
    let mut prefixed =
        |k: &str, shape: &[usize], init: Init| src.tensor(&format!("backbone.{k}"), shape, init);
    build_network(config, &mut prefixed, device)
}

/// Writes `config.json` and `model.safetensors` (each to a temporary name, then renamed).
pub fn save_segmentor(dir: &Path, config: &SegModelConfig, seg: &Segmentor) -> Result<()> {
    save_dir(dir, &config.to_json(), &seg.export().tensors)
}

/// timm's `resample_abs_pos_embed` (bicubic, antialiased): a `[1, prefix + gh·gw, dim]` table
/// for grid `old` becomes one for grid `new`, the prefix tokens' rows unchanged.
pub fn resample_pos_embed(
    values: &[f32],
    prefix: usize,
    old: [usize; 2],
    new: [usize; 2],
    dim: usize,
) -> Vec<f32> {
    if old == new {
        return values.to_vec();
    }
    let patches = &values[prefix * dim..];
    // [gh·gw, dim] → [dim, gh, gw], the layout `resize` takes.
    let planes: Vec<f32> = (0..dim)
        .flat_map(|c| (0..old[0] * old[1]).map(move |p| patches[p * dim + c]))
        .collect();
    let scaled = crate::data::transform::resize(&planes, dim, old[0], old[1], new[0], new[1], true);
    let n = new[0] * new[1];
    let mut out = values[..prefix * dim].to_vec();
    out.extend(
        (0..n)
            .flat_map(|p| (0..dim).map(move |c| (p, c)))
            .map(|(p, c)| scaled[c * n + p]),
    );
    out
}

/// The (plain or grown) image model in `dir` as the backbone of a new dense model, at input
/// side `img_size` (`None`: its own): the resolved directory, its config and the network. At
/// another size a ViT's position table is resampled as timm does; a Swin's windows and masks
/// follow the new grid (its tables do not depend on it unless a window must shrink).
pub fn backbone_around(
    dir: &Path,
    img_size: Option<usize>,
    device: &Device,
) -> Result<(std::path::PathBuf, ModelConfig, crate::network::Network)> {
    let dir = super::hub::resolve(dir)?;
    if let Some(arch) = head_architecture(&dir) {
        let what = match arch.as_str() {
            crate::detect::ARCHITECTURE => "detection",
            _ => "segmentation",
        };
        return Err(Error::config(
            dir.join(CONFIG_FILE),
            format!("is already a {what} model; --backbone takes an image classifier's directory"),
        ));
    }
    let old = ModelConfig::read(&dir)?;
    let backbone = match img_size {
        Some(s) => resized_config(&dir, &old, s)?,
        None => old.clone(),
    };
    let mut file = read_weights(&dir)?;
    let pos = file.tensors.remove("pos_embed");
    let mut src = CheckpointSource::new(file);
    let network = {
        let mut resampling =
            |k: &str, shape: &[usize], init: Init| match (&pos, &old.arch, &backbone.arch) {
                (Some(t), ImageArch::Vit(o), ImageArch::Vit(n)) if k == "pos_embed" => {
                    let prefix = o.num_tokens() - o.grid()[0] * o.grid()[1];
                    resample_pos_embed(&t.values, prefix, o.grid(), n.grid(), o.embed_dim)
                }
                _ => src.tensor(k, shape, init),
            };
        build_network(&backbone, &mut resampling, device)
    };
    src.finish()?;
    Ok((dir, backbone, network))
}

/// The input's mean and std a new dense model takes from its backbone's `pretrained_cfg`
/// (0.5 per channel where it says nothing).
pub fn input_stats(backbone: &ModelConfig) -> [Vec<f64>; 2] {
    let chans = backbone.arch.in_chans();
    let stat = |v: Option<Vec<f64>>| -> Vec<f64> {
        v.filter(|v| v.len() >= chans)
            .map_or(vec![0.5; chans], |v| v[..chans].to_vec())
    };
    [
        stat(backbone.pretrained_cfg.mean()),
        stat(backbone.pretrained_cfg.std()),
    ]
}

/// What `scalenet init --arch upernet --backbone DIR` asks for.
#[derive(Clone, Debug)]
pub struct SegInit {
    pub head: HeadKind,
    pub num_classes: usize,
    pub channels: usize,
    /// UperNet's auxiliary head width (mmsegmentation's 256 beside 512).
    pub aux_channels: usize,
    /// The input side the segmentor runs at; `None` keeps the backbone's.
    pub img_size: Option<usize>,
    pub seed: u64,
}

/// A segmentor with fresh heads around the (plain or grown) image model in `dir`
/// ([`backbone_around`]).
pub fn segmentor_around(
    dir: &Path,
    opts: &SegInit,
    device: &Device,
) -> Result<(SegModelConfig, Segmentor)> {
    let (dir, backbone, network) = backbone_around(dir, opts.img_size, device)?;
    let depth = match &backbone.growth {
        Some(Growth::Stack(g)) => g.layer_map.len(),
        _ => backbone.arch.depth(),
    };
    let levels = match &backbone.arch {
        ImageArch::Swin(c) => c.stages().len(),
        ImageArch::Vit(_) => 4,
    };
    let spec = SegSpec {
        head: opts.head,
        num_classes: opts.num_classes,
        channels: opts.channels,
        pool_scales: POOL_SCALES.to_vec(),
        dropout_ratio: 0.1,
        aux: (opts.head == HeadKind::Upernet).then(|| AuxSpec {
            channels: opts.aux_channels,
            in_index: 2.min(levels - 1),
            loss_weight: 0.4,
        }),
        out_indices: crate::model::vit::default_out_indices(depth, 4),
    };
    spec.check(&backbone.arch, depth)
        .map_err(|m| Error::config(dir.join(CONFIG_FILE), m))?;
    let [mean, std] = input_stats(&backbone);
    let config = SegModelConfig {
        mean,
        std,
        ignore_index: 255,
        backbone,
        spec,
    };
    let seg = Segmentor::new(
        &config.spec,
        network,
        &mut RandomInit::new(opts.seed),
        device,
    );
    Ok((config, seg))
}

/// The backbone's config with `img_size` set to `side` (square), as `model_args` says it.
fn resized_config(dir: &Path, old: &ModelConfig, side: usize) -> Result<ModelConfig> {
    let mut raw = old.to_json();
    let args = raw
        .entry("model_args")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = args {
        m.insert("img_size".into(), serde_json::json!([side, side]));
    }
    if let Some(Value::Object(p)) = raw.get_mut("pretrained_cfg") {
        p.insert(
            "input_size".into(),
            serde_json::json!([old.arch.in_chans(), side, side]),
        );
    }
    ModelConfig::parse(&dir.join(CONFIG_FILE), &Value::Object(raw).to_string())
}

/// A segmentor's backbone, and the rest of its tensors (stage norms, neck, heads) by name.
pub fn split_backbone(seg: Segmentor) -> (crate::network::Network, HashMap<String, Vec<f32>>) {
    let stage_norm = |k: &str| {
        k.strip_prefix("backbone.norm")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    let heads = seg
        .export()
        .tensors
        .into_iter()
        .filter(|t| !t.name.starts_with("backbone.") || stage_norm(&t.name))
        .map(|t| (t.name, t.values))
        .collect();
    (seg.backbone, heads)
}

/// The segmentor of `config` with another backbone (grown, or deepened without sharing) of the
/// same widths, its stage norms, neck and heads from `heads` ([`split_backbone`]). A ViT's
/// `out_indices` are chosen anew over the new depth.
pub fn with_backbone(
    config: &SegModelConfig,
    mut heads: HashMap<String, Vec<f32>>,
    backbone: ModelConfig,
    network: crate::network::Network,
    device: &Device,
) -> (SegModelConfig, Segmentor) {
    let depth = match &backbone.growth {
        Some(Growth::Stack(g)) => g.layer_map.len(),
        _ => backbone.arch.depth(),
    };
    let mut spec = config.spec.clone();
    spec.out_indices = crate::model::vit::default_out_indices(depth, 4);
    let mut src =
        |k: &str, _: &[usize], _: Init| heads.remove(k).expect("the segmentor's own tensors");
    let seg = Segmentor::new(&spec, network, &mut src, device);
    (
        SegModelConfig {
            backbone,
            spec,
            ..config.clone()
        },
        seg,
    )
}
