//! Semantic segmentation on any image backbone, plain or grown: the backbone's feature maps
//! (`Network::feature_maps`), mmsegmentation's Swin `norm{i}` after each stage or, for a ViT,
//! the `Feature2Pyramid` neck, then a decode head (UperNet or the linear probe) and UperNet's
//! FCN auxiliary head. Names follow mmsegmentation (`backbone.*`, `neck.*`, `decode_head.*`,
//! `auxiliary_head.*`); the PyTorch twin is `python/scalenet_torch/seg.py`.

pub mod head;
pub mod layers;
pub mod loss;
pub mod neck;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::arch::ImageArch;
use crate::model::drop_path::DropPath;
use crate::model::layers::LayerNorm;
use crate::model::weights::{TensorSink, WeightSource};
use crate::network::Network;
use head::{DecodeHead, FcnHead, LinearHead, UperHead};
use layers::Train;
use neck::Feature2Pyramid;

/// mmsegmentation's LayerNorm epsilon for the Swin stage norms (torch's default).
pub const STAGE_NORM_EPS: f64 = 1e-5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    Upernet,
    Linear,
}

/// UperNet's auxiliary FCN head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuxSpec {
    pub channels: usize,
    pub in_index: usize,
    pub loss_weight: f64,
}

/// What a segmentor is beyond its backbone.
#[derive(Clone, Debug, PartialEq)]
pub struct SegSpec {
    pub head: HeadKind,
    pub num_classes: usize,
    /// UperNet's width (mmsegmentation's `channels`, 512 in its configs).
    pub channels: usize,
    pub pool_scales: Vec<usize>,
    pub dropout_ratio: f64,
    pub aux: Option<AuxSpec>,
    /// A ViT's blocks (a grown ViT's positions) that feed the head.
    pub out_indices: Vec<usize>,
}

impl SegSpec {
    /// The channels of each level the head reads.
    pub fn level_dims(&self, arch: &ImageArch) -> Vec<usize> {
        match arch {
            ImageArch::Swin(c) => c.stages().iter().map(|g| g.dim).collect(),
            ImageArch::Vit(c) => vec![c.embed_dim; self.out_indices.len()],
        }
    }

    /// Why this spec cannot sit on `arch`, if it cannot; `vit_depth` counts a grown ViT's
    /// positions.
    pub fn check(&self, arch: &ImageArch, vit_depth: usize) -> Result<(), String> {
        let levels = self.level_dims(arch).len();
        if levels == 0 {
            return Err("the backbone gives no feature map (out_indices is empty)".into());
        }
        if let ImageArch::Vit(_) = arch {
            if self.head == HeadKind::Upernet && levels != 4 {
                return Err(format!(
                    "UperNet on a ViT reads 4 blocks through the neck; out_indices has {levels}"
                ));
            }
            if let Some(&i) = self.out_indices.iter().find(|&&i| i >= vit_depth) {
                return Err(format!(
                    "out_indices holds {i}, but the backbone has {vit_depth} blocks"
                ));
            }
        }
        match &self.aux {
            Some(a) if a.in_index >= levels => Err(format!(
                "auxiliary_head.in_index {} is not one of the {levels} levels",
                a.in_index
            )),
            _ if self.num_classes == 0 => Err("num_classes must be at least 1".into()),
            _ => Ok(()),
        }
    }
}

#[derive(Module, Debug)]
pub struct Segmentor {
    pub backbone: Network,
    /// `backbone.norm{i}`: a Swin's stage norms (none for a ViT).
    pub stage_norms: Vec<LayerNorm>,
    /// `neck`: a ViT under UperNet.
    pub neck: Option<Feature2Pyramid>,
    pub decode_head: DecodeHead,
    pub auxiliary_head: Option<FcnHead>,
    #[module(skip)]
    pub out_indices: Vec<usize>,
}

