//! Either kind of model a directory can hold: a plain timm ViT or a grown ScaleNet model.
//! Commands that only run a model (`forward`, `info`, training) work on both through this.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::growth::GrownVit;
use crate::model::drop_path::DropPath;
use crate::model::{TensorSink, VisionTransformer};

#[derive(Module, Debug)]
pub enum Network {
    Plain(VisionTransformer),
    Grown(GrownVit),
}

impl Network {
    /// `[batch, chans, h, w]` → `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Plain(m) => m.forward(x),
            Network::Grown(m) => m.forward(x),
        }
    }

    /// The training forward, with stochastic depth when `dp` is given.
    pub fn forward_train(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> Tensor<2> {
        match self {
            Network::Plain(m) => m.head.forward(m.forward_features_train(x, dp), false),
            Network::Grown(m) => m.head.forward(m.forward_features_train(x, dp), false),
        }
    }

    /// A small tensor that depends on the last update (the head bias or pos_embed), read to
    /// make sure pending work has finished, e.g. when timing.
    pub fn config_probe(&self) -> Tensor<1> {
        let embed = match self {
            Network::Plain(m) => &m.embed,
            Network::Grown(m) => &m.embed,
        };
        embed.proj_bias.val().slice(0..1)
    }

    /// The classifier and the architecture, for replacing the head.
    pub fn head_mut(
        &mut self,
    ) -> (
        &mut crate::model::head::ClassifierHead,
        &mut crate::config::VitConfig,
    ) {
        match self {
            Network::Plain(m) => (&mut m.head, &mut m.config),
            Network::Grown(m) => (&mut m.head, &mut m.config),
        }
    }

    pub fn config(&self) -> &crate::config::VitConfig {
        match self {
            Network::Plain(m) => &m.config,
            Network::Grown(m) => &m.config,
        }
    }

    /// All tensors under their checkpoint names, in torch layout.
    pub fn export(&self) -> TensorSink {
        match self {
            Network::Plain(m) => m.export(),
            Network::Grown(m) => m.export(),
        }
    }

    /// Block positions the input passes through.
    pub fn depth(&self) -> usize {
        match self {
            Network::Plain(m) => m.blocks.len(),
            Network::Grown(m) => m.positions.len(),
        }
    }
}

/// Either kind of language model a directory (or GGUF file) can hold.
#[derive(Module, Debug)]
pub enum LanguageModel {
    Plain(crate::model::llama::Llama),
    Grown(crate::growth::GrownLlama),
}

impl LanguageModel {
    /// `[batch, tokens]` ids → `[batch, tokens, vocab]` logits; with a cache, continuing it.
    pub fn forward(
        &self,
        ids: Tensor<2, burn::tensor::Int>,
        cache: Option<&mut crate::model::llama::KvCache>,
    ) -> Tensor<3> {
        match self {
            LanguageModel::Plain(m) => m.forward(ids, cache),
            LanguageModel::Grown(m) => m.forward(ids, cache),
        }
    }

    pub fn new_cache(&self) -> crate::model::llama::KvCache {
        match self {
            LanguageModel::Plain(m) => m.new_cache(),
            LanguageModel::Grown(m) => m.new_cache(),
        }
    }

    /// The architecture (for a grown model, its base's).
    pub fn config(&self) -> &crate::model::llama::LlamaConfig {
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

    pub fn growth(&self) -> Option<&crate::growth::GrowthSpec> {
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
