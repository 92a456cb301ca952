//! Every kind of model a directory can hold: a plain timm ViT or Swin, or either grown by
//! ScaleNet; and the language models.
//! Commands that only run a model (`forward`, `info`, training) work on all of them through this.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::growth::swin::GrownSwin;
use crate::growth::vit::GrownVit;
use crate::model::arch::ImageArch;
use crate::model::drop_path::DropPath;
use crate::model::layers::Linear;
use crate::model::swin::SwinTransformer;
use crate::model::vit::VisionTransformer;
use crate::model::weights::{Init, TensorSink, WeightSource};

#[derive(Module, Debug)]
pub enum Network {
    Plain(VisionTransformer),
    Grown(GrownVit),
    Swin(SwinTransformer),
    GrownSwin(GrownSwin),
}

impl Network {
    /// `[batch, chans, h, w]` → `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Plain(m) => m.forward(x),
            Network::Grown(m) => m.forward(x),
            Network::Swin(m) => m.forward(x),
            Network::GrownSwin(m) => m.forward(x),
        }
    }

    /// The training forward, with stochastic depth when `dp` is given.
    pub fn forward_train(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> Tensor<2> {
        match self {
            Network::Plain(m) => m.forward_train(x, dp),
            Network::Grown(m) => m.forward_train(x, dp),
            Network::Swin(m) => m.ends.head(m.forward_features_train(x, dp), false),
            Network::GrownSwin(m) => m.ends.head(m.forward_features_train(x, dp), false),
        }
    }

    /// Feature maps `[batch, c, h, w]` for a dense head: a Swin's stage outputs (all of them),
    /// a ViT's outputs of blocks (a grown ViT's positions) `vit_indices`, on the patch grid.
    pub fn feature_maps(
        &self,
        x: Tensor<4>,
        vit_indices: &[usize],
        dp: &mut Option<&mut DropPath>,
    ) -> Vec<Tensor<4>> {
        match self {
            Network::Plain(m) => m.forward_intermediates(x, vit_indices, dp),
            Network::Grown(m) => m.forward_intermediates(x, vit_indices, dp),
            Network::Swin(m) => m.forward_stages(x, dp),
            Network::GrownSwin(m) => m.forward_stages(x, dp),
        }
    }

    /// A small tensor that depends on the last update (the patch projection's bias), read to
    /// make sure pending work has finished, e.g. when timing.
    pub fn config_probe(&self) -> Tensor<1> {
        let bias = match self {
            Network::Plain(m) => &m.embed.proj_bias,
            Network::Grown(m) => &m.embed.proj_bias,
            Network::Swin(m) => &m.ends.proj_bias,
            Network::GrownSwin(m) => &m.ends.proj_bias,
        };
        bias.val().slice(0..1)
    }

    /// The architecture (for a grown model, its base's).
    pub fn arch(&self) -> ImageArch {
        match self {
            Network::Plain(m) => ImageArch::Vit(m.config.clone()),
            Network::Grown(m) => ImageArch::Vit(m.config.clone()),
            Network::Swin(m) => ImageArch::Swin(m.config().clone()),
            Network::GrownSwin(m) => ImageArch::Swin(m.config().clone()),
        }
    }

    /// Replaces the classifier with a fresh one for `k` classes (timm's head init).
    pub fn reset_head(&mut self, k: usize, src: &mut dyn WeightSource, device: &Device) {
        let fresh = |src: &mut dyn WeightSource, key: &str, d: usize| {
            Linear::new(
                src,
                key,
                d,
                k,
                true,
                (Init::TruncNormal(0.02), Init::ZEROS),
                device,
            )
        };
        match self {
            Network::Plain(VisionTransformer { head, config, .. })
            | Network::Grown(GrownVit { head, config, .. }) => {
                config.num_classes = k;
                head.head = Some(fresh(src, "head", config.embed_dim));
                if head.head_dist.is_some() {
                    head.head_dist = Some(fresh(src, "head_dist", config.embed_dim));
                }
            }
            Network::Swin(SwinTransformer { ends, .. })
            | Network::GrownSwin(GrownSwin { ends, .. }) => {
                ends.config.num_classes = k;
                ends.fc = Some(fresh(src, "head.fc", ends.config.num_features()));
            }
        }
    }

    /// All tensors under their checkpoint names, in torch layout.
    pub fn export(&self) -> TensorSink {
        match self {
            Network::Plain(m) => m.export(),
            Network::Grown(m) => m.export(),
            Network::Swin(m) => m.export(),
            Network::GrownSwin(m) => m.export(),
        }
    }

    /// Block positions the input passes through.
    pub fn depth(&self) -> usize {
        match self {
            Network::Plain(m) => m.blocks.len(),
            Network::Grown(m) => m.positions.len(),
            Network::Swin(m) => m.depth(),
            Network::GrownSwin(m) => m.depth(),
        }
    }

    /// Parameters held (shared tensors once).
    pub fn num_params(&self) -> usize {
        match self {
            Network::Plain(m) => m.param_counts().total(),
            Network::Grown(m) => m.param_counts().total(),
            Network::Swin(m) => m.num_params(),
            Network::GrownSwin(m) => m.param_counts().total(),
        }
    }
}

