//! The model families, part by part, in their reference's structure and key names: the Vision
//! Transformer (these files), the Swin Transformer (`swin/`) and Llama (`llama/`).

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
