//! What both AVX-512 GEMMs (`gemm_f32`, `gemm_bf16`) share: the strided view of an operand, and
//! the 8×32 tile of C's lane masks and store.

use std::mem::MaybeUninit;

/// A strided f32 matrix view: element (i, j) is `data[offset + i*rs + j*cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: isize,
    pub cs: isize,
}

impl<'a> View<'a> {
    /// A view of `data` from `offset` with row stride `rs` and column stride `cs`.
    pub fn strided(data: &'a [f32], offset: usize, rs: usize, cs: usize) -> Self {
        View {
            data,
            offset,
            rs: rs as isize,
            cs: cs as isize,
        }
    }

    /// Panics unless a rows×cols matrix read through this view lies inside `data`.
    fn check_extent(&self, rows: usize, cols: usize, name: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        assert!(self.rs >= 0 && self.cs >= 0, "{name}: negative strides");
        let last = self.offset as u128
            + (rows - 1) as u128 * self.rs as u128
            + (cols - 1) as u128 * self.cs as u128;
        assert!(last < self.data.len() as u128, "{name}: view out of bounds");
    }

    #[inline(always)]
    pub(crate) fn at(&self, i: usize, j: usize) -> f32 {
        self.data[(self.offset as isize + i as isize * self.rs + j as isize * self.cs) as usize]
    }
}

/// The tile of C that one kernel call keeps in registers: MR rows of NR columns, two zmm
/// registers a row (16 of the 32).
pub(crate) const NR: usize = 32;
pub(crate) const MR: usize = 8;

/// One product, C (m×n) = A (m×k) · B (k×n), with A and B read through their views: what
/// every GEMM here (AVX-512, GEMV, a CBLAS library, the portable one) is handed.
#[derive(Clone, Copy)]
pub struct Product<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: View<'a>,
    pub b: View<'a>,
}

impl<'a> Product<'a> {
    pub fn new(m: usize, n: usize, k: usize, a: View<'a>, b: View<'a>) -> Self {
        Self { m, n, k, a, b }
    }

    /// Does the products that multiply nothing: C empty (m or n = 0), or k = 0, where C is the
    /// zero matrix (left as it is with `accumulate`). True when that was all there was to do.
    pub(crate) fn trivial(&self, c: &mut [MaybeUninit<f32>], accumulate: bool) -> bool {
        assert_eq!(c.len(), self.m * self.n, "C holds m·n elements");
        // SAFETY: `c` holds m rows of n at stride n, initialised where it is read.
        unsafe { self.trivial_raw(c.as_mut_ptr() as *mut f32, self.n, accumulate) }
    }

    /// [`trivial`](Self::trivial) for C behind a pointer, at row stride `ldc`.
    ///
    /// # Safety
    /// `c` addresses m rows of n writable floats at stride `ldc`.
    pub(crate) unsafe fn trivial_raw(&self, c: *mut f32, ldc: usize, accumulate: bool) -> bool {
        if self.m == 0 || self.n == 0 {
            return true;
        }
        if self.k > 0 {
            return false;
        }
        if !accumulate {
            for r in 0..self.m {
                // SAFETY: row r of C, by the contract.
                unsafe { std::ptr::write_bytes(c.add(r * ldc), 0, self.n) };
            }
        }
        true
    }

    /// Panics unless A's m×k and B's k×n elements all lie inside their slices (non-negative
    /// strides): an O(1) check before the views leave Rust as raw pointers.
    pub(crate) fn check_extents(&self) {
        self.a.check_extent(self.m, self.k, "A");
        self.b.check_extent(self.k, self.n, "B");
    }
}

/// Lane masks for a tile `cols` (≤ 32) wide: the low and the high 16 columns.
pub(crate) fn tile_masks(cols: usize) -> (u16, u16) {
    let mask = |w: usize| {
        if w >= 16 {
            0xffff
        } else {
            ((1u32 << w) - 1) as u16
        }
    };
    (mask(cols), mask(cols.saturating_sub(16)))
}

/// Writes (or with `accumulate` adds) each row's two accumulators to C, masked to the tile.
///
/// # Safety
/// `c` addresses `acc.len()` rows at stride `ldc` of the masked columns, initialised if
/// `accumulate`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store_tile(
    acc: &[[std::arch::x86_64::__m512; 2]],
    c: *mut f32,
    ldc: usize,
    (lo_mask, hi_mask): (u16, u16),
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: by the function's contract.
        unsafe {
            let out = c.add(r * ldc);
            // A tile 16 columns wide or less may end its buffer: the high half's address is
            // then past the end, with a zero mask (nothing touched), formed by `wrapping_add`
            // since an out-of-bounds `add` is UB.
            let out_hi = out.wrapping_add(16);
            let (mut lo, mut hi) = (acc[0], acc[1]);
            if accumulate {
                lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(lo_mask, out));
                hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(hi_mask, out_hi));
            }
            _mm512_mask_storeu_ps(out, lo_mask, lo);
            _mm512_mask_storeu_ps(out_hi, hi_mask, hi);
        }
    }
}

/// Operands shared by both GEMMs' tests.
#[cfg(test)]
pub(crate) mod test_operands {
    use super::{Product, View};

    /// Odd sizes, partial panels and row blocks, K across several passes.
    pub const SHAPES: [(usize, usize, usize); 9] = [
        (1, 1, 1),
        (9, 33, 7),
        (130, 70, 300),
        (17, 16, 65),
        (8, 32, 2),
        (200, 64, 600),
        (33, 96, 3),
        // Several full panels, K across passes and not a multiple of 8.
        (37, 130, 300),
        (16, 160, 13),
    ];

    /// A (m×k) and B (k×n) row-major, then the same values stored column-major.
    pub fn operands(m: usize, n: usize, k: usize) -> [Vec<f32>; 4] {
        let av: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let bv: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0)
            .collect();
        let at = (0..m * k).map(|i| av[(i % m) * k + i / m]).collect();
        let bt = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
        [av, bv, at, bt]
    }

    /// The products of `ops` (from [`operands`]) in every layout: A and B each row- and
    /// column-major.
    pub fn layouts(ops: &[Vec<f32>; 4], (m, n, k): (usize, usize, usize)) -> Vec<Product<'_>> {
        let [av, bv, at, bt] = ops;
        let a = [View::strided(av, 0, k, 1), View::strided(at, 0, 1, m)];
        let b = [View::strided(bv, 0, n, 1), View::strided(bt, 0, 1, k)];
        a.iter()
            .flat_map(|&a| b.iter().map(move |&b| Product::new(m, n, k, a, b)))
            .collect()
    }

    /// Asserts that `got(i, j)` is `start + Σ_t round(a[i,t]) · round(b[t,j])` (`a` m×k and
    /// `b` k×n, row-major) to f32's accuracy, against a sum in f64. `round` is the identity for
    /// f32 products and the rounding to bf16 for bf16 ones.
    pub fn assert_product(
        (m, n, k): (usize, usize, usize),
        (a, b): (&[f32], &[f32]),
        round: impl Fn(f32) -> f32,
        start: f64,
        got: impl Fn(usize, usize) -> f32,
    ) {
        for i in 0..m {
            for j in 0..n {
                let want = start
                    + (0..k)
                        .map(|t| round(a[i * k + t]) as f64 * round(b[t * n + j]) as f64)
                        .sum::<f64>();
                let got = got(i, j) as f64;
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{m}x{n}x{k} ({i},{j}): {got} vs {want}"
                );
            }
        }
    }
}