/// Either kind of language model a directory (or GGUF file) can hold.
#[derive(Module, Debug)]
pub enum LanguageModel {
    Plain(crate::model::llama::Llama),
    Grown(crate::growth::llama::GrownLlama),
}

impl LanguageModel {
    /// `[batch, tokens]` ids → `[batch, tokens, vocab]` logits; with a cache, continuing it.
    pub fn forward(
        &self,
        ids: Tensor<2, burn::tensor::Int>,
        cache: Option<&mut crate::model::llama::block::KvCache>,
    ) -> Tensor<3> {
        self.forward_logits(ids, cache, crate::model::llama::Logits::All)
    }

    /// [`forward`](Self::forward) with the logits of every token or of the last only.
    pub fn forward_logits(
        &self,
        ids: Tensor<2, burn::tensor::Int>,
        cache: Option<&mut crate::model::llama::block::KvCache>,
        logits: crate::model::llama::Logits,
    ) -> Tensor<3> {
        match self {
            LanguageModel::Plain(m) => m.forward_logits(ids, cache, logits),
            LanguageModel::Grown(m) => m.forward_logits(ids, cache, logits),
        }
    }

    pub fn new_cache(&self) -> crate::model::llama::block::KvCache {
        match self {
            LanguageModel::Plain(m) => m.new_cache(),
            LanguageModel::Grown(m) => m.new_cache(),
        }
    }

    /// The architecture (for a grown model, its base's).
    pub fn config(&self) -> &crate::model::llama::config::LlamaConfig {
        match self {
            LanguageModel::Plain(m) => &m.config,
            LanguageModel::Grown(m) => &m.config,
        }
    }

    /// A small tensor that depends on the last update (the final norm), read to make sure
    /// pending work has finished, e.g. when timing.
    pub fn probe(&self) -> Tensor<1> {
        let ends = match self {
            LanguageModel::Plain(m) => &m.ends,
            LanguageModel::Grown(m) => &m.ends,
        };
        ends.norm.weight.val().slice(0..1)
    }

    pub fn growth(&self) -> Option<&crate::growth::plan::GrowthSpec> {
        match self {
            LanguageModel::Plain(_) => None,
            LanguageModel::Grown(m) => Some(&m.spec),
        }
    }

    /// All tensors under their checkpoint names, in torch layout.
    pub fn export(&self) -> TensorSink {
        match self {
            LanguageModel::Plain(m) => m.export(),
            LanguageModel::Grown(m) => m.export(),
        }
    }

    pub fn num_params(&self) -> usize {
        match self {
            LanguageModel::Plain(m) => m.num_params(),
            LanguageModel::Grown(m) => m.param_counts().total(),
        }
    }

    /// Block positions the input passes through.
    pub fn depth(&self) -> usize {
        match self {
            LanguageModel::Plain(m) => m.layers.len(),
            LanguageModel::Grown(m) => m.positions.len(),
        }
    }
}
