//! Either kind of model a directory can hold: a plain timm ViT or a grown ScaleNet model.
//! Commands that only run a model (`forward`, `info`, training) work on both through this.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::growth::GrownVit;
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
