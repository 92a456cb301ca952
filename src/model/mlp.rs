//! The transformer MLP: `fc1` → exact (erf) GELU → `fc2`, as timm's `Mlp`.

use crate::ops::gelu;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::layers::Linear;
use super::weights::{TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        dim: usize,
        hidden: usize,
        device: &Device,
    ) -> Self {
        Self {
            fc1: Linear::new(
                src,
                &format!("{key}.fc1"),
                dim,
                hidden,
                true,
                Linear::timm_init(),
                device,
            ),
            fc2: Linear::new(
                src,
                &format!("{key}.fc2"),
                hidden,
                dim,
                true,
                Linear::timm_init(),
                device,
            ),
        }
    }

    /// `[batch, tokens, dim]` → `[batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.fc1.export(&format!("{key}.fc1"), out);
        self.fc2.export(&format!("{key}.fc2"), out);
    }

    pub fn num_params(&self) -> usize {
        self.fc1.num_params() + self.fc2.num_params()
    }
}
