//! Choosing where tensors live from a `--device` string. burn 0.22 picks the backend at run
//! time through `Device`, so one binary serves every backend it was built with.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Names accepted by `--device`, for help texts.
pub const DEVICE_HELP: &str = "flex (default, pure-Rust CPU), cuda[:N] (build with --features cuda), wgpu (build with --features wgpu)";

/// Parses `flex`, `cpu`, `cuda`, `cuda:N` or `wgpu` into a device (without autodiff).
pub fn parse_device(name: &str) -> Result<Device> {
    let (kind, index) = split(name)?;
    // Only GPU backends take an index.
    let _ = index;
    match kind {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => {
            // burn's CUDA backend panics (twice) when it cannot load the driver, so ask first.
            cuda::check(index).map_err(|msg| Error::Device {
                name: name.into(),
                msg,
            })?;
            Ok(Device::cuda(index))
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(Default::default())),
        #[allow(unreachable_patterns)] // reachable for whichever GPU feature is off
        "cuda" | "wgpu" => Err(Error::Device {
            name: name.into(),
            msg: format!("this scalenet was built without the '{kind}' feature; rebuild with `cargo build --release --features {kind}`{}", if kind == "cuda" { " (scripts/setup-cuda.sh does it)" } else { "" }),
        }),
        _ => Err(Error::Device {
            name: name.into(),
            msg: format!("unknown device; use {DEVICE_HELP}"),
        }),
    }
}

/// `kind[:index]`, the index 0 when absent.
fn split(name: &str) -> Result<(&str, usize)> {
    match name.split_once(':') {
        Some((k, i)) => i.parse().map(|i| (k, i)).map_err(|_| Error::Device {
            name: name.into(),
            msg: format!("'{i}' is not a device index"),
        }),
        None => Ok((name, 0)),
    }
}

/// Whether `--device` names a GPU backend.
pub fn is_gpu(name: &str) -> bool {
    matches!(split(name), Ok(("cuda" | "wgpu", _)))
}

/// The CUDA device index that `--device` names, if it names one.
pub fn cuda_index(name: &str) -> Option<usize> {
    match split(name) {
        Ok(("cuda", i)) => Some(i),
        _ => None,
    }
}

/// Looks for the CUDA driver and toolkit without creating a context, so that a machine without
/// a GPU gets one clear line instead of the backend's panic.
pub mod cuda {
    use std::ffi::{c_char, c_int, CStr};
    use std::path::PathBuf;

    /// `Ok(n)`: the driver loads and reports `n` devices. `Err`: why CUDA cannot be used.
    pub fn device_count() -> Result<usize, String> {
        type CuInit = unsafe extern "C" fn(u32) -> c_int;
        type CuDeviceGetCount = unsafe extern "C" fn(*mut c_int) -> c_int;
        // SAFETY: dlopen/dlsym with NUL-terminated names; the two symbols have these C
        // signatures in every CUDA driver API since 2.0. The library stays loaded (the backend
        // loads it again), so the function pointers never dangle.
        unsafe {
            let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if lib.is_null() {
                return Err(format!(
                    "no CUDA driver found: {} (is the NVIDIA driver installed, and this a machine with a GPU?)",
                    dl_error()
                ));
            }
            let init = libc::dlsym(lib, c"cuInit".as_ptr());
            let count = libc::dlsym(lib, c"cuDeviceGetCount".as_ptr());
            if init.is_null() || count.is_null() {
                return Err(
                    "no CUDA driver found: libcuda.so.1 lacks cuInit/cuDeviceGetCount".into(),
                );
            }
            let init: CuInit = std::mem::transmute::<*mut libc::c_void, CuInit>(init);
            let count: CuDeviceGetCount =
                std::mem::transmute::<*mut libc::c_void, CuDeviceGetCount>(count);
            match init(0) {
                0 => {}
                100 => return Err("the CUDA driver is installed but sees no GPU".into()),
                35 => return Err("the CUDA driver is older than the CUDA runtime this scalenet was built for (rebuild with CUDARC_CUDA_VERSION set to the driver's version)".into()),
                rc => return Err(format!("the CUDA driver failed to initialise (CUresult {rc})")),
            }
            let mut n: c_int = 0;
            match count(&mut n) {
                0 => Ok(n.max(0) as usize),
                rc => Err(format!(
                    "the CUDA driver could not count devices (CUresult {rc})"
                )),
            }
        }
    }

