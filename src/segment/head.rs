//! mmsegmentation's decode heads: `UPerHead` (pyramid pooling on the last level, FPN laterals
//! and top-down path, fusion, classifier), `FCNHead` (the auxiliary head: one 3×3 ConvModule
//! on one level, classifier) and the linear probe (BatchNorm and a 1×1 conv on the last level).
//! Dropout before the classifier (`Dropout2d`, mmsegmentation's 0.1) runs only in training.

use burn::module::Module;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};

use super::layers::{dropout2d, resize, BatchNorm2d, Conv2d, ConvModule, Train};
use crate::model::weights::{TensorSink, WeightSource};

/// The pyramid pooling module's scales (PSPNet's, mmsegmentation's default).
pub const POOL_SCALES: [usize; 4] = [1, 2, 3, 6];

#[derive(Module, Debug)]
pub struct UperHead {
    /// `psp_modules.{i}.1`: after adaptive pooling to `pool_scales[i]`.
    pub psp_modules: Vec<ConvModule>,
    pub bottleneck: ConvModule,
    pub lateral_convs: Vec<ConvModule>,
    pub fpn_convs: Vec<ConvModule>,
    pub fpn_bottleneck: ConvModule,
    pub conv_seg: Conv2d,
    #[module(skip)]
    pub pool_scales: Vec<usize>,
}

impl UperHead {
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        in_channels: &[usize],
        channels: usize,
        num_classes: usize,
        pool_scales: &[usize],
        device: &Device,
    ) -> Self {
        let top = *in_channels.last().expect("at least one level");
        let k = |name: String| format!("{key}.{name}");
        let levels = in_channels.len() - 1;
        Self {
            psp_modules: (0..pool_scales.len())
                .map(|i| {
                    ConvModule::new(
                        src,
                        &k(format!("psp_modules.{i}.1")),
                        top,
                        channels,
                        1,
                        device,
                    )
                })
                .collect(),
            bottleneck: ConvModule::new(
                src,
                &k("bottleneck".into()),
                top + pool_scales.len() * channels,
                channels,
                3,
                device,
            ),
            lateral_convs: (0..levels)
                .map(|i| {
                    ConvModule::new(
                        src,
                        &k(format!("lateral_convs.{i}")),
                        in_channels[i],
                        channels,
                        1,
                        device,
                    )
                })
                .collect(),
            fpn_convs: (0..levels)
                .map(|i| {
                    ConvModule::new(
                        src,
                        &k(format!("fpn_convs.{i}")),
                        channels,
                        channels,
                        3,
                        device,
                    )
                })
                .collect(),
            fpn_bottleneck: ConvModule::new(
                src,
                &k("fpn_bottleneck".into()),
                in_channels.len() * channels,
                channels,
                3,
                device,
            ),
            conv_seg: Conv2d::new(
                src,
                &k("conv_seg".into()),
                channels,
                num_classes,
                1,
                0,
                true,
                device,
            ),
            pool_scales: pool_scales.to_vec(),
        }
    }

    fn psp_forward(&self, x: Tensor<4>, train: &mut Train) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let mut outs = vec![x.clone()];
        for (m, &s) in self.psp_modules.iter().zip(&self.pool_scales) {
            let pooled = adaptive_avg_pool2d(x.clone(), [s, s]);
            outs.push(resize(m.forward(pooled, train), [h, w]));
        }
        self.bottleneck.forward(Tensor::cat(outs, 1), train)
    }

    /// The fused features before the classifier, at the first level's resolution.
    pub fn fuse(&self, inputs: &[Tensor<4>], train: &mut Train) -> Tensor<4> {
        let mut laterals: Vec<Tensor<4>> = self
            .lateral_convs
            .iter()
            .zip(inputs)
            .map(|(conv, x)| conv.forward(x.clone(), train))
            .collect();
        laterals.push(self.psp_forward(inputs.last().expect("a level").clone(), train));
        for i in (1..laterals.len()).rev() {
            let [_, _, h, w] = laterals[i - 1].dims();
            let up = resize(laterals[i].clone(), [h, w]);
            laterals[i - 1] = laterals[i - 1].clone() + up;
        }
        let [_, _, h, w] = laterals[0].dims();
        let top = laterals.pop().expect("a level");
        let mut outs: Vec<Tensor<4>> = self
            .fpn_convs
            .iter()
            .zip(laterals)
            .map(|(conv, l)| conv.forward(l, train))
            .collect();
        outs.push(top);
        let outs = outs.into_iter().map(|o| resize(o, [h, w])).collect();
        self.fpn_bottleneck.forward(Tensor::cat(outs, 1), train)
    }

    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm2d> {
        let convs = self
            .psp_modules
            .iter_mut()
            .chain([&mut self.bottleneck, &mut self.fpn_bottleneck])
            .chain(self.lateral_convs.iter_mut())
            .chain(self.fpn_convs.iter_mut());
        convs.map(|c| &mut c.bn).collect()
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        for (i, m) in self.psp_modules.iter().enumerate() {
            m.export(&format!("{key}.psp_modules.{i}.1"), out);
        }
        self.bottleneck.export(&format!("{key}.bottleneck"), out);
        for (i, m) in self.lateral_convs.iter().enumerate() {
            m.export(&format!("{key}.lateral_convs.{i}"), out);
        }
        for (i, m) in self.fpn_convs.iter().enumerate() {
            m.export(&format!("{key}.fpn_convs.{i}"), out);
        }
        self.fpn_bottleneck
            .export(&format!("{key}.fpn_bottleneck"), out);
        self.conv_seg.export(&format!("{key}.conv_seg"), out);
    }

    pub fn num_params(&self) -> usize {
        let convs = |v: &[ConvModule]| v.iter().map(ConvModule::num_params).sum::<usize>();
        convs(&self.psp_modules)
            + convs(&self.lateral_convs)
            + convs(&self.fpn_convs)
            + self.bottleneck.num_params()
            + self.fpn_bottleneck.num_params()
            + self.conv_seg.num_params()
    }
}

