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
        #[allow(unreachable_patterns)] // reachable for whichever GPU feature is off
        "cuda" | "wgpu" => Err(Error::InvalidModel(format!(
            "--device {name}: this scalenet was built without the '{kind}' feature; rebuild with `cargo build --release --features {kind}`"
        ))),
        _ => Err(Error::InvalidModel(format!(
            "--device {name}: unknown device; use {DEVICE_HELP}"
        ))),
    }
}

/// Keeps freed tensor buffers in the process for the next step instead of returning them to the
/// kernel. With glibc's defaults every activation above the (adaptive) mmap threshold is mapped,
/// faulted in page by page, zeroed and unmapped again on every step: on flex that was a third of
/// inference time and ~10% of a training step. Call once, early; a no-op off glibc.
pub fn tune_host_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists and its return value is a plain success flag.
    unsafe {
        // 32 MiB is glibc's largest allowed mmap threshold on 64-bit; buffers above it still map.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        // Rayon's workers free what the main thread allocated: fewer arenas, less stranded memory.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
