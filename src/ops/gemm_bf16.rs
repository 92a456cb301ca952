//! A bf16 matrix product for CPUs with AVX512-BF16: f32 operands (any strides) are rounded to
//! bf16 while they are packed, products accumulate in f32 with `vdpbf16ps`, and the result is
//! f32. That is exactly what `torch.autocast(bfloat16)` computes for a matmul, without ever
//! materialising bf16 tensors. burn-flex's own bf16 matmul converts to f32 and runs the f32
//! GEMM, so it can only be slower than f32.
//!
//! Layout: B is packed once into panels of 32 columns (two zmm registers), each k-pair of a
//! column in one u32 (low half = row 2p, high half = row 2p+1), as `vdpbf16ps` wants; A is
//! packed per block of rows into the same pair format. The micro-kernel keeps an 8×32 tile of
//! C in 16 registers. Row blocks run in parallel on rayon's pool.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm_tile::{store_tile, tile_masks, MR, NR};
pub use super::gemm_tile::{Product, View};

/// Round-to-nearest-even f32 → bf16 bits (NaN stays NaN), as `vcvtneps2bf16`.
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        return (b >> 16) | 0x40;
    }
    (b + 0x7fff + ((b >> 16) & 1)) >> 16
}

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

/// Rows per parallel task: A's packed block (MC × k bf16) stays in L2.
const MC: usize = 128;

// The same entry as `gemm_f32`'s (availability, then `Product::trivial`); the kernels differ.
/// Whether [`gemm`] runs here: this CPU has it, and [`cap_simd`](super::math::cap_simd) allows it.
pub fn available() -> bool {
    // `Avx512Bf16` includes AVX512-BW, which the packing uses (16-bit lane permutes).
    super::math::simd() >= super::math::Simd::Avx512Bf16
}

/// C (m×n, row-major) = A (m×k) · B (k×n), in bf16 with f32 accumulation; with `accumulate`
/// the product is added to C (which must then be initialised), otherwise C is only written.
/// Panics unless [`available`].
pub fn gemm(p: Product, c: &mut [MaybeUninit<f32>], accumulate: bool) {
    assert!(available(), "gemm_bf16 needs AVX512-BF16");
    if p.trivial(c, accumulate) {
        return;
    }
    let Product { n, k, a, b, .. } = p;
    let kp = k.div_ceil(2); // k-pairs; an odd k is padded with a zero row
    let panels = n.div_ceil(NR);
    // Packed B: panel p, pair q, column j → bpack[(p * kp + q) * NR + j].
    let mut bpack = vec![0u32; panels * kp * NR];
    bpack
        .par_chunks_mut(kp * NR)
        .enumerate()
        .for_each(|(p, panel)| pack_b_panel(b, k, n, p * NR, panel));
    c.par_chunks_mut(MC * n)
        .enumerate()
        .for_each(|(blk, cblk)| {
            let row0 = blk * MC;
            let rows = cblk.len() / n;
            // Packed A block: row r, pair q → apack[r * a_rs + q * a_qs]; the layout follows A's
            // storage so that packing reads memory in order.
            let mut apack = vec![0u32; rows * kp];
            let (a_rs, a_qs) = pack_a_block(a, k, row0, rows, &mut apack);
            for p in 0..panels {
                let bp = &bpack[p * kp * NR..(p + 1) * kp * NR];
                let cols = NR.min(n - p * NR);
                let mut r = 0;
                while r < rows {
                    let mr = MR.min(rows - r);
                    // SAFETY: `available()` was checked above; the kernel reads `mr` rows of the
                    // packed A from row r, the whole panel, and writes `mr` × `cols` of C in bounds.
                    unsafe {
                        kernel(
                            mr,
                            cols,
                            kp,
                            &apack[r * a_rs..],
                            (a_rs, a_qs),
                            bp,
                            cblk[r * n + p * NR..].as_mut_ptr() as *mut f32,
                            n,
                            accumulate,
                        )
                    };
                    r += mr;
                }
            }
        });
}

