//! One pre-norm transformer block (timm's `Block`):
//! `x = x + ls1(attn(norm1(x)))`, then `x = x + ls2(mlp(norm2(x)))`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::attention::Attention;
use super::config::VitConfig;
use crate::model::layers::{LayerNorm, LayerScale, Linear};
use crate::model::mlp::Mlp;
use crate::model::prenorm::{gate, PreNormBlock};
use crate::model::weights::{TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    /// Present when the config has `init_values`.
    pub ls1: Option<LayerScale>,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub ls2: Option<LayerScale>,
}

impl Block {
    /// Builds `blocks.{index}` (or any other `key`).
    pub fn new(src: &mut dyn WeightSource, key: &str, cfg: &VitConfig, device: &Device) -> Self {
        let d = cfg.embed_dim;
        let ls = |src: &mut dyn WeightSource, name: &str| {
            cfg.init_values
                .map(|v| LayerScale::new(src, &format!("{key}.{name}"), d, v as f32, device))
        };
        Self {
            norm1: LayerNorm::new(src, &format!("{key}.norm1"), d, device),
            attn: Attention::new(
                src,
                &format!("{key}.attn"),
                d,
                cfg.num_heads,
                cfg.qkv_bias,
                device,
            ),
            ls1: ls(src, "ls1"),
            norm2: LayerNorm::new(src, &format!("{key}.norm2"), d, device),
            mlp: Mlp::new(src, &format!("{key}.mlp"), d, cfg.mlp_hidden(), device),
            ls2: ls(src, "ls2"),
        }
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.norm1.export(&format!("{key}.norm1"), out);
        self.attn.export(&format!("{key}.attn"), out);
        if let Some(ls) = &self.ls1 {
            ls.export(&format!("{key}.ls1"), out);
        }
        self.norm2.export(&format!("{key}.norm2"), out);
        self.mlp.export(&format!("{key}.mlp"), out);
        if let Some(ls) = &self.ls2 {
            ls.export(&format!("{key}.ls2"), out);
        }
    }

    pub fn num_params(&self) -> usize {
        self.norm1.num_params()
            + self.attn.num_params()
            + self.ls1.as_ref().map_or(0, LayerScale::num_params)
            + self.norm2.num_params()
            + self.mlp.num_params()
            + self.ls2.as_ref().map_or(0, LayerScale::num_params)
    }
}

impl PreNormBlock for Block {
    type Norm = LayerNorm;
    type Ctx<'a> = ();

    fn norm1(&self) -> &LayerNorm {
        &self.norm1
    }

    fn norm2(&self) -> &LayerNorm {
        &self.norm2
    }

    fn attn(&self, x: Tensor<3>, _: ()) -> Tensor<3> {
        gate(&self.ls1, self.attn.forward(x))
    }

    fn attn_queries(&self, x: Tensor<3>, _: (), keep: usize) -> Tensor<3> {
        gate(&self.ls1, self.attn.forward_queries(x, keep))
    }

    fn mlp(&self, x: Tensor<3>) -> Tensor<3> {
        gate(&self.ls2, self.mlp.forward(x))
    }

    fn export(&self, key: &str, out: &mut TensorSink) {
        Block::export(self, key, out)
    }

    fn num_params(&self) -> usize {
        Block::num_params(self)
    }

    fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        vec![
            ("attn.qkv", &mut self.attn.qkv),
            ("attn.proj", &mut self.attn.proj),
            ("mlp.fc1", &mut self.mlp.fc1),
            ("mlp.fc2", &mut self.mlp.fc2),
        ]
    }
}
