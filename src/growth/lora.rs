//! A position's LoRA, Relaxed Recursive Transformers' relaxation (Bae et al., 2024): each
//! linear layer `W` of the shared block the position runs becomes `W + scale · B A` for the
//! position alone. A `[rank, in]` is drawn as PEFT draws it (kaiming-uniform, a = √5) and B
//! `[out, rank]` starts at zero, so a fresh position computes its shared block. Checkpoints
//! name them as PEFT does: `{position}.lora.{linear}.lora_A.weight` and `lora_B.weight`.

use burn::module::{Module, Param, ParamId};
use burn::tensor::Device;

use super::plan::LoraSpec;
use crate::model::layers::Linear;
use crate::model::prenorm::PreNormBlock;
use crate::model::weights::{Init, TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct PositionLora {
    /// Per linear layer, in the block's `linears_mut` order: A as an `in → rank` layer.
    pub a: Vec<Linear>,
    /// B as a `rank → out` layer.
    pub b: Vec<Linear>,
    #[module(skip)]
    pub names: Vec<&'static str>,
    pub scale: f64,
}

impl PositionLora {
    /// The LoRA under `{key}.lora` for the linear layers of `base`.
    pub fn new<B: PreNormBlock>(
        src: &mut dyn WeightSource,
        key: &str,
        spec: &LoraSpec,
        base: &B,
        device: &Device,
    ) -> Self {
        let mut block = base.clone();
        let (mut a, mut b, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for (name, lin) in block.linears_mut() {
            let (d_in, d_out, r) = (lin.d_in(), lin.d_out(), spec.rank);
            let k = format!("{key}.lora.{name}");
            let init_a = (Init::torch_default(d_in), Init::ZEROS);
            a.push(Linear::new(
                src,
                &format!("{k}.lora_A"),
                d_in,
                r,
                false,
                init_a,
                device,
            ));
            let init_b = (Init::ZEROS, Init::ZEROS);
            b.push(Linear::new(
                src,
                &format!("{k}.lora_B"),
                r,
                d_out,
                false,
                init_b,
                device,
            ));
            names.push(name);
        }
        Self {
            a,
            b,
            names,
            scale: spec.scale,
        }
    }

    /// `block` with each linear weight `W + scale · B A`. The sum is a new tensor of the
    /// autodiff graph (not a leaf), so gradients reach the shared `W` and this position's A
    /// and B alike.
    pub fn relax<B: PreNormBlock>(&self, block: &B) -> B {
        let mut relaxed = block.clone();
        for ((_, lin), (a, b)) in relaxed
            .linears_mut()
            .into_iter()
            .zip(self.a.iter().zip(&self.b))
        {
            // Linear keeps W as [in, out]: A [in, r] · B [r, out] is (B A)ᵀ.
            let delta = a.weight.val().matmul(b.weight.val()) * self.scale;
            lin.weight = Param::initialized(ParamId::new(), lin.weight.val() + delta);
        }
        relaxed
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        for ((name, a), b) in self.names.iter().zip(&self.a).zip(&self.b) {
            a.export(&format!("{key}.lora.{name}.lora_A"), out);
            b.export(&format!("{key}.lora.{name}.lora_B"), out);
        }
    }

    pub fn num_params(&self) -> usize {
        self.a.iter().chain(&self.b).map(Linear::num_params).sum()
    }
}