/// Packs rows `row0..row0 + rows` of A; returns the (row, pair) strides of the packed block.
fn pack_a_block(a: View, k: usize, row0: usize, rows: usize, out: &mut [u32]) -> (usize, usize) {
    let kp = k.div_ceil(2);
    if a.cs == 1 {
        // Row-major A: a row's pairs are its elements in order.
        for r in 0..rows {
            let start = (a.offset as isize + (row0 + r) as isize * a.rs) as usize;
            convert_run(&a.data[start..start + k], &mut out[r * kp..(r + 1) * kp]);
        }
        (kp, 1)
    } else if a.rs == 1 {
        // Column-major A (a transposed activation): pair q of every row comes from columns
        // 2q and 2q+1, each contiguous over the rows.
        for q in 0..kp {
            let lo = (a.offset as isize + (2 * q) as isize * a.cs) as usize + row0;
            let hi = (2 * q + 1 < k).then(|| lo + a.cs as usize);
            interleave(a.data, lo, hi, &mut out[q * rows..(q + 1) * rows]);
        }
        (1, rows)
    } else {
        for r in 0..rows {
            for q in 0..kp {
                let lo = a.at(row0 + r, 2 * q);
                let hi = if 2 * q + 1 < k {
                    a.at(row0 + r, 2 * q + 1)
                } else {
                    0.0
                };
                out[r * kp + q] = pair(lo, hi);
            }
        }
        (kp, 1)
    }
}

/// Packs the 32-column panel of B starting at column `col0`.
fn pack_b_panel(b: View, k: usize, n: usize, col0: usize, panel: &mut [u32]) {
    let kp = k.div_ceil(2);
    let cols = NR.min(n - col0);
    if b.cs == 1 && cols == NR {
        // Row-major B (a weight in forward): rows 2q and 2q+1 interleave into pair q.
        for q in 0..kp {
            let lo = (b.offset as isize + (2 * q) as isize * b.rs) as usize + col0;
            let hi = (2 * q + 1 < k).then(|| lo + b.rs as usize);
            interleave(b.data, lo, hi, &mut panel[q * NR..(q + 1) * NR]);
        }
    } else if b.rs == 1 {
        // Column-major B (a transposed weight in backward): a column's pairs are in order.
        let mut col = vec![0u32; kp];
        for j in 0..cols {
            let start = (b.offset as isize + (col0 + j) as isize * b.cs) as usize;
            convert_run(&b.data[start..start + k], &mut col);
            for (q, &v) in col.iter().enumerate() {
                panel[q * NR + j] = v;
            }
        }
    } else {
        for q in 0..kp {
            for j in 0..cols {
                let lo = b.at(2 * q, col0 + j);
                let hi = if 2 * q + 1 < k {
                    b.at(2 * q + 1, col0 + j)
                } else {
                    0.0
                };
                panel[q * NR + j] = pair(lo, hi);
            }
        }
    }
}

/// Whether this CPU runs the AVX512-BF16 conversions (whatever the cap: a `--blas` library's
/// bf16 product converts its operands here on any CPU).
fn cpu_has_bf16() -> bool {
    super::math::cpu_simd() >= super::math::Simd::Avx512Bf16
}

/// `out[q] = pair(src[2q], src[2q+1])`, zero-padding an odd tail.
pub(crate) fn convert_run(src: &[f32], out: &mut [u32]) {
    assert_eq!(
        out.len(),
        src.len().div_ceil(2),
        "convert_run: one pair per two values"
    );
    #[cfg(target_arch = "x86_64")]
    if cpu_has_bf16() {
        // SAFETY: the CPU has the features, and the lengths agree (asserted).
        return unsafe { convert_run_avx512(src, out) };
    }
    for (q, o) in out.iter_mut().enumerate() {
        *o = pair(src[2 * q], src.get(2 * q + 1).copied().unwrap_or(0.0));
    }
}

/// Intrinsics inline only into functions compiled with their features; called from plain code
/// each one is a function call (10% of a bf16 training step before this was split out).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn convert_run_avx512(src: &[f32], out: &mut [u32]) {
    let full = src.len() / 32;
    // SAFETY: each step reads 32 floats and writes 16 pairs, within both slices.
    unsafe {
        use std::arch::x86_64::*;
        for i in 0..full {
            let x0 = _mm512_loadu_ps(src.as_ptr().add(32 * i));
            let x1 = _mm512_loadu_ps(src.as_ptr().add(32 * i + 16));
            // Low half ← x0, high half ← x1: bf16 element order = source order.
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(x1, x0));
            _mm512_storeu_si512(out.as_mut_ptr().add(16 * i) as *mut _, v);
        }
    }
    for q in 16 * full..out.len() {
        let lo = src[2 * q];
        let hi = src.get(2 * q + 1).copied().unwrap_or(0.0);
        out[q] = pair(lo, hi);
    }
}

