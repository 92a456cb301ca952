//! `--precision auto`: bf16 only where it is the faster choice on this machine. On GPUs bf16
//! runs on the tensor cores and f32 takes four TF32 products (see `ops::reference`), so bf16
//! wins there. On CPUs it depends: an AMD Zen 4 runs our bf16 GEMM 1.5-2x faster than the f32
//! one, an Intel Xeon of the same AVX512-BF16 generation slower (docs/PERFORMANCE.md). So the
//! CPU decision is measured, once per CPU model, and cached.

use std::path::{Path, PathBuf};

use super::cpu::load_average;
pub use super::cpu::{cache_dir, cpu_info, cpu_model, CpuInfo};
use super::Precision;

/// What `--precision` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Requested {
    /// The faster of f32 and bf16 here.
    #[default]
    Auto,
    Fixed(Precision),
}

impl std::str::FromStr for Requested {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Requested::Auto),
            other => other
                .parse()
                .map(Requested::Fixed)
                .map_err(|_| format!("unknown precision '{other}' (use auto, f32 or bf16)")),
        }
    }
}

/// The precision a run uses, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub precision: Precision,
    pub reason: String,
}

/// Whether the device named `device` computes in bf16: not wgpu, whose shading language
/// (WGSL) has no bf16 type.
pub fn bf16_supported(device: &str) -> bool {
    !device.starts_with("wgpu")
}

/// Refuses a precision the device cannot compute in, with the line to show; measures nothing.
pub fn supported(requested: Requested, device: &str) -> Result<(), String> {
    if requested == Requested::Fixed(Precision::Bf16) && !bf16_supported(device) {
        return Err(format!(
            "--precision bf16 is not supported on {device}: WGSL has no bf16 type; use --precision f32 (wgpu's f32 products are plain f32)"
        ));
    }
    Ok(())
}

/// Resolves `requested` for the `--device` named `device`; bf16 where the device has none is
/// refused with the line to show.
pub fn resolve(requested: Requested, device: &str) -> Result<Decision, String> {
    supported(requested, device)?;
    Ok(match requested {
        Requested::Fixed(precision) => Decision {
            precision,
            reason: "as asked (--precision)".into(),
        },
        Requested::Auto if !bf16_supported(device) => Decision {
            precision: Precision::F32,
            reason: format!("auto on {device}: WGSL has no bf16, and its f32 products are plain f32"),
        },
        Requested::Auto if crate::device::is_gpu(device) => Decision {
            precision: Precision::Bf16,
            reason: "auto on a GPU: bf16 runs on the tensor cores, f32 takes four TF32 products per matmul".into(),
        },
        Requested::Auto => cpu_decision(cache_dir().as_deref()),
    })
}

/// The CPU's decision, measured or read from the cache under `cache_dir` (none: not cached).
fn cpu_decision(cache_dir: Option<&Path>) -> Decision {
    let f32_only = |why: &str| Decision {
        precision: Precision::F32,
        reason: format!("auto on this CPU: {why}"),
    };
    if !super::gemm_bf16::available() {
        return f32_only("no AVX512-BF16, so bf16 would be emulated (slower)");
    }
    if !super::gemm_f32::available() {
        return f32_only("no AVX-512 f32 kernel to compare with");
    }
    // A `--blas` library changes both rates, so it is part of what the cache is keyed by.
    let cpu = match super::blas::active() {
        Some(lib) => format!("{} with {}", cpu_model(), lib.path().display()),
        None => cpu_model(),
    };
    let path = cache_dir.map(|dir| cache_path(dir, &cpu));
    let cached = path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| Some((v["f32_gflops"].as_f64()?, v["bf16_gflops"].as_f64()?)));
    // Other work on the cores skews the two timings unevenly (on a 2-core Xeon, family 6 model
    // 207, a measurement taken while the test suite ran gave bf16 73 and f32 63 GFLOP/s, where a
    // quiet one gives bf16 149 and f32 186): under load the decision needs a wider margin and is
    // not kept.
    let load = cached.is_none().then(load_average).flatten();
    let threads = rayon::current_num_threads();
    let busy = load.is_some_and(|l| l > 0.5 * threads as f64);
    let (f32_rate, bf16_rate, how) = match cached {
        Some((f, b)) => (f, b, "measured earlier".to_string()),
        None => {
            let (f, b) = measure();
            if let (Some(p), false) = (&path, busy) {
                let json = serde_json::json!({"cpu": cpu, "f32_gflops": f, "bf16_gflops": b});
                let _ = p.parent().map(std::fs::create_dir_all);
                let _ = crate::checkpoint::atomic::atomic_write(p, json.to_string().as_bytes());
            }
            (f, b, "measured now".to_string())
        }
    };
    let precision = decide(f32_rate, bf16_rate, busy);
    let cache = match (path, load) {
        (_, Some(l)) if busy => {
            format!(", under load (load average {l:.1} on {threads} threads), so not cached")
        }
        (Some(p), _) => format!(", cached in {}", p.display()),
        (None, _) => String::new(),
    };
    Decision {
        precision,
        reason: format!(
            "auto on this CPU ({cpu}): the bf16 GEMM runs {bf16_rate:.0} GFLOP/s and the f32 one {f32_rate:.0} ({how}{cache})"
        ),
    }
}

