//! What CPU this is (model name with family/model numbers, the flags our kernels choose by),
//! how busy it is, and where measurements about it are cached: for `bench` reports and for the
//! `--precision auto` and `--blas auto` decisions.

use std::path::PathBuf;

/// Whether other work loads the cores (the 1-minute load average above half the threads), so
/// that a timing taken now is not worth keeping.
pub(crate) fn busy() -> bool {
    load_average().is_some_and(|l| l > 0.5 * rayon::current_num_threads() as f64)
}

/// The 1-minute load average (Linux), before this process has started its own work.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What `bench` reports about the CPU its numbers came from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CpuInfo {
    pub vendor: String,
    /// lscpu's "Model name", with the family/model/stepping numbers.
    pub model: String,
    /// The instruction-set flags our kernels choose by (present ones only).
    pub flags: Vec<String>,
    pub threads: usize,
}

/// The value of the first `name : value` line of `/proc/cpuinfo`'s text.
fn cpuinfo_field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(name))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The CPU this process runs on, from `/proc/cpuinfo` (empty fields elsewhere).
pub fn cpu_info() -> CpuInfo {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| cpuinfo_field(&text, name).unwrap_or_default();
    let have = field("flags");
    let have: Vec<&str> = have.split_whitespace().collect();
    let flags = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "avx512_vnni",
        "amx_tile",
        "amx_bf16",
    ]
    .iter()
    .filter(|f| have.contains(f))
    .map(|f| f.to_string())
    .collect();
    CpuInfo {
        vendor: field("vendor_id"),
        model: cpu_model(),
        flags,
        threads: rayon::current_num_threads(),
    }
}

/// The model name with its family/model/stepping numbers: VMs often report a generic name
/// ("Intel(R) Xeon(R) Processor") for CPUs of different generations.
pub fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| cpuinfo_field(&text, name);
    let name = field("model name").unwrap_or_else(|| "unknown CPU".into());
    match (field("cpu family"), field("model"), field("stepping")) {
        (Some(f), Some(m), Some(s)) => format!("{name}, family {f} model {m} stepping {s}"),
        _ => name,
    }
}

/// `$XDG_CACHE_HOME` (or `~/.cache`).
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
}
