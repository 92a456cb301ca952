//! torchvision's `FeaturePyramidNetwork` (1×1 laterals, nearest-neighbour top-down path, 3×3
//! outputs, all with bias, no norm) with `LastLevelP6P7` computed from P5, as
//! `retinanet_resnet50_fpn` builds it; keys `neck.fpn.inner_blocks.{i}.0`,
//! `neck.fpn.layer_blocks.{i}.0`, `neck.fpn.extra_blocks.p6` / `.p7`.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use crate::model::weights::{Init, TensorSink, WeightSource};
use crate::segment::layers::Conv2d;

#[derive(Module, Debug)]
pub struct Fpn {
    pub inner: Vec<Conv2d>,
    pub layer: Vec<Conv2d>,
    pub p6: Conv2d,
    pub p7: Conv2d,
}

/// torchvision's FPN initialisation: `kaiming_uniform_(a=1)`, zero bias.
fn fpn_init(fan_in: usize) -> (Init, Option<Init>) {
    (
        Init::Uniform((3.0 / fan_in as f64).sqrt()),
        Some(Init::ZEROS),
    )
}

impl Fpn {
    /// `dims`: the channels of each input level, finest first; `c` the pyramid's width.
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        dims: &[usize],
        c: usize,
        device: &Device,
    ) -> Self {
        let mut conv = |name: String, cin: usize, k: usize| {
            let pad = k / 2;
            Conv2d::with_init(src, &name, [cin, c, k, pad], fpn_init(cin * k * k), device)
        };
        let inner = (dims.iter().enumerate())
            .map(|(i, &d)| conv(format!("{key}.inner_blocks.{i}.0"), d, 1))
            .collect();
        let layer = (0..dims.len())
            .map(|i| conv(format!("{key}.layer_blocks.{i}.0"), c, 3))
            .collect();
        Self {
            inner,
            layer,
            p6: conv(format!("{key}.extra_blocks.p6"), c, 3).strided(2),
            p7: conv(format!("{key}.extra_blocks.p7"), c, 3).strided(2),
        }
    }

    /// The pyramid's levels, finest first: one per input, then P6 and P7.
    pub fn forward(&self, maps: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
        let n = maps.len();
        let mut maps = maps.into_iter().rev();
        let mut last = self.inner[n - 1].forward(maps.next().expect("at least one level"));
        let mut out = vec![self.layer[n - 1].forward(last.clone())];
        for (idx, x) in (0..n - 1).rev().zip(maps) {
            let lateral = self.inner[idx].forward(x);
            let [_, _, h, w] = lateral.dims();
            let opts = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]);
            last = lateral + interpolate(last, opts);
            out.push(self.layer[idx].forward(last.clone()));
        }
        out.reverse();
        let p6 = self.p6.forward(out[n - 1].clone());
        let p7 = self.p7.forward(relu(p6.clone()));
        out.extend([p6, p7]);
        out
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        for (i, (a, b)) in self.inner.iter().zip(&self.layer).enumerate() {
            a.export(&format!("{key}.inner_blocks.{i}.0"), out);
            b.export(&format!("{key}.layer_blocks.{i}.0"), out);
        }
        self.p6.export(&format!("{key}.extra_blocks.p6"), out);
        self.p7.export(&format!("{key}.extra_blocks.p7"), out);
    }

    pub fn num_params(&self) -> usize {
        let convs = self
            .inner
            .iter()
            .chain(&self.layer)
            .chain([&self.p6, &self.p7]);
        convs.map(Conv2d::num_params).sum()
    }
}
