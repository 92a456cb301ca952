//! What CPU this is (model name with family/model numbers, the flags our kernels choose by),
//! how busy it is, and where measurements about it are cached: for `bench` reports and for the
//! `--precision auto` and `--blas auto` decisions.

use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::Instant;

use super::gemm_tile::{Product, View};

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

/// A product to time: C (`&mut [_]`, m×n) = the product's A·B.
pub(crate) type GemmKernel<'a> = dyn FnMut(Product, &mut [MaybeUninit<f32>]) + 'a;

/// GFLOP/s of each of two f32 GEMMs on a ViT block's two MLP shapes (DeiT-Small, 1024 rows),
/// each the best of five, the two taking turns: about a quarter of a second. Taking turns
/// matters on a shared machine: a burst of other work then slows both alike, where timing all
/// of one before the other once cached a decision from a product timed at a fifth of its speed.
pub(crate) fn gemm_rates(kernels: [&mut GemmKernel; 2]) -> [f64; 2] {
    let shapes = [(1024, 384, 1536), (1024, 1536, 384)];
    let inputs: Vec<(Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .map(|&(m, k, n)| {
            (
                (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect(),
                (0..k * n).map(|i| (i % 7) as f32 * 0.1).collect(),
            )
        })
        .collect();
    // best[kernel][shape], seconds; the first round warms up and counts like the rest.
    let mut best = [[f64::INFINITY; 2]; 2];
    let mut kernels = kernels;
    for _ in 0..5 {
        for (s, (&(m, k, n), (a, b))) in shapes.iter().zip(&inputs).enumerate() {
            let mut c = vec![MaybeUninit::new(0f32); m * n];
            let p = Product::new(
                m,
                n,
                k,
                View::strided(a, 0, k, 1),
                View::strided(b, 0, n, 1),
            );
            for (i, kernel) in kernels.iter_mut().enumerate() {
                let t = Instant::now();
                kernel(p, &mut c);
                best[i][s] = best[i][s].min(t.elapsed().as_secs_f64());
            }
        }
    }
    let flops: f64 = shapes
        .iter()
        .map(|&(m, k, n)| 2.0 * (m * n * k) as f64)
        .sum();
    best.map(|b| flops / b.iter().sum::<f64>() / 1e9)
}
