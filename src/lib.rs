//! # scalenet
//!
//! Grow a pretrained Vision Transformer or Llama-family language model deeper at almost no
//! parameter cost, following ScaleNet (Hao et al., "ScaleNet: Scaling up Pretrained Neural
//! Networks with Incremental Parameters", IEEE TIP 2025, arXiv 2510.18431).
//!
//! The crate follows the data's path: [`model`] (each family's config, presets and model:
//! timm-faithful ViT and Swin, a transformers-faithful Llama, on burn) → [`growth`]
//! (shared blocks and per-position adapters over any pre-norm block) → [`checkpoint`] (timm hub
//! directories, transformers directories, GGUF) → [`data`] (images, text, tokenizers) →
//! [`train`] (one loop for classification and language modelling) → the `scalenet` binary.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod detect;
pub mod device;
pub mod error;
pub mod generate;
pub mod growth;
pub mod inference;
pub mod model;
pub mod network;
pub mod ops;
pub mod overlay;
pub mod plot;
pub mod segment;
pub mod selfcheck;
pub mod study;
pub mod train;
pub mod units;
pub mod untrusted;

pub use error::{Error, Result};
pub use model::image::{GlobalPool, PretrainedCfg};
pub use model::vit::config::VitConfig;
pub use model::VisionTransformer;