/// `out[j] = pair(data[lo + j], data[hi + j])` (hi = None: zero), for j < out.len().
fn interleave(data: &[f32], lo: usize, hi: Option<usize>, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if cpu_has_bf16() {
        // SAFETY: the CPU has the features; the rows' bounds are checked inside.
        return unsafe { interleave_avx512(data, lo, hi, out) };
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o = pair(data[lo + j], hi.map_or(0.0, |h| data[h + j]));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn interleave_avx512(data: &[f32], lo: usize, hi: Option<usize>, out: &mut [u32]) {
    let n = out.len();
    let full = n / 16;
    // SAFETY: each step reads 16 floats from each row and writes 16 pairs, within the slices
    // (bounds asserted by the slicing below).
    unsafe {
        use std::arch::x86_64::*;
        let _ = &data[lo..lo + n];
        if let Some(h) = hi {
            let _ = &data[h..h + n];
        }
        // Interleaves the 16-bit halves: word 2j ← lo[j], word 2j+1 ← hi[j].
        let idx = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        for i in 0..full {
            let x0 = _mm512_loadu_ps(data.as_ptr().add(lo + 16 * i));
            let x1 = match hi {
                Some(h) => _mm512_loadu_ps(data.as_ptr().add(h + 16 * i)),
                None => _mm512_setzero_ps(),
            };
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(x1, x0));
            let v = _mm512_permutexvar_epi16(idx, v);
            _mm512_storeu_si512(out.as_mut_ptr().add(16 * i) as *mut _, v);
        }
    }
    for (j, o) in out.iter_mut().enumerate().skip(16 * full) {
        *o = pair(data[lo + j], hi.map_or(0.0, |h| data[h + j]));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    mr: usize,
    cols: usize,
    kp: usize,
    a: &[u32],
    (a_rs, a_qs): (usize, usize),
    b: &[u32],
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let ap = a.as_ptr();
    let bp = b.as_ptr();
    macro_rules! step {
        ($rows:expr) => {
            for q in 0..kp {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR) as *const _));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR + 16) as *const _));
                for (r, acc) in acc.iter_mut().enumerate().take($rows) {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*ap.add(r * a_rs + q * a_qs) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                }
            }
        };
    }
    // A constant row count lets the compiler unroll and keep all 16 accumulators in registers.
    match mr {
        8 => step!(8),
        7 => step!(7),
        6 => step!(6),
        5 => step!(5),
        4 => step!(4),
        3 => step!(3),
        2 => step!(2),
        _ => step!(1),
    }
    let masks = tile_masks(cols);
    store_tile(&acc[..mr], c, ldc, masks, accumulate);
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    _: usize,
    _: usize,
    _: usize,
    _: &[u32],
    _: (usize, usize),
    _: &[u32],
    _: *mut f32,
    _: usize,
    _: bool,
) {
    unreachable!("gemm_bf16 is only available on x86_64")
}

#[cfg(test)]
mod tests {
    use super::super::gemm_tile::test_operands::{assert_product, operands, SHAPES};
    use super::*;

    fn round(x: f32) -> f32 {
        f32::from_bits(bf16_bits(x) << 16)
    }

    fn check(c: &[f32], av: &[f32], bv: &[f32], (m, n, k): (usize, usize, usize)) {
        assert_product((m, n, k), (av, bv), round, 0.0, |i, j| c[i * n + j]);
    }

    #[test]
    fn matches_a_bf16_reference_for_every_layout_and_odd_shapes() {
        if !available() {
            return;
        }
        for (m, n, k) in SHAPES {
            let [av, bv, at, bt] = operands(m, n, k);
            // A also with a general stride (every other element).
            let ap: Vec<f32> = (0..m * k * 2)
                .map(|i| if i % 2 == 0 { av[i / 2] } else { 9.0 })
                .collect();
            let a_views = [
                View::strided(&av, 0, k, 1),
                View::strided(&at, 0, 1, m),
                View::strided(&ap, 0, 2 * k, 2),
            ];
            let b_views = [View::strided(&bv, 0, n, 1), View::strided(&bt, 0, 1, k)];
            for a in a_views {
                for b in b_views {
                    let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
                    gemm(Product::new(m, n, k, a, b), &mut c, false);
                    // SAFETY: gemm wrote every element.
                    let c: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
                    check(&c, &av, &bv, (m, n, k));
                    // Accumulating onto ones adds exactly one.
                    let mut c1 = vec![MaybeUninit::new(1.0f32); m * n];
                    gemm(Product::new(m, n, k, a, b), &mut c1, true);
                    // SAFETY: initialised above and accumulated into.
                    let c1: Vec<f32> = c1
                        .iter()
                        .map(|v| unsafe { v.assume_init() } - 1.0)
                        .collect();
                    check(&c1, &av, &bv, (m, n, k));
                }
            }
        }
    }
}
