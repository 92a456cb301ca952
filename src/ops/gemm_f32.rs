//! An f32 matrix product for CPUs with AVX-512: the same blocking as [`super::gemm_bf16`]
//! (B packed once into 32-column panels, an 8×32 tile of C in 16 zmm registers, row blocks in
//! parallel), with A read in place through its strides — f32 needs no conversion, so any
//! layout (row-major activations, transposed activations in backward) is broadcast straight
//! from memory. On the ViT shapes it replaces the `gemm` crate's AVX2 kernel that burn-flex
//! uses (docs/PERFORMANCE.md has both measured).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm_tile::{store_tile, tile_masks, Product, View, MR, NR};

/// Rows per parallel task.
const MC: usize = 128;
/// K per pass over a panel: a 256×32 f32 panel slice (32 KiB) stays in L1 while a row block
/// streams past it.
const KC: usize = 256;

/// Whether [`gemm`] runs here: this CPU has it, and [`cap_simd`](super::math::cap_simd) allows it.
pub fn available() -> bool {
    super::math::simd() >= super::math::Simd::Avx512
}

/// C (m×n, row-major) = A (m×k) · B (k×n) in f32; with `accumulate` the product is added to C
/// (which must then be initialised), otherwise C is only written. Panics unless [`available`].
pub fn gemm(p: Product, c: &mut [MaybeUninit<f32>], accumulate: bool) {
    assert!(available(), "gemm_f32 needs AVX-512");
    if p.trivial(c, accumulate) {
        return;
    }
    let Product { m, n, k, a, b } = p;
    let bsrc = BSource::new(b, k, n, true);
    check_a(a, m, k);
    let tasks = 4 * rayon::current_num_threads();
    let mc = m.div_ceil(tasks).next_multiple_of(MR).clamp(MR, MC);
    c.par_chunks_mut(mc * n)
        .enumerate()
        .for_each(|(blk, cblk)| {
            let rows = cblk.len() / n;
            // SAFETY: A was checked, `cblk` holds `rows` full rows of C at stride n.
            unsafe {
                block(
                    rows,
                    blk * mc,
                    (n, k),
                    a,
                    &bsrc,
                    cblk.as_mut_ptr() as *mut f32,
                    n,
                    accumulate,
                )
            };
        });
}

/// Like [`gemm`] on the calling thread only, with C at row stride `ldc` and overwritten: for
/// many small products that the caller already runs in parallel (attention heads).
///
/// # Safety
/// `c` must address m rows of n writable floats at row stride `ldc`.
pub unsafe fn gemm_serial(p: Product, c: *mut f32, ldc: usize) {
    let Product { m, n, k, a, b } = p;
    assert!(available(), "gemm_f32 needs AVX-512");
    // SAFETY: C by the caller's contract.
    if unsafe { p.trivial_raw(c, ldc, false) } {
        return;
    }
    let bsrc = BSource::new(b, k, n, false);
    check_a(a, m, k);
    // SAFETY: A was checked; C by the caller's contract.
    unsafe { block(m, 0, (n, k), a, &bsrc, c, ldc, false) };
}

/// The same product through the `gemm` crate (burn-flex's GEMM), for CPUs without AVX-512.
///
/// # Safety
/// The views address m×k and k×n elements inside their slices; `c` addresses m rows of n
/// floats at stride `ldc`, initialised if `accumulate`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_portable(p: Product, c: *mut f32, ldc: usize, accumulate: bool, parallel: bool) {
    let Product { m, n, k, a, b } = p;
    // SAFETY: C by the caller's contract.
    if unsafe { p.trivial_raw(c, ldc, accumulate) } {
        return;
    }
    p.check_extents();
    let par = if parallel && m * n * k >= 64 * 64 * 64 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: by the function's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.cs,
            a.rs,
            b.data.as_ptr().add(b.offset),
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Where the kernel reads B: row-major B (unit column stride) in place — packing a large B,
/// such as the output gradient in a weight gradient, would copy all of it every call — and
/// any other layout packed into 32-column panels.
enum BSource<'a> {
    InPlace(View<'a>),
    Packed(Vec<f32>),
}

impl<'a> BSource<'a> {
    fn new(b: View<'a>, k: usize, n: usize, parallel: bool) -> Self {
        if b.cs == 1 && b.rs >= 0 {
            let end = b.offset + (k - 1) * b.rs as usize + n;
            assert!(end <= b.data.len(), "gemm_f32: B out of bounds");
            BSource::InPlace(b)
        } else {
            BSource::Packed(pack_b(b, k, n, parallel))
        }
    }

    /// Pointer to (row k0, column 32·p) and the row stride.
    fn panel(&self, p: usize, k0: usize, k: usize) -> (*const f32, usize) {
        match self {
            BSource::InPlace(b) => {
                let at = b.offset + k0 * b.rs as usize + p * NR;
                (b.data[at..].as_ptr(), b.rs as usize)
            }
            BSource::Packed(v) => (v[(p * k + k0) * NR..].as_ptr(), NR),
        }
    }
}

