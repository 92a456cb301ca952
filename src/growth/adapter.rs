//! The per-position parallel adapter: `a(z) = s · (W_up · act(W_down · z + b_down) + b_up)`.
//! `W_up` starts at zero, so a fresh adapter adds nothing and the grown model starts from the
//! function its initialisation defines.

use burn::module::Module;
use burn::tensor::activation::relu;

use crate::ops::gelu;
use burn::tensor::{Device, Tensor};

use super::plan::Activation;
use crate::model::layers::Linear;
use crate::model::weights::{Init, TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct Adapter {
    /// d → r; torch-initialised weight (kaiming-uniform, a = sqrt(5)), zero bias.
    pub down: Linear,
    /// r → d; zero weight and bias.
    pub up: Linear,
    pub scale: f64,
    /// Whether the activation is GELU (exact) rather than ReLU.
    pub gelu: bool,
}

impl Adapter {
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        dim: usize,
        rank: usize,
        scale: f64,
        activation: Activation,
        device: &Device,
    ) -> Self {
        Self {
            down: Linear::new(
                src,
                &format!("{key}.down"),
                dim,
                rank,
                true,
                (Init::torch_default(dim), Init::ZEROS),
                device,
            ),
            up: Linear::new(
                src,
                &format!("{key}.up"),
                rank,
                dim,
                true,
                (Init::ZEROS, Init::ZEROS),
                device,
            ),
            scale,
            gelu: activation == Activation::Gelu,
        }
    }

    /// `[batch, tokens, dim]` → `[batch, tokens, dim]`
    pub fn forward(&self, z: Tensor<3>) -> Tensor<3> {
        let h = self.down.forward(z);
        let h = if self.gelu { gelu(h) } else { relu(h) };
        self.up.forward(h) * self.scale
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.down.export(&format!("{key}.down"), out);
        self.up.export(&format!("{key}.up"), out);
    }

    pub fn num_params(&self) -> usize {
        self.down.num_params() + self.up.num_params()
    }
}
