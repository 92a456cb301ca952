//! Object detection on any image backbone, plain or grown (issue 38): torchvision's RetinaNet
//! over a feature pyramid built from the backbone. A Swin gives its last three stages through
//! LayerNorms `backbone.norm{i}` (as mmdetection's Swin); a ViT its last block's map, brought
//! to three strides as ViTDet's simple feature pyramid does (a 2×2 transposed conv up,
//! `neck.upsample_2x.0`; the map itself; 2×2 max-pooling down). Then torchvision's FPN with
//! P6/P7 (`fpn`), its head (`head`), anchors, matcher, loss and post-processing. The PyTorch
//! twin is `python/scalenet_torch/detect.py`.

pub mod anchors;
pub mod boxes;
pub mod fpn;
pub mod head;
pub mod loss;
pub mod matching;
pub mod post;

use burn::module::Module;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::arch::ImageArch;
use crate::model::drop_path::DropPath;
use crate::model::layers::LayerNorm;
use crate::model::weights::{to_vec, TensorSink, WeightSource};
use crate::network::Network;
use crate::segment::layers::Upsample2x;
use crate::segment::STAGE_NORM_EPS;
use fpn::Fpn;
use head::RetinaHead;
use loss::{ImageTargets, Thresholds};
use post::{Detection, PostSettings};

/// A detection directory's `architecture`.
pub const ARCHITECTURE: &str = "retinanet";

/// What a detector is beyond its backbone: `config.json`'s keys, torchvision's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetSpec {
    pub num_classes: usize,
    pub fpn_channels: usize,
    /// One base size per pyramid level, finest first (three scales each).
    pub anchor_sizes: Vec<f32>,
    pub aspect_ratios: Vec<f32>,
    pub score_thresh: f64,
    pub nms_thresh: f64,
    pub detections_per_img: usize,
    pub topk_candidates: usize,
    pub fg_iou_thresh: f64,
    pub bg_iou_thresh: f64,
}

impl Default for DetSpec {
    fn default() -> Self {
        Self {
            num_classes: 0,
            fpn_channels: 256,
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            aspect_ratios: vec![0.5, 1.0, 2.0],
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 300,
            topk_candidates: 1000,
            fg_iou_thresh: 0.5,
            bg_iou_thresh: 0.4,
        }
    }
}

/// The Swin stages a detector reads: the last three (all, when there are fewer).
fn swin_levels(arch: &ImageArch) -> Vec<usize> {
    match arch {
        ImageArch::Swin(c) => {
            let n = c.stages().len();
            (n.saturating_sub(3)..n).collect()
        }
        ImageArch::Vit(_) => Vec::new(),
    }
}

impl DetSpec {
    /// The pyramid's levels on `arch`: three (or a smaller Swin's stages) and P6, P7.
    pub fn levels(arch: &ImageArch) -> usize {
        Self::level_strides(arch).len()
    }

    /// The nominal stride of each pyramid level on `arch`, finest first.
    pub fn level_strides(arch: &ImageArch) -> Vec<usize> {
        let mut strides: Vec<usize> = match arch {
            ImageArch::Swin(c) => {
                let p = c.patch_size;
                swin_levels(arch).iter().map(|&i| p << i).collect()
            }
            ImageArch::Vit(c) => {
                let p = c.patch_size;
                vec![(p / 2).max(1), p, 2 * p]
            }
        };
        let last = *strides.last().expect("at least one level");
        strides.extend([2 * last, 4 * last]);
        strides
    }

    /// RetinaNet's anchors on `arch`: four times each level's stride (torchvision's 32 … 512
    /// for strides 8 … 128).
    pub fn anchor_sizes_for(arch: &ImageArch) -> Vec<f32> {
        let strides = Self::level_strides(arch);
        strides.iter().map(|&s| 4.0 * s as f32).collect()
    }