/// GFLOP/s of the f32 and bf16 GEMMs that will run, timed in turns (`cpu::gemm_rates`).
fn measure() -> (f64, f64) {
    let [f32_rate, bf16_rate] = super::cpu::gemm_rates([
        &mut |p, c| super::gemm::cpu_gemm((p.m, p.n, p.k), p.a, p.b, c, false, false),
        &mut |p, c| super::gemm::cpu_gemm((p.m, p.n, p.k), p.a, p.b, c, false, true),
    ]);
    (f32_rate, bf16_rate)
}

/// A few percent either way is noise on a shared machine, so f32 stays unless bf16 clearly
/// wins; more clearly when the machine was busy while it was timed.
fn decide(f32_rate: f64, bf16_rate: f64, busy: bool) -> Precision {
    let margin = if busy { 1.25 } else { 1.1 };
    if bf16_rate > margin * f32_rate {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

/// `<cache_dir>/scalenet/precision-<cpu>.json`.
fn cache_path(cache_dir: &Path, cpu: &str) -> PathBuf {
    let name: String = cpu
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    cache_dir
        .join("scalenet")
        .join(format!("precision-{name}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_fixed_ones_stay() {
        assert_eq!("auto".parse::<Requested>(), Ok(Requested::Auto));
        assert_eq!(
            "bf16".parse::<Requested>(),
            Ok(Requested::Fixed(Precision::Bf16))
        );
        assert!("fp8".parse::<Requested>().unwrap_err().contains("auto"));
        let d = resolve(Requested::Fixed(Precision::F32), "flex").unwrap();
        assert_eq!(d.precision, Precision::F32);
        let auto = |device: &str| resolve(Requested::Auto, device).unwrap().precision;
        assert_eq!(auto("cuda:0"), Precision::Bf16);
    }

    /// wgpu has no bf16: auto keeps f32 there, and asking for bf16 is one clear line.
    #[test]
    fn bf16_on_wgpu_is_refused_and_auto_keeps_f32() {
        assert_eq!(
            resolve(Requested::Auto, "wgpu").unwrap().precision,
            Precision::F32
        );
        let e = resolve(Requested::Fixed(Precision::Bf16), "wgpu").unwrap_err();
        assert!(
            e.starts_with("--precision bf16 is not supported on wgpu: "),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn bf16_must_clearly_win_and_more_so_when_timed_under_load() {
        assert_eq!(decide(186.0, 149.0, false), Precision::F32);
        assert_eq!(decide(100.0, 105.0, false), Precision::F32);
        assert_eq!(decide(63.0, 73.0, false), Precision::Bf16);
        assert_eq!(decide(63.0, 73.0, true), Precision::F32);
        assert_eq!(decide(100.0, 180.0, true), Precision::Bf16);
    }

    #[test]
    fn auto_on_the_cpu_decides_and_says_why() {
        let dir = std::env::temp_dir().join(format!("scalenet-auto-{}", std::process::id()));
        // The cache goes to a directory of the test's own, passed in: setting XDG_CACHE_HOME
        // would race with the other tests' threads reading the environment.
        let first = cpu_decision(Some(&dir));
        assert!(
            first.reason.starts_with("auto on this CPU"),
            "{}",
            first.reason
        );
        // The second decision is the cached one: the same, without measuring again (unless the
        // machine was busy, as under a parallel test run: then nothing was cached).
        let second = cpu_decision(Some(&dir));
        if super::super::gemm_bf16::available() && !first.reason.contains("not cached") {
            assert_eq!(second.precision, first.precision);
            assert!(
                second.reason.contains("measured earlier"),
                "{}",
                second.reason
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