/// B packed into 32-column panels: panel p, row kk, column j → [(p * k + kk) * NR + j],
/// zero-padded past column n.
fn pack_b(b: View, k: usize, n: usize, parallel: bool) -> Vec<f32> {
    let panels = n.div_ceil(NR);
    let mut bpack = vec![0f32; panels * k * NR];
    let pack = |(p, panel): (usize, &mut [f32])| {
        let col0 = p * NR;
        let cols = NR.min(n - col0);
        if b.rs == 1 && b.cs > 0 {
            // B is a transposed row-major matrix (a transposed weight in backward): its columns
            // are contiguous runs, transposed in 8×8 register blocks.
            let start = b.offset + col0 * b.cs as usize;
            transpose(&b.data[start..], b.cs as usize, (cols, k), panel, NR);
            return;
        }
        for kk in 0..k {
            let dst = &mut panel[kk * NR..kk * NR + cols];
            if b.cs == 1 {
                let start = (b.offset as isize + kk as isize * b.rs) as usize + col0;
                dst.copy_from_slice(&b.data[start..start + cols]);
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = b.at(kk, col0 + j);
                }
            }
        }
    };
    if parallel {
        bpack.par_chunks_mut(k * NR).enumerate().for_each(pack);
    } else {
        bpack.chunks_mut(k * NR).enumerate().for_each(pack);
    }
    bpack
}

/// `dst[c·dst_rs + r] = src[r·src_rs + c]` for a rows×cols block of `src`: 8×8 blocks
/// through AVX registers where the CPU has AVX (a transpose is only moved bits, so every path
/// gives the same result), element by element at the edges.
pub(super) fn transpose(
    src: &[f32],
    src_rs: usize,
    (rows, cols): (usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src_rs >= cols && dst_rs >= rows,
        "transpose: overlapping rows"
    );
    assert!(
        (rows - 1) * src_rs + cols <= src.len(),
        "transpose: source out of bounds"
    );
    assert!(
        (cols - 1) * dst_rs + rows <= dst.len(),
        "transpose: destination out of bounds"
    );
    let (mut r8, mut c8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        for r in (0..r8).step_by(8) {
            for c in (0..c8).step_by(8) {
                // SAFETY: the 8×8 blocks lie inside the bounds checked above.
                unsafe {
                    transpose8x8(
                        src.as_ptr().add(r * src_rs + c),
                        src_rs,
                        dst.as_mut_ptr().add(c * dst_rs + r),
                        dst_rs,
                    )
                };
            }
        }
    }
    for r in 0..rows {
        let from = if r < r8 { c8 } else { 0 };
        for c in from..cols {
            dst[c * dst_rs + r] = src[r * src_rs + c];
        }
    }
}

/// # Safety
/// `src` addresses 8 rows of 8 floats at stride `src_rs`, `dst` 8 rows of 8 at `dst_rs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8(src: *const f32, src_rs: usize, dst: *mut f32, dst_rs: usize) {
    use std::arch::x86_64::*;
    // SAFETY: by the function's contract.
    unsafe {
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, r) in r.iter_mut().enumerate() {
            *r = _mm256_loadu_ps(src.add(i * src_rs));
        }
        // Pairs of rows interleaved, then pairs of pairs: u0..u3 hold, in each 128-bit lane,
        // columns 0/4, 1/5, 2/6, 3/7 of rows 0–3, u4..u7 the same of rows 4–7.
        let (t0, t1) = (
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
        );
        let (t2, t3) = (
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
        );
        let (t4, t5) = (
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
        );
        let (t6, t7) = (
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        );
        let u = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
            _mm256_shuffle_ps::<0x44>(t4, t6),
            _mm256_shuffle_ps::<0xEE>(t4, t6),
            _mm256_shuffle_ps::<0x44>(t5, t7),
            _mm256_shuffle_ps::<0xEE>(t5, t7),
        ];
        for i in 0..4 {
            _mm256_storeu_ps(
                dst.add(i * dst_rs),
                _mm256_permute2f128_ps::<0x20>(u[i], u[4 + i]),
            );
            _mm256_storeu_ps(
                dst.add((4 + i) * dst_rs),
                _mm256_permute2f128_ps::<0x31>(u[i], u[4 + i]),
            );
        }
    }
}

/// A is read in place: checks once that every element it addresses lies inside its storage.
fn check_a(a: View, m: usize, k: usize) {
    let (m1, k1) = (m as isize - 1, k as isize - 1);
    let last = a.offset as isize + m1 * a.rs.max(0) + k1 * a.cs.max(0);
    let first = a.offset as isize + m1 * a.rs.min(0) + k1 * a.cs.min(0);
    assert!(
        first >= 0 && (last as usize) < a.data.len(),
        "gemm_f32: A out of bounds"
    );
}

