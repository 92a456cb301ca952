//! mmsegmentation's `Feature2Pyramid`: a ViT's four maps, all at the patch stride, become
//! strides ×4 up (two 2×2 transposed convs around BatchNorm and GELU), ×2 up, the same, and
//! ×2 down (2×2 max-pooling): 4, 8, 16, 32 for a patch of 16.

use burn::module::Module;
use burn::tensor::activation::gelu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use super::layers::{BatchNorm2d, Train, Upsample2x};
use crate::model::weights::{TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct Feature2Pyramid {
    /// `upsample_4x.0`, `.1` (BatchNorm), `.3`
    pub up4_a: Upsample2x,
    pub up4_bn: BatchNorm2d,
    pub up4_b: Upsample2x,
    /// `upsample_2x.0`
    pub up2: Upsample2x,
}

impl Feature2Pyramid {
    pub fn new(src: &mut dyn WeightSource, key: &str, dim: usize, device: &Device) -> Self {
        Self {
            up4_a: Upsample2x::new(src, &format!("{key}.upsample_4x.0"), dim, device),
            up4_bn: BatchNorm2d::new(src, &format!("{key}.upsample_4x.1"), dim, device),
            up4_b: Upsample2x::new(src, &format!("{key}.upsample_4x.3"), dim, device),
            up2: Upsample2x::new(src, &format!("{key}.upsample_2x.0"), dim, device),
        }
    }

    /// Four maps in, four maps out.
    pub fn forward(&self, inputs: Vec<Tensor<4>>, train: &mut Train) -> Vec<Tensor<4>> {
        let [a, b, c, d]: [Tensor<4>; 4] = inputs
            .try_into()
            .unwrap_or_else(|v: Vec<_>| panic!("Feature2Pyramid takes 4 maps, got {}", v.len()));
        let a = self
            .up4_b
            .forward(gelu(self.up4_bn.forward(self.up4_a.forward(a), train)));
        let d = max_pool2d(d, MaxPoolOptions::new([2, 2]));
        vec![a, self.up2.forward(b), c, d]
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.up4_a.export(&format!("{key}.upsample_4x.0"), out);
        self.up4_bn.export(&format!("{key}.upsample_4x.1"), out);
        self.up4_b.export(&format!("{key}.upsample_4x.3"), out);
        self.up2.export(&format!("{key}.upsample_2x.0"), out);
    }

    pub fn num_params(&self) -> usize {
        self.up4_a.num_params()
            + self.up4_bn.num_params()
            + self.up4_b.num_params()
            + self.up2.num_params()
    }
}