/// `FCNHead(num_convs=1, concat_input=False)` on level `in_index`.
#[derive(Module, Debug)]
pub struct FcnHead {
    /// `convs.0`
    pub conv: ConvModule,
    pub conv_seg: Conv2d,
    #[module(skip)]
    pub in_index: usize,
}

impl FcnHead {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        cin: usize,
        channels: usize,
        num_classes: usize,
        in_index: usize,
        device: &Device,
    ) -> Self {
        Self {
            conv: ConvModule::new(src, &format!("{key}.convs.0"), cin, channels, 3, device),
            conv_seg: Conv2d::new(
                src,
                &format!("{key}.conv_seg"),
                channels,
                num_classes,
                1,
                0,
                true,
                device,
            ),
            in_index,
        }
    }

    pub fn fuse(&self, inputs: &[Tensor<4>], train: &mut Train) -> Tensor<4> {
        self.conv.forward(inputs[self.in_index].clone(), train)
    }

    /// Logits at level `in_index`'s resolution.
    pub fn forward(&self, inputs: &[Tensor<4>], train: &mut Train) -> Tensor<4> {
        let fused = self.fuse(inputs, train);
        self.conv_seg.forward(dropout2d(fused, train))
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.conv.export(&format!("{key}.convs.0"), out);
        self.conv_seg.export(&format!("{key}.conv_seg"), out);
    }

    pub fn num_params(&self) -> usize {
        self.conv.num_params() + self.conv_seg.num_params()
    }
}

/// BatchNorm, then the 1×1 classifier, on the last level.
#[derive(Module, Debug)]
pub struct LinearHead {
    pub bn: BatchNorm2d,
    pub conv_seg: Conv2d,
}

impl LinearHead {
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        cin: usize,
        num_classes: usize,
        device: &Device,
    ) -> Self {
        Self {
            bn: BatchNorm2d::new(src, &format!("{key}.bn"), cin, device),
            conv_seg: Conv2d::new(
                src,
                &format!("{key}.conv_seg"),
                cin,
                num_classes,
                1,
                0,
                true,
                device,
            ),
        }
    }

    pub fn fuse(&self, inputs: &[Tensor<4>], train: &mut Train) -> Tensor<4> {
        self.bn
            .forward(inputs.last().expect("a level").clone(), train)
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.bn.export(&format!("{key}.bn"), out);
        self.conv_seg.export(&format!("{key}.conv_seg"), out);
    }

    pub fn num_params(&self) -> usize {
        self.bn.num_params() + self.conv_seg.num_params()
    }
}

/// The decode head a segmentor carries. One lives per model, so the variants' sizes do not
/// matter, and burn's `Module` derive does not see through a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum DecodeHead {
    Uper(UperHead),
    Linear(LinearHead),
}

impl DecodeHead {
    /// Logits at the first level's resolution (the last level's for the linear probe).
    pub fn forward(&self, inputs: &[Tensor<4>], train: &mut Train) -> Tensor<4> {
        let (fused, cls) = match self {
            DecodeHead::Uper(h) => (h.fuse(inputs, train), &h.conv_seg),
            DecodeHead::Linear(h) => (h.fuse(inputs, train), &h.conv_seg),
        };
        cls.forward(dropout2d(fused, train))
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        match self {
            DecodeHead::Uper(h) => h.export(key, out),
            DecodeHead::Linear(h) => h.export(key, out),
        }
    }

    pub fn num_params(&self) -> usize {
        match self {
            DecodeHead::Uper(h) => h.num_params(),
            DecodeHead::Linear(h) => h.num_params(),
        }
    }

    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm2d> {
        match self {
            DecodeHead::Uper(h) => h.batch_norms_mut(),
            DecodeHead::Linear(h) => vec![&mut h.bn],
        }
    }
}
