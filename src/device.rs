//! Choosing where tensors live from a `--device` string. burn 0.22 picks the backend at run
//! time through `Device`, so one binary serves every backend it was built with.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Names accepted by `--device`, for help texts.
pub const DEVICE_HELP: &str = "flex (default, pure-Rust CPU), cuda[:N] (build with --features cuda), wgpu (build with --features wgpu)";

/// Parses `flex`, `cpu`, `cuda`, `cuda:N` or `wgpu` into a device (without autodiff).
pub fn parse_device(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => {
            let i: usize = i.parse().map_err(|_| {
                Error::InvalidModel(format!("--device {name}: '{i}' is not a device index"))
            })?;
            (k, i)
        }
        None => (name, 0),
    };
    // Only GPU backends take an index.
    let _ = index;
    match kind {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(index)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(Default::default())),
        "cuda" | "wgpu" => Err(Error::InvalidModel(format!(
            "--device {name}: this scalenet was built without the '{kind}' feature; rebuild with `cargo build --release --features {kind}`"
        ))),
        _ => Err(Error::InvalidModel(format!(
            "--device {name}: unknown device; use {DEVICE_HELP}"
        ))),
    }
}
