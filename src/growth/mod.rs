//! ScaleNet growth: what the user asks (`options`), layer maps and the saved spec (`plan`),
//! per-position adapters (`adapter`) and LoRA (`lora`, relaxed-recursive), and positions that run shared base blocks (`position`),
//! all written once over [`PreNormBlock`]. Each family's grown model is in a file named after
//! it (`vit`, `swin`, `llama`), and `expand` turns a loaded model into the grown one to save.

pub mod adapter;
pub mod expand;
pub mod llama;
pub mod lora;
pub mod options;
pub mod plan;
pub mod position;
pub mod swin;
pub mod vit;

pub use crate::model::prenorm::{BlockNorm, PreNormBlock};
pub use adapter::Adapter;
pub use expand::{expand, expand_llama, expand_swin};
pub use llama::GrownLlama;
pub use options::{ExpandOptions, InitMode};
pub use plan::{
    identity_gates, layer_map, Activation, AdapterSpec, Growth, GrowthSpec, LoraSpec, MapStrategy,
    Placement, StagedGrowth,
};
pub use position::{GrownCounts, Position};
pub use swin::GrownSwin;
pub use vit::GrownVit;
