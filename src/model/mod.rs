//! The model families, each in its folder with the same shape (`config.rs`, `block.rs`, the
//! model in `mod.rs`), in its reference's structure and key names: the Vision Transformer
//! (`vit/`, timm), the Swin Transformer (`swin/`, timm) and Llama (`llama/`, transformers).
//!
//! The files here are what the families share: weights in and out (`weights`), the layers
//! (`layers`, `mlp`, `drop_path`, `patch`), the pre-norm block every family's block is
//! (`prenorm`), image inputs (`image`) and size bounds (`limits`). A family imports these and
//! never another family; `arch` dispatches over the image families and no family imports it.

pub mod arch;
pub mod drop_path;
pub mod image;
pub mod layers;
pub mod limits;
pub mod llama;
pub mod mlp;
pub mod patch;
pub mod prenorm;
pub mod swin;
pub mod vit;
pub mod weights;

pub use prenorm::{BlockNorm, PreNormBlock};
pub use vit::block::Block;
pub use vit::{ParamCounts, VisionTransformer};
pub use weights::{Init, NamedTensor, RandomInit, TensorSink, WeightSource};
