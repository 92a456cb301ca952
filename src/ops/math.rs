//! Branch-free f32 `erf` and `exp` that the compiler vectorises, for the fused CPU kernels.
//! libm's scalar `erff` was 6% of a training step on its own (profile in docs/PERFORMANCE.md).
//! Also which SIMD level the kernels run at ([`simd`]), and a cap on it for tests.

use std::sync::atomic::{AtomicU8, Ordering};

/// erf(x) as a rational polynomial on [-4, 4] (Eigen's `generic_fast_erf_float`); outside that
/// range erf is ±1 in f32. Max abs error ~1e-7 against f64 erf (tested).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_6e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let p = x * p;
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    // The polynomial is 6e-8 short of ±1 at the clamp, which GELU would turn into -x·3e-8
    // instead of 0 for very negative x; f32 erf is exactly ±1 beyond 3.92 anyway.
    if x.abs() >= 3.92 {
        1f32.copysign(x)
    } else {
        p / q
    }
}

/// e^x for x <= 0 down to underflow (what the GELU backward needs): 2^n · P(r) with a
/// degree-6 polynomial on |r| <= ln2/2; relative error ~2e-7 (tested).
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds x·log2(e) to an integer held in the sum's low mantissa bits, so n
    // and 2^n come without `round()` and a float→int `as` (which saturates and checks NaN per
    // element, and so was extracted lane by lane: most of the softmax's time in a profile).
    const SHIFT: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = n.mul_add(-0.693_145_75, x);
    let r = n.mul_add(-1.428_606_8e-6, r);
    let mut p = r.mul_add(1.0 / 720.0, 1.0 / 120.0);
    p = r.mul_add(p, 1.0 / 24.0);
    p = r.mul_add(p, 1.0 / 6.0);
    p = r.mul_add(p, 0.5);
    p = r.mul_add(p, 1.0);
    p = r.mul_add(p, 1.0);
    // n + 127 >= 1 (x >= -87), so this is 2^n's exponent field.
    p * f32::from_bits(t.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(127) << 23)
}

/// σ(x) = 1 / (1 + e^−x), from [`exp_neg`] of −|x| so that e never overflows: for x < 0,
/// σ(x) = e^x / (1 + e^x). Branch-free, so it vectorises.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_neg(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// A fold over `r` with 8 accumulators, combined at the end with `f` too (so `f` must be an
/// operation such as + or max, not a map-and-add): the compiler vectorises it, and the order of
/// operations depends on the length alone, so every SIMD width gives the same bits.
#[inline(always)]
pub fn reduce8(r: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let mut chunks = r.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    acc.iter().fold(tail, |a, &v| f(a, v))
}

/// Σ a·b with 8 accumulators, as [`reduce8`] sums: vectorised, and the same bits at every
/// SIMD width.
#[inline(always)]
pub fn dot8(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(0.0, |s, (x, y)| x.mul_add(*y, s));
    acc.iter().fold(tail, |s, &v| s + v)
}

/// The instruction sets the kernels use, each level including those below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// Baseline x86-64 (or another architecture): the portable loops and the `gemm` crate.
    Portable = 0,
    /// AVX2 with FMA: 8-lane loops.
    Avx2Fma = 1,
    /// AVX-512F: 16-lane loops and our f32 GEMM.
    Avx512 = 2,
    /// AVX512-BF16 (with AVX512-BW): our bf16 GEMM.
    Avx512Bf16 = 3,
}

impl Simd {
    pub const ALL: [Simd; 4] = [
        Simd::Portable,
        Simd::Avx2Fma,
        Simd::Avx512,
        Simd::Avx512Bf16,
    ];
}

/// What this CPU offers (detected once: every kernel call asks).
pub fn cpu_simd() -> Simd {
    static DETECTED: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(detect_simd)
}

fn detect_simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512 = avx2_fma && is_x86_feature_detected!("avx512f");
        let bf16 = avx512
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16");
        match (bf16, avx512, avx2_fma) {
            (true, _, _) => Simd::Avx512Bf16,
            (_, true, _) => Simd::Avx512,
            (_, _, true) => Simd::Avx2Fma,
            _ => Simd::Portable,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    Simd::Portable
}

/// The cap set by [`cap_simd`]; `u8::MAX` is none.
static CAP: AtomicU8 = AtomicU8::new(u8::MAX);

/// Caps the level every kernel uses from now on, for the whole process: tests run each path
/// with it, on any CPU that has the path. A lower level is slower and gives the same results
/// to f32 rounding (the elementwise kernels the same bits). Set it before work starts: a
/// product already running keeps the kernel it chose.
pub fn cap_simd(level: Simd) {
    CAP.store(level as u8, Ordering::Relaxed);
}

/// The level the kernels use: this CPU's, under the cap.
pub fn simd() -> Simd {
    let cpu = cpu_simd();
    match CAP.load(Ordering::Relaxed) {
        cap if cap < cpu as u8 => Simd::ALL[cap as usize],
        _ => cpu,
    }
}

/// The vector width level of [`at_simd_level`]: 2 = AVX-512 (with AVX2 and FMA), 1 = AVX2 with
/// FMA, 0 = baseline.
pub fn simd_level() -> u8 {
    (simd() as u8).min(2)
}

/// Defines `$name(level, args…)`, which runs the `#[inline(always)]` function `$body(args…)`
/// compiled for vector level `level` ([`simd_level`], capped at the CPU's): the loops inside get
/// 16 lanes at 2 and 8 at 1. FMA is part of both levels because without it `f32::mul_add` is a
/// libm call. The kernels do the same IEEE operations in the same order at every width (sums
/// through [`reduce8`] and [`dot8`]), so the level never changes a result's bits; their tests
/// check that at each level.
///
/// A macro, not a function taking a closure: LLVM may keep a closure out of line, called from
/// the wide wrapper but compiled for baseline x86-64, which it did for two of the five kernels.
macro_rules! at_simd_level {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        fn $name(level: u8, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // SAFETY (both): the level is capped at what this CPU has.
                match level.min($crate::ops::math::simd_level()) {
                    2 => return unsafe { avx512($($arg),*) },
                    1 => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = level;
            $body($($arg),*)
        }
    };
}
pub(crate) use at_simd_level;

#[cfg(test)]
mod tests {
    use super::*;

    fn erf64(x: f64) -> f64 {
        // Abramowitz–Stegun 7.1.28 is too coarse for a reference; integrate instead.
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_matches_f64_reference() {
        let mut worst = 0.0f64;
        for i in -600..=600 {
            let x = i as f64 / 100.0;
            worst = worst.max((erf(x as f32) as f64 - erf64(x)).abs());
        }
        assert!(worst < 3e-7, "max abs error {worst}");
    }

    #[test]
    fn exp_neg_matches_std() {
        let mut worst = 0.0f64;
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let want = (x as f64).exp();
            let rel = ((exp_neg(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "max rel error {worst}");
    }
}