    fn dl_error() -> String {
        // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
        unsafe {
            let e: *const c_char = libc::dlerror();
            if e.is_null() {
                "libcuda.so.1 could not be loaded".into()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        }
    }

    /// The CUDA toolkit's libdevice, which the backend links into kernels that use math
    /// functions (erf in GELU): `$CUDA_PATH` first, then the usual install locations.
    pub fn libdevice() -> Option<PathBuf> {
        let roots = std::env::var_os("CUDA_PATH")
            .map(|p| vec![PathBuf::from(p)])
            .unwrap_or_else(|| {
                ["/usr/local/cuda", "/opt/cuda", "/usr/lib/cuda", "/usr"]
                    .map(PathBuf::from)
                    .to_vec()
            });
        roots
            .into_iter()
            .map(|r| r.join("nvvm/libdevice/libdevice.10.bc"))
            .find(|p| p.is_file())
    }

    /// Memory in use on GPU `index` as the driver counts it (all processes, the CUDA context and
    /// every allocator's cache included: what `nvidia-smi` shows), MiB; `None` without NVML.
    /// Comparable across frameworks where `torch.cuda.mem_get_info` reads the same number.
    pub fn memory_used_mib(index: usize) -> Option<f64> {
        #[repr(C)]
        #[derive(Default)]
        struct NvmlMemory {
            total: u64,
            free: u64,
            used: u64,
        }
        type ByIndex = unsafe extern "C" fn(u32, *mut *mut libc::c_void) -> c_int;
        type MemInfo = unsafe extern "C" fn(*mut libc::c_void, *mut NvmlMemory) -> c_int;
        // Loaded and initialised once: `bench` samples after every step.
        static NVML: std::sync::OnceLock<Option<(ByIndex, MemInfo)>> = std::sync::OnceLock::new();
        let (by_index, mem) = (*NVML.get_or_init(|| {
            type Init = unsafe extern "C" fn() -> c_int;
            // SAFETY: as in `device_count`; these are NVML's documented C signatures.
            unsafe {
                let lib = libc::dlopen(
                    c"libnvidia-ml.so.1".as_ptr(),
                    libc::RTLD_NOW | libc::RTLD_LOCAL,
                );
                if lib.is_null() {
                    return None;
                }
                let sym = |name: &CStr| libc::dlsym(lib, name.as_ptr());
                let (init, by_index, mem) = (
                    sym(c"nvmlInit_v2"),
                    sym(c"nvmlDeviceGetHandleByIndex_v2"),
                    sym(c"nvmlDeviceGetMemoryInfo"),
                );
                if init.is_null() || by_index.is_null() || mem.is_null() {
                    return None;
                }
                let init = std::mem::transmute::<*mut libc::c_void, Init>(init);
                (init() == 0).then(|| {
                    (
                        std::mem::transmute::<*mut libc::c_void, ByIndex>(by_index),
                        std::mem::transmute::<*mut libc::c_void, MemInfo>(mem),
                    )
                })
            }
        }))?;
        let mut handle = std::ptr::null_mut();
        let mut info = NvmlMemory::default();
        // SAFETY: NVML is initialised; both out-pointers point at live locals.
        let ok = unsafe { by_index(index as u32, &mut handle) == 0 && mem(handle, &mut info) == 0 };
        ok.then(|| (info.total - info.free) as f64 / (1u64 << 20) as f64)
    }

    /// Everything `cuda:index` needs before the backend touches the driver.
    pub fn check(index: usize) -> Result<(), String> {
        let n = device_count()?;
        if index >= n {
            return Err(format!(
                "there is no CUDA device {index} (the driver reports {n})"
            ));
        }
        if libdevice().is_none() {
            return Err(match std::env::var_os("CUDA_PATH") {
                Some(p) => format!(
                    "CUDA_PATH={} holds no nvvm/libdevice/libdevice.10.bc; point CUDA_PATH at a CUDA toolkit",
                    PathBuf::from(p).display()
                ),
                None => "no CUDA toolkit found (nvvm/libdevice/libdevice.10.bc under /usr/local/cuda, /opt/cuda, /usr/lib/cuda or /usr); set CUDA_PATH to one".into(),
            });
        }
        Ok(())
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
        // A language model's largest buffers are bigger than any ViT's: SmolLM2's 49152 × 576
        // embedding (its gradient, AdamW's moments and their temporaries, 113 MB each) and its
        // logits. Above the threshold they were mapped and zeroed afresh every step (the
        // kernel's page clearing was 15% of a training step), so the threshold goes to 1 GiB
        // where glibc accepts it (2.36 does) and to 32 MiB, the largest older glibc takes, where
        // it does not.
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        // Rayon's workers free what the main thread allocated: fewer arenas, less stranded memory.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_without_a_driver_is_one_clear_line() {
        match cuda::device_count() {
            Err(msg) => {
                assert!(
                    msg.starts_with("no CUDA driver found") || msg.contains("no GPU"),
                    "{msg}"
                );
                assert!(!msg.contains('\n'));
            }
            // A machine with a GPU: the probe must agree with itself.
            Ok(n) => assert_eq!(cuda::device_count(), Ok(n)),
        }
    }

    #[test]
    fn device_names() {
        assert!(parse_device("flex").is_ok());
        assert!(parse_device("cpu").is_ok());
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device"), "{e}");
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("not a device index"), "{e}");
        assert!(is_gpu("cuda") && is_gpu("cuda:1") && is_gpu("wgpu"));
        assert!(!is_gpu("flex") && !is_gpu("cpu") && !is_gpu("cuda:x"));
    }
}
