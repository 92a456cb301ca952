//! Checkpoint I/O: safetensors files and timm hub model directories.

pub mod atomic;
pub mod det_dir;
pub mod download;
pub mod gguf;
pub mod hf_dir;
pub mod hub;
pub mod hub_id;
pub mod lock;
pub mod model_dir;
pub mod safetensors_io;
pub mod seg_dir;
pub mod torch_export;

pub use model_dir::{
    load_model, load_vit, save_model, save_vit, LoadedModel, LoadedVit, ModelConfig, CONFIG_FILE,
    WEIGHTS_FILE,
};
pub use safetensors_io::{
    read_float_tensor, read_int_tensor, write_tensors, LoadedTensor, TensorFile,
};
