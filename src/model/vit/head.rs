//! From tokens to logits: the final `norm`, pooling (`global_pool`), `fc_norm`, and the
//! classifier `head` (plus DeiT's `head_dist`, averaged with `head` at inference as timm does).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::config::VitConfig;
use crate::model::image::GlobalPool;
use crate::model::layers::{LayerNorm, Linear};
use crate::model::weights::{Init, TensorSink, WeightSource};

/// Pooling as a module-friendly code (0 token, 1 avg, 2 max, 3 avgmax).
fn pool_code(p: GlobalPool) -> usize {
    match p {
        GlobalPool::Token => 0,
        GlobalPool::Avg => 1,
        GlobalPool::Max => 2,
        GlobalPool::Avgmax => 3,
    }
}

#[derive(Module, Debug)]
pub struct ClassifierHead {
    /// Final norm over all tokens; absent (identity) when `fc_norm` is used.
    pub norm: Option<LayerNorm>,
    pub fc_norm: Option<LayerNorm>,
    /// Absent when `num_classes` is 0.
    pub head: Option<Linear>,
    pub head_dist: Option<Linear>,
    pub pool: usize,
    pub num_prefix_tokens: usize,
    pub distilled: bool,
}

impl ClassifierHead {
    pub fn new(src: &mut dyn WeightSource, cfg: &VitConfig, device: &Device) -> Self {
        let d = cfg.embed_dim;
        let fc = cfg.use_fc_norm();
        let linear = |src: &mut dyn WeightSource, key: &str| {
            (cfg.num_classes > 0).then(|| {
                Linear::new(
                    src,
                    key,
                    d,
                    cfg.num_classes,
                    true,
                    (Init::TruncNormal(0.02), Init::ZEROS),
                    device,
                )
            })
        };
        Self {
            norm: (!fc).then(|| LayerNorm::new(src, "norm", d, device)),
            fc_norm: fc.then(|| LayerNorm::new(src, "fc_norm", d, device)),
            head: linear(src, "head"),
            head_dist: if cfg.distilled {
                linear(src, "head_dist")
            } else {
                None
            },
            pool: pool_code(cfg.global_pool),
            num_prefix_tokens: cfg.num_prefix_tokens(),
            distilled: cfg.distilled,
        }
    }

    /// How many leading tokens the head reads, when it reads no others: the class token (and
    /// DeiT's distillation token). `None` when it pools over the patches.
    pub fn reads_prefix(&self) -> Option<usize> {
        if self.distilled {
            Some(2)
        } else if self.pool == 0 {
            Some(1)
        } else {
            None
        }
    }

    /// `[batch, tokens, dim]` → `[batch, num_classes]` (or `[batch, dim]` with `pre_logits`).
    pub fn forward(&self, x: Tensor<3>, pre_logits: bool) -> Tensor<2> {
        let x = match &self.norm {
            Some(n) => n.forward(x),
            None => x,
        };
        let [b, n, d] = x.dims();
        if self.distilled {
            let cls = x.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
            let dist = x.slice([0..b, 1..2, 0..d]).reshape([b, d]);
            return match (&self.head, &self.head_dist, pre_logits) {
                (Some(h), Some(hd), false) => (h.forward(cls) + hd.forward(dist)) / 2.0,
                _ => (cls + dist) / 2.0,
            };
        }
        let patches = || x.clone().slice([0..b, self.num_prefix_tokens..n, 0..d]);
        let pooled = match self.pool {
            0 => x.clone().slice([0..b, 0..1, 0..d]),
            1 => patches().mean_dim(1),
            2 => patches().max_dim(1),
            _ => (patches().mean_dim(1) + patches().max_dim(1)) * 0.5,
        }
        .reshape([b, d]);
        let pooled = match &self.fc_norm {
            Some(n) => n.forward(pooled),
            None => pooled,
        };
        match (&self.head, pre_logits) {
            (Some(h), false) => h.forward(pooled),
            _ => pooled,
        }
    }

    pub fn export(&self, out: &mut TensorSink) {
        if let Some(n) = &self.norm {
            n.export("norm", out);
        }
        if let Some(n) = &self.fc_norm {
            n.export("fc_norm", out);
        }
        if let Some(h) = &self.head {
            h.export("head", out);
        }
        if let Some(h) = &self.head_dist {
            h.export("head_dist", out);
        }
    }

    pub fn norm_params(&self) -> usize {
        self.norm.as_ref().map_or(0, LayerNorm::num_params)
            + self.fc_norm.as_ref().map_or(0, LayerNorm::num_params)
    }

    pub fn head_params(&self) -> usize {
        self.head.as_ref().map_or(0, Linear::num_params)
            + self.head_dist.as_ref().map_or(0, Linear::num_params)
    }
}
