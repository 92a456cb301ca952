//! From pixels to tokens: the patch embedding (`model::patch`), the prefix tokens (`cls_token`, DeiT's `dist_token`) and the learned
//! `pos_embed`, laid out as timm lays it: `[1, prefix + patches, dim]`, prefix first.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use super::config::VitConfig;
use crate::model::patch::{export_patch_conv, patch_conv, patch_conv_forward};
use crate::model::weights::{param, Init, TensorSink, WeightSource};

#[derive(Module, Debug)]
pub struct Embeddings {
    /// `[in_chans * patch * patch, dim]` (the conv kernel `[dim, c, p, p]` flattened and transposed)
    pub proj_weight: Param<Tensor<2>>,
    pub proj_bias: Param<Tensor<1>>,
    /// `[1, 1, dim]`
    pub cls_token: Option<Param<Tensor<3>>>,
    /// `[1, 1, dim]`
    pub dist_token: Option<Param<Tensor<3>>>,
    /// `[1, prefix + patches, dim]`
    pub pos_embed: Param<Tensor<3>>,
    pub patch_size: usize,
    pub grid_h: usize,
    pub grid_w: usize,
}

impl Embeddings {
    pub fn new(src: &mut dyn WeightSource, cfg: &VitConfig, device: &Device) -> Self {
        let (c, p, d) = (cfg.in_chans, cfg.patch_size, cfg.embed_dim);
        let (proj_weight, proj_bias) = patch_conv(src, c, p, d, device);
        let token = |src: &mut dyn WeightSource, key: &str, init| {
            param(src.tensor(key, &[1, 1, d], init), [1, 1, d], device)
        };
        let cls_token = cfg
            .class_token
            .then(|| token(src, "cls_token", Init::Normal(1e-6)));
        let dist_token = cfg
            .distilled
            .then(|| token(src, "dist_token", Init::TruncNormal(0.02)));
        let n = cfg.num_tokens();
        let pos = src.tensor("pos_embed", &[1, n, d], Init::TruncNormal(0.02));
        let [grid_h, grid_w] = cfg.grid();
        Self {
            proj_weight,
            proj_bias,
            cls_token,
            dist_token,
            pos_embed: param(pos, [1, n, d], device),
            patch_size: p,
            grid_h,
            grid_w,
        }
    }

    /// `[batch, chans, h, w]` → `[batch, prefix + patches, dim]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let b = x.dims()[0];
        let tokens = patch_conv_forward(
            x,
            &self.proj_weight,
            &self.proj_bias,
            self.patch_size,
            [self.grid_h, self.grid_w],
        );
        let d = tokens.dims()[2];
        let mut parts = Vec::with_capacity(3);
        for t in [&self.cls_token, &self.dist_token].into_iter().flatten() {
            parts.push(t.val().expand([b, 1, d]));
        }
        let x = if parts.is_empty() {
            tokens
        } else {
            parts.push(tokens);
            Tensor::cat(parts, 1)
        };
        x + self.pos_embed.val()
    }

    /// Class and distillation tokens ahead of the patches.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.cls_token.is_some()) + usize::from(self.dist_token.is_some())
    }

    pub fn export(&self, out: &mut TensorSink) {
        export_patch_conv(&self.proj_weight, &self.proj_bias, self.patch_size, out);
        if let Some(t) = &self.cls_token {
            out.push("cls_token", t.val());
        }
        if let Some(t) = &self.dist_token {
            out.push("dist_token", t.val());
        }
        out.push("pos_embed", self.pos_embed.val());
    }

    pub fn num_params(&self) -> usize {
        let [k, d] = self.proj_weight.dims();
        k * d + d + self.num_prefix_tokens() * d + self.pos_embed.dims().iter().product::<usize>()
    }
}
