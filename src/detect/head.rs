//! torchvision's `RetinaNetHead` (v1, no norm): a classification and a box subnet, each four
//! 3×3 convs with ReLU and a 3×3 output conv, shared across levels; keys
//! `head.classification_head.{conv.{i}.0, cls_logits}` and
//! `head.regression_head.{conv.{i}.0, bbox_reg}`, initialised as torchvision does.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::model::weights::{Init, TensorSink, WeightSource};
use crate::segment::layers::Conv2d;

/// The classification bias starts every anchor at this foreground probability.
const PRIOR: f64 = 0.01;

#[derive(Module, Debug)]
pub struct Subnet {
    pub convs: Vec<Conv2d>,
    pub out: Conv2d,
    /// What each anchor predicts: the classes, or 4 box offsets.
    #[module(skip)]
    pub per_anchor: usize,
}

impl Subnet {
    fn new(
        src: &mut dyn WeightSource,
        [key, out_name]: [&str; 2],
        [c, anchors, per_anchor]: [usize; 3],
        out_bias: f32,
        device: &Device,
    ) -> Self {
        let normal = Init::Normal(0.01);
        let convs = (0..4)
            .map(|i| {
                let k = format!("{key}.conv.{i}.0");
                Conv2d::with_init(src, &k, [c, c, 3, 1], (normal, Some(Init::ZEROS)), device)
            })
            .collect();
        let dims = [c, anchors * per_anchor, 3, 1];
        let inits = (normal, Some(Init::Const(out_bias)));
        let out = Conv2d::with_init(src, &format!("{key}.{out_name}"), dims, inits, device);
        Self {
            convs,
            out,
            per_anchor,
        }
    }

    /// Every level's output as `[n, h·w·anchors, per_anchor]`, levels concatenated.
    pub fn forward(&self, levels: &[Tensor<4>]) -> Tensor<3> {
        let outs = levels.iter().map(|x| {
            let x = self.convs.iter().fold(x.clone(), |x, c| relu(c.forward(x)));
            let y = self.out.forward(x);
            let [n, ak, h, w] = y.dims();
            let k = self.per_anchor;
            y.reshape([n, ak / k, k, h, w])
                .permute([0, 3, 4, 1, 2])
                .reshape([n, h * w * (ak / k), k])
        });
        Tensor::cat(outs.collect(), 1)
    }

    fn export(&self, key: &str, out_name: &str, out: &mut TensorSink) {
        for (i, c) in self.convs.iter().enumerate() {
            c.export(&format!("{key}.conv.{i}.0"), out);
        }
        self.out.export(&format!("{key}.{out_name}"), out);
    }

    fn num_params(&self) -> usize {
        self.convs.iter().map(Conv2d::num_params).sum::<usize>() + self.out.num_params()
    }
}

#[derive(Module, Debug)]
pub struct RetinaHead {
    pub cls: Subnet,
    pub reg: Subnet,
}

const CLS: [&str; 2] = ["classification_head", "cls_logits"];
const REG: [&str; 2] = ["regression_head", "bbox_reg"];

impl RetinaHead {
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        [c, anchors, classes]: [usize; 3],
        device: &Device,
    ) -> Self {
        let prior = -((1.0 - PRIOR) / PRIOR).ln() as f32;
        let cls_key = format!("{key}.{}", CLS[0]);
        let reg_key = format!("{key}.{}", REG[0]);
        Self {
            cls: Subnet::new(
                src,
                [&cls_key, CLS[1]],
                [c, anchors, classes],
                prior,
                device,
            ),
            reg: Subnet::new(src, [&reg_key, REG[1]], [c, anchors, 4], 0.0, device),
        }
    }

    /// `(cls_logits [n, anchors, classes], bbox_regression [n, anchors, 4])`.
    pub fn forward(&self, levels: &[Tensor<4>]) -> (Tensor<3>, Tensor<3>) {
        (self.cls.forward(levels), self.reg.forward(levels))
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.cls.export(&format!("{key}.{}", CLS[0]), CLS[1], out);
        self.reg.export(&format!("{key}.{}", REG[0]), REG[1], out);
    }

    pub fn num_params(&self) -> usize {
        self.cls.num_params() + self.reg.num_params()
    }
}
