//! The small parts a ViT is made of: `Linear` (torch key layout, burn memory layout),
//! `LayerNorm` with timm's eps, and `LayerScale`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use super::weights::{param, transpose, vector, Init, TensorSink, WeightSource};

/// timm's `LayerNorm` epsilon for ViTs (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LN_EPS: f64 = 1e-6;

/// `y = x W + b`, with W kept as `[d_in, d_out]` in memory and `[d_out, d_in]` in checkpoints.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_in, d_out]`
    pub weight: Param<Tensor<2>>,
    /// `[d_out]`
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// Loads or initialises `{key}.weight` (torch `[d_out, d_in]`) and `{key}.bias`.
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        init: (Init, Init),
        device: &Device,
    ) -> Self {
        let w = src.tensor(&format!("{key}.weight"), &[d_out, d_in], init.0);
        let weight = param(transpose(&w, d_out, d_in), [d_in, d_out], device);
        let bias = bias.then(|| {
            param(
                src.tensor(&format!("{key}.bias"), &[d_out], init.1),
                [d_out],
                device,
            )
        });
        Self { weight, bias }
    }

    /// timm's init for every `nn.Linear` in a ViT: trunc-normal(0.02) weights, zero biases.
    pub fn timm_init() -> (Init, Init) {
        (Init::TruncNormal(0.02), Init::ZEROS)
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::ops::linear(x, self.weight.val(), self.bias.as_ref().map(Param::val))
    }

    pub fn d_in(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        out.push(format!("{key}.weight"), self.weight.val().transpose());
        if let Some(b) = &self.bias {
            out.push(format!("{key}.bias"), b.val());
        }
    }

    pub fn num_params(&self) -> usize {
        self.d_in() * self.d_out() + self.bias.as_ref().map_or(0, |_| self.d_out())
    }
}

/// LayerNorm over the last dimension with affine weight and bias.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    /// `LN_EPS` in a ViT; torch's default 1e-5 in a Swin.
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    /// A ViT's LayerNorm (eps 1e-6).
    pub fn new(src: &mut dyn WeightSource, key: &str, dim: usize, device: &Device) -> Self {
        Self::with_eps(src, key, dim, LN_EPS, device)
    }

    pub fn with_eps(
        src: &mut dyn WeightSource,
        key: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Self {
        let weight = vector(src, &format!("{key}.weight"), dim, Init::ONES, device);
        let bias = vector(src, &format!("{key}.bias"), dim, Init::ZEROS, device);
        Self { eps, weight, bias }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::ops::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        out.push(format!("{key}.weight"), self.weight.val());
        out.push(format!("{key}.bias"), self.bias.val());
    }

    pub fn num_params(&self) -> usize {
        2 * self.weight.dims()[0]
    }
}

/// Per-channel gate on a residual branch (timm's `LayerScale`, key `{key}.gamma`).
#[derive(Module, Debug)]
pub struct LayerScale {
    pub gamma: Param<Tensor<1>>,
}

impl LayerScale {
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        dim: usize,
        init: f32,
        device: &Device,
    ) -> Self {
        Self {
            gamma: vector(src, &format!("{key}.gamma"), dim, Init::Const(init), device),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        x * self.gamma.val().unsqueeze::<3>()
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        out.push(format!("{key}.gamma"), self.gamma.val());
    }

    pub fn num_params(&self) -> usize {
        self.gamma.dims()[0]
    }
}
