//! ScaleNet growth: expansion plans, per-position adapters, and the grown model whose
//! positions share the base blocks.

pub mod adapter;
pub mod block;
pub mod expand;
pub mod grown;
pub mod llama;
pub mod plan;
pub mod swin;

pub use adapter::Adapter;
pub use block::{BlockNorm, PreNormBlock};
pub use expand::{expand, expand_llama, expand_swin, ExpandOptions, InitMode};
pub use grown::{GrownCounts, GrownVit, Position};
pub use llama::GrownLlama;
pub use plan::{
    identity_gates, layer_map, Activation, AdapterSpec, Growth, GrowthSpec, MapStrategy, Placement,
    StagedGrowth,
};
pub use swin::GrownSwin;
