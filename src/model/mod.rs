//! The Vision Transformer, part by part, in timm's structure and key names.

pub mod attention;
pub mod block;
pub mod drop_path;
pub mod embed;
pub mod head;
pub mod layers;
pub mod llama;
pub mod mlp;
pub mod swin;
pub mod vit;
pub mod weights;

pub use block::Block;
pub use vit::{ParamCounts, VisionTransformer};
pub use weights::{Init, NamedTensor, RandomInit, TensorSink, WeightSource};