impl Segmentor {
    /// Around `backbone`, the rest from `src` under mmsegmentation's names. `spec` must have
    /// passed [`SegSpec::check`] for the backbone's architecture.
    pub fn new(
        spec: &SegSpec,
        backbone: Network,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Self {
        let arch = backbone.arch();
        let dims = spec.level_dims(&arch);
        let is_swin = matches!(arch, ImageArch::Swin(_));
        let stage_norms = if is_swin {
            dims.iter()
                .enumerate()
                .map(|(i, &d)| {
                    LayerNorm::with_eps(
                        src,
                        &format!("backbone.norm{i}"),
                        d,
                        STAGE_NORM_EPS,
                        device,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let neck = (!is_swin && spec.head == HeadKind::Upernet)
            .then(|| Feature2Pyramid::new(src, "neck", dims[0], device));
        let n = spec.num_classes;
        let decode_head = match spec.head {
            HeadKind::Upernet => DecodeHead::Uper(UperHead::new(
                src,
                "decode_head",
                &dims,
                spec.channels,
                n,
                &spec.pool_scales,
                device,
            )),
            HeadKind::Linear => DecodeHead::Linear(LinearHead::new(
                src,
                "decode_head",
                *dims.last().expect("checked"),
                n,
                device,
            )),
        };
        let auxiliary_head = spec.aux.as_ref().map(|a| {
            FcnHead::new(
                src,
                "auxiliary_head",
                dims[a.in_index],
                a.channels,
                n,
                a.in_index,
                device,
            )
        });
        Self {
            backbone,
            stage_norms,
            neck,
            decode_head,
            auxiliary_head,
            out_indices: spec.out_indices.clone(),
        }
    }

    /// The maps the heads read: stage-normed (Swin) or through the neck (ViT under UperNet).
    pub fn features(
        &self,
        x: Tensor<4>,
        dp: &mut Option<&mut DropPath>,
        train: &mut Train,
    ) -> Vec<Tensor<4>> {
        let maps = self.backbone.feature_maps(x, &self.out_indices, dp);
        if !self.stage_norms.is_empty() {
            return maps
                .into_iter()
                .zip(&self.stage_norms)
                .map(|(m, norm)| norm.forward(m.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]))
                .collect();
        }
        match &self.neck {
            Some(neck) => neck.forward(maps, train),
            None => maps,
        }
    }

    /// Eval-mode logits at the first level's resolution, and the auxiliary head's.
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Option<Tensor<4>>) {
        self.forward_train(x, &mut None, &mut None)
    }

    /// mmsegmentation's `slide_inference`: eval-mode logits of windows of `crop` every
    /// `stride` (the last window of a row or column moved back to end at the edge), each
    /// resized to its window, averaged where windows overlap: `[n, k, h, w]` for `x`
    /// `[n, c, h, w]` with h, w ≥ `crop` (the backbone runs at its input size).
    pub fn slide(&self, x: Tensor<4>, crop: [usize; 2], stride: [usize; 2]) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let grids =
            |side: usize, i: usize| (side + stride[i] - 1).saturating_sub(crop[i]) / stride[i] + 1;
        let device = x.device();
        let mut sum: Option<Tensor<4>> = None;
        let mut count = vec![0f32; h * w];
        for hi in 0..grids(h, 0) {
            for wi in 0..grids(w, 1) {
                let (y2, x2) = (
                    (hi * stride[0] + crop[0]).min(h),
                    (wi * stride[1] + crop[1]).min(w),
                );
                let (y1, x1) = (y2.saturating_sub(crop[0]), x2.saturating_sub(crop[1]));
                let window = x.clone().slice([0..n, 0..c, y1..y2, x1..x2]);
                let logits = layers::resize(self.forward(window).0, [y2 - y1, x2 - x1]);
                let k = logits.dims()[1];
                let at = [0..n, 0..k, y1..y2, x1..x2];
                let total = sum.unwrap_or_else(|| Tensor::zeros([n, k, h, w], &device));
                let covered = total.clone().slice(at.clone()) + logits;
                sum = Some(total.slice_assign(at, covered));
                for row in count[y1 * w..y2 * w].chunks_mut(w) {
                    row[x1..x2].iter_mut().for_each(|v| *v += 1.0);
                }
            }
        }
        let count =
            Tensor::<4>::from_data(burn::tensor::TensorData::new(count, [1, 1, h, w]), &device);
        sum.expect("at least one window") / count
    }

    /// The training forward: BatchNorm on batch statistics (recorded in `train`), dropout
    /// before the classifiers, stochastic depth in the backbone when `dp` is given.
    pub fn forward_train(
        &self,
        x: Tensor<4>,
        dp: &mut Option<&mut DropPath>,
        train: &mut Train,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        let feats = self.features(x, dp, train);
        let logits = self.decode_head.forward(&feats, train);
        let aux = self
            .auxiliary_head
            .as_ref()
            .map(|h| h.forward(&feats, train));
        (logits, aux)
    }

    /// Moves each BatchNorm's running statistics toward the batch statistics a training
    /// forward recorded (torch's momentum 0.1), as torch does within that forward.
    pub fn update_running(&mut self, stats: Vec<(String, [Tensor<1>; 2])>) {
        let mut norms = self.decode_head.batch_norms_mut();
        if let Some(neck) = &mut self.neck {
            norms.push(&mut neck.up4_bn);
        }
        if let Some(aux) = &mut self.auxiliary_head {
            norms.push(&mut aux.conv.bn);
        }
        for (key, s) in stats {
            if let Some(bn) = norms.iter_mut().find(|bn| bn.key == key) {
                bn.update_running(s);
            }
        }
    }

    /// Trainable parameters outside the backbone: stage norms, neck and heads.
    pub fn head_params(&self) -> usize {
        self.stage_norms
            .iter()
            .map(LayerNorm::num_params)
            .sum::<usize>()
            + self.neck.as_ref().map_or(0, Feature2Pyramid::num_params)
            + self.decode_head.num_params()
            + self.auxiliary_head.as_ref().map_or(0, FcnHead::num_params)
    }

    /// Every tensor under mmsegmentation's names (the backbone's under `backbone.`).
    pub fn export(&self) -> TensorSink {
        let mut out = TensorSink::default();
        for t in self.backbone.export().tensors {
            out.push_raw(format!("backbone.{}", t.name), t.shape, t.values);
        }
        for (i, norm) in self.stage_norms.iter().enumerate() {
            norm.export(&format!("backbone.norm{i}"), &mut out);
        }
        if let Some(neck) = &self.neck {
            neck.export("neck", &mut out);
        }
        self.decode_head.export("decode_head", &mut out);
        if let Some(aux) = &self.auxiliary_head {
            aux.export("auxiliary_head", &mut out);
        }
        out
    }
}
