//! The dispatch over image families: an architecture is a ViT or a Swin with its keyword
//! arguments, and a preset name finds its family here. No family imports this file; it sits
//! above them all.

use serde_json::{Map, Value};

use super::image::{GlobalPool, PretrainedCfg};
use super::swin::config::{self as swin_config, SwinConfig};
use super::vit::config::{self as vit_config, VitConfig};

/// The architecture of a timm image model: the model family with its keyword arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageArch {
    Vit(VitConfig),
    Swin(SwinConfig),
}

impl ImageArch {
    /// The preset `name` names (a pretrained tag such as `.augreg_in21k` is ignored), with its
    /// canonical name and input preparation.
    pub fn preset(name: &str) -> Option<(&'static str, ImageArch, PretrainedCfg)> {
        if let Some(p) = vit_config::preset(name) {
            return Some((p.name, ImageArch::Vit(p.config), p.pretrained_cfg));
        }
        swin_config::preset(name).map(|(n, c, p)| (n, ImageArch::Swin(c), p))
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

impl PretrainedCfg {
    /// Makes `input_size` and `num_classes` agree with the model, as timm does for a model
    /// created with non-default arguments; mean/std are repeated or averaged to the channel count.
    pub fn conform_to(&mut self, arch: &ImageArch) {
        self.conform(arch.in_chans(), arch.img_size(), arch.num_classes())
    }
}

/// Names of all presets, in a stable order.
pub fn preset_names() -> impl Iterator<Item = &'static str> {
    vit_config::preset_names().chain(swin_config::preset_names())
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
    fn presets_validate() {
        for name in preset_names() {
            let (_, arch, _) = ImageArch::preset(name).unwrap();
            arch.validate().unwrap();
        }
    }
}