    /// Why this spec cannot sit on `arch`, if it cannot.
    pub fn check(&self, arch: &ImageArch) -> Result<(), String> {
        let levels = Self::levels(arch);
        let positive = |v: &[f32]| !v.is_empty() && v.iter().all(|&x| x > 0.0 && x.is_finite());
        if self.num_classes == 0 {
            Err("num_classes must be at least 1".into())
        } else if self.fpn_channels == 0 {
            Err("fpn_channels must be at least 1".into())
        } else if self.anchor_sizes.len() != levels {
            Err(format!(
                "anchor_sizes has {} sizes, but the pyramid on this backbone has {levels} levels",
                self.anchor_sizes.len()
            ))
        } else if !positive(&self.anchor_sizes) || !positive(&self.aspect_ratios) {
            Err("anchor_sizes and aspect_ratios must be positive numbers".into())
        } else if !(0.0..=1.0).contains(&self.bg_iou_thresh)
            || !(self.bg_iou_thresh..=1.0).contains(&self.fg_iou_thresh)
        {
            Err("need 0 ≤ bg_iou_thresh ≤ fg_iou_thresh ≤ 1".into())
        } else {
            Ok(())
        }
    }

    pub fn anchors_per_cell(&self) -> usize {
        3 * self.aspect_ratios.len()
    }

    pub fn post(&self) -> PostSettings {
        PostSettings {
            score_thresh: self.score_thresh as f32,
            topk_candidates: self.topk_candidates,
            nms_thresh: self.nms_thresh,
            detections_per_img: self.detections_per_img,
        }
    }
}

/// The head's outputs for a batch and where its anchors sit.
pub struct DetOutput {
    /// `[n, anchors, classes]` logits.
    pub cls: Tensor<3>,
    /// `[n, anchors, 4]` box offsets.
    pub reg: Tensor<3>,
    /// Every anchor, in the outputs' order.
    pub anchors: Vec<[f32; 4]>,
    /// How many anchors each level holds.
    pub per_level: Vec<usize>,
}

#[derive(Module, Debug)]
pub struct Detector {
    pub backbone: Network,
    /// `backbone.norm{i}` for the Swin stages read (none for a ViT).
    pub stage_norms: Vec<LayerNorm>,
    /// `neck.upsample_2x.0`: a ViT's stride ×2 up.
    pub upsample: Option<Upsample2x>,
    pub fpn: Fpn,
    pub head: RetinaHead,
    #[module(skip)]
    pub spec: DetSpec,
}