/// Rows `row0..row0 + rows` of C (`c` points at row0, row stride `ldc`), all K passes.
///
/// # Safety
/// A checked with [`check_a`]; `c` addresses `rows` × n floats at stride `ldc`, initialised
/// if `accumulate`.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    rows: usize,
    row0: usize,
    (n, k): (usize, usize),
    a: View,
    bsrc: &BSource,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let panels = n.div_ceil(NR);
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let acc = accumulate || k0 > 0;
        for p in 0..panels {
            let (bp, b_rs) = bsrc.panel(p, k0, k);
            let cols = NR.min(n - p * NR);
            let mut r = 0;
            while r < rows {
                let mr = tile_rows(rows - r);
                let a0 = a.offset as isize + (row0 + r) as isize * a.rs + k0 as isize * a.cs;
                // SAFETY: by this function's contract; the panel slice holds kc × 32 floats.
                unsafe {
                    kernel(
                        mr,
                        cols,
                        kc,
                        a.data.as_ptr().offset(a0),
                        (a.rs, a.cs),
                        (bp, b_rs),
                        c.add(r * ldc + p * NR),
                        ldc,
                        acc,
                    )
                };
                r += mr;
            }
        }
    }
}

/// Rows of the next tile when `left` rows remain: a short last tile (50 attention rows would end
/// in 2) has too few accumulators to hide the FMA latency and costs as much as a full one, so
/// the last 9–15 rows are split into two tiles of at least 5.
fn tile_rows(left: usize) -> usize {
    if left > MR && left < 2 * MR {
        left.div_ceil(2)
    } else {
        MR.min(left)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    mr: usize,
    cols: usize,
    kc: usize,
    a: *const f32,
    (a_rs, a_cs): (isize, isize),
    (b, b_rs): (*const f32, usize),
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let (lo_mask, hi_mask) = tile_masks(cols);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    macro_rules! step {
        ($rows:expr) => {
            for q in 0..kc {
                // Masked: an in-place B's last panel is narrower than 32 columns. The high
                // half's address may lie past B's end when its mask is 0 (nothing is read):
                // `wrapping_add` forms it without the UB of an out-of-bounds `add`.
                let b0 = _mm512_maskz_loadu_ps(lo_mask, b.add(q * b_rs));
                let b1 = _mm512_maskz_loadu_ps(hi_mask, b.wrapping_add(q * b_rs + 16));
                let aq = a.offset(q as isize * a_cs);
                for (r, acc) in acc.iter_mut().enumerate().take($rows) {
                    let av = _mm512_set1_ps(*aq.offset(r as isize * a_rs));
                    acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
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
    store_tile(&acc[..mr], c, ldc, (lo_mask, hi_mask), accumulate);
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    _: usize,
    _: usize,
    _: usize,
    _: *const f32,
    _: (isize, isize),
    _: (*const f32, usize),
    _: *mut f32,
    _: usize,
    _: bool,
) {
    unreachable!("gemm_f32 is only available on x86_64")
}

#[cfg(test)]
mod tests {
    use super::super::gemm_tile::test_operands::{assert_product, layouts, operands, SHAPES};
    use super::*;

    #[test]
    fn matches_f64_reference_for_every_layout_and_odd_shapes() {
        if !available() {
            return;
        }
        for (m, n, k) in SHAPES {
            let ops = operands(m, n, k);
            for p in layouts(&ops, (m, n, k)) {
                for acc in [false, true] {
                    let init = if acc { 1.0f32 } else { f32::NAN };
                    let mut c = vec![MaybeUninit::new(init); m * n];
                    gemm(p, &mut c, acc);
                    let start = if acc { 1.0 } else { 0.0 };
                    // SAFETY: gemm wrote every element.
                    let got = |i: usize, j: usize| unsafe { c[i * n + j].assume_init() };
                    assert_product((m, n, k), (&ops[0], &ops[1]), |x| x, start, got);
                }
            }
        }
    }

    #[test]
    fn transpose_moves_every_element_at_odd_sizes() {
        for (rows, cols) in [(1, 1), (8, 8), (50, 32), (17, 9), (7, 64), (197, 64)] {
            let (src_rs, dst_rs) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * src_rs).map(|i| i as f32).collect();
            let mut dst = vec![-1.0; cols * dst_rs];
            transpose(&src, src_rs, (rows, cols), &mut dst, dst_rs);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * dst_rs + r], src[r * src_rs + c], "{rows}x{cols}");
                }
                // Padding past the block is left alone.
                for c in 0..cols {
                    for pad in rows..dst_rs {
                        assert_eq!(dst[c * dst_rs + pad], -1.0);
                    }
                }
            }
        }
    }

    /// The fallback for CPUs without AVX-512 (not otherwise reached on this machine).
    #[test]
    fn portable_path_matches_too() {
        let (m, n, k) = (33, 40, 21);
        let [av, bv, at, bt] = operands(m, n, k);
        for (a, b) in [
            (View::strided(&av, 0, k, 1), View::strided(&bt, 0, 1, k)),
            (View::strided(&at, 0, 1, m), View::strided(&bv, 0, n, 1)),
        ] {
            let mut c = vec![1.0f32; m * n];
            // SAFETY: c holds m × n initialised floats.
            unsafe { gemm_portable(Product::new(m, n, k, a, b), c.as_mut_ptr(), n, true, true) };
            assert_product((m, n, k), (&av, &bv), |x| x, 1.0, |i, j| c[i * n + j]);
        }
    }
}