impl Detector {
    /// Around `backbone`, the rest from `src` under scalenet's names. `spec` must have passed
    /// [`DetSpec::check`] for the backbone's architecture.
    pub fn new(
        spec: &DetSpec,
        backbone: Network,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Self {
        let arch = backbone.arch();
        let (stage_norms, upsample, dims) = match &arch {
            ImageArch::Swin(c) => {
                let stages = c.stages();
                let levels = swin_levels(&arch);
                let mut norm = |i: usize| {
                    let key = format!("backbone.norm{i}");
                    LayerNorm::with_eps(src, &key, stages[i].dim, STAGE_NORM_EPS, device)
                };
                let norms = levels.iter().map(|&i| norm(i)).collect();
                (norms, None, levels.iter().map(|&i| stages[i].dim).collect())
            }
            ImageArch::Vit(c) => {
                let d = c.embed_dim;
                let up = Upsample2x::new(src, "neck.upsample_2x.0", d, device);
                (Vec::new(), Some(up), vec![d; 3])
            }
        };
        let c = spec.fpn_channels;
        Self {
            fpn: Fpn::new(src, "neck.fpn", &dims, c, device),
            head: RetinaHead::new(
                src,
                "head",
                [c, spec.anchors_per_cell(), spec.num_classes],
                device,
            ),
            backbone,
            stage_norms,
            upsample,
            spec: spec.clone(),
        }
    }

    /// The pyramid's levels, finest first, for a normalised batch.
    pub fn levels(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> Vec<Tensor<4>> {
        let maps = match &self.upsample {
            Some(up) => {
                let last = self.backbone.depth() - 1;
                let m = self.backbone.feature_maps(x, &[last], dp).remove(0);
                let down = max_pool2d(m.clone(), MaxPoolOptions::new([2, 2]));
                vec![up.forward(m.clone()), m, down]
            }
            None => {
                let maps = self.backbone.feature_maps(x, &[], dp);
                let skip = maps.len() - self.stage_norms.len();
                let normed = maps.into_iter().skip(skip).zip(&self.stage_norms);
                normed
                    .map(|(m, n)| n.forward(m.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]))
                    .collect()
            }
        };
        self.fpn.forward(maps)
    }

    /// The head's outputs and anchors for a normalised batch `[n, c, h, w]`.
    pub fn forward_train(&self, x: Tensor<4>, dp: &mut Option<&mut DropPath>) -> DetOutput {
        let [_, _, h, w] = x.dims();
        let levels = self.levels(x, dp);
        let grids: Vec<[usize; 2]> = levels.iter().map(|l| [l.dims()[2], l.dims()[3]]).collect();
        let (cls, reg) = self.head.forward(&levels);
        let s = &self.spec;
        let anchors = anchors::grid_anchors([h, w], &grids, &s.anchor_sizes, &s.aspect_ratios);
        let a = s.anchors_per_cell();
        let per_level = grids.iter().map(|g| g[0] * g[1] * a).collect();
        DetOutput {
            cls,
            reg,
            anchors,
            per_level,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> DetOutput {
        self.forward_train(x, &mut None)
    }

    /// torchvision's training loss `(classification, box regression)` on `targets`, one per
    /// image of the batch.
    pub fn loss(&self, out: DetOutput, targets: &[ImageTargets]) -> (Tensor<1>, Tensor<1>) {
        let th = Thresholds {
            fg_iou: self.spec.fg_iou_thresh as f32,
            bg_iou: self.spec.bg_iou_thresh as f32,
        };
        loss::retina_loss(out.cls, out.reg, &out.anchors, targets, th)
    }

    /// Each image's detections at the input's size.
    pub fn detect(&self, x: Tensor<4>) -> Vec<Vec<Detection>> {
        let [n, _, h, w] = x.dims();
        let out = self.forward(x);
        let logits = to_vec(out.cls);
        let offsets = to_vec(out.reg);
        let (lk, lr) = (logits.len() / n.max(1), offsets.len() / n.max(1));
        (0..n)
            .map(|i| {
                post::detections(
                    &logits[i * lk..(i + 1) * lk],
                    &offsets[i * lr..(i + 1) * lr],
                    &out.anchors,
                    &out.per_level,
                    [h, w],
                    self.spec.post(),
                )
            })
            .collect()
    }

    /// Trainable parameters outside the backbone.
    pub fn head_params(&self) -> usize {
        let norms: usize = self.stage_norms.iter().map(LayerNorm::num_params).sum();
        norms
            + self.upsample.as_ref().map_or(0, Upsample2x::num_params)
            + self.fpn.num_params()
            + self.head.num_params()
    }

    /// Every tensor under scalenet's names (the backbone's under `backbone.`).
    pub fn export(&self) -> TensorSink {
        let mut out = TensorSink::default();
        for t in self.backbone.export().tensors {
            out.push_raw(format!("backbone.{}", t.name), t.shape, t.values);
        }
        let first = match self.backbone.arch() {
            ImageArch::Swin(_) => swin_levels(&self.backbone.arch()),
            ImageArch::Vit(_) => Vec::new(),
        };
        for (i, norm) in first.iter().zip(&self.stage_norms) {
            norm.export(&format!("backbone.norm{i}"), &mut out);
        }
        if let Some(up) = &self.upsample {
            up.export("neck.upsample_2x.0", &mut out);
        }
        self.fpn.export("neck.fpn", &mut out);
        self.head.export("head", &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ModelConfig;

    fn arch(name: &str) -> ImageArch {
        ModelConfig::from_preset(name, &Default::default())
            .unwrap()
            .arch
    }

    /// torchvision's anchors (32 … 512 at strides 8 … 128) on the backbones torchvision's
    /// sizes were made for: a patch-16 ViT and a patch-4 Swin.
    #[test]
    fn default_anchors_are_torchvisions_on_standard_backbones() {
        for name in ["deit_small_patch16_224", "swin_tiny_patch4_window7_224"] {
            let a = arch(name);
            assert_eq!(DetSpec::level_strides(&a), [8, 16, 32, 64, 128], "{name}");
            let want = [32.0, 64.0, 128.0, 256.0, 512.0];
            assert_eq!(DetSpec::anchor_sizes_for(&a), want, "{name}");
            let spec = DetSpec {
                num_classes: 3,
                ..DetSpec::default()
            };
            assert_eq!(spec.check(&a), Ok(()));
            let short = DetSpec {
                anchor_sizes: vec![32.0],
                ..spec.clone()
            };
            assert!(short.check(&a).unwrap_err().contains("5 levels"));
        }
    }
}
