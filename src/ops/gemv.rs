//! Products with only a few rows in A (decoding one token at a time, batch 1 to 4): the packed
//! GEMM would copy all of B into panels on every call, which for a weight matrix costs more
//! than the product. Here B is read once, in place, row-major or column-major.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm_tile::{Product, View};
use super::math::{at_simd_level, simd_level};

/// The most rows of A this path takes.
pub const MAX_ROWS: usize = 4;

/// Columns of C per parallel task: two tasks per thread (a fixed 512 gave a 576-wide product
/// one task of 512 columns and one of 64, so one core did nearly all of it), a multiple of 16
/// (one AVX-512 vector), at most 1024 (a row of C stays in L1). Each column is summed in the
/// same order whatever the split, so the bits do not depend on the thread count.
fn task_width(n: usize) -> usize {
    let tasks = 2 * rayon::current_num_threads().max(1);
    n.div_ceil(tasks).next_multiple_of(16).clamp(64, 1024)
}

/// `y[i, :] += Σ_kk a[i, kk] · B[kk, n0..n0 + w]` for row-major B, four rows of B at a time so
/// that each pass over a row of y (the task's w columns) does four rows' work.
#[inline(always)]
fn row_major_generic(
    y: &mut [f32],
    a_rows: &[f32],
    (m, k): (usize, usize),
    b: &[f32],
    at: (isize, isize, usize),
) {
    let (base, rs, n0) = at;
    let w = y.len() / m;
    let row = |kk: usize| {
        let start = (base + kk as isize * rs) as usize + n0;
        &b[start..start + w]
    };
    let mut kk = 0;
    while kk + 4 <= k {
        let (r0, r1, r2, r3) = (row(kk), row(kk + 1), row(kk + 2), row(kk + 3));
        for (i, y) in y.chunks_exact_mut(w).enumerate() {
            let x = &a_rows[i * k + kk..][..4];
            let (x0, x1, x2, x3) = (x[0], x[1], x[2], x[3]);
            for ((((y, &v0), &v1), &v2), &v3) in y.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *y += x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3;
            }
        }
        kk += 4;
    }
    for kk in kk..k {
        let r = row(kk);
        for (i, y) in y.chunks_exact_mut(w).enumerate() {
            let x = a_rows[i * k + kk];
            for (y, &v) in y.iter_mut().zip(r) {
                *y += x * v;
            }
        }
    }
}

/// `y[i, j] += a[i, :] · B[:, n0 + j]` for column-major B: one dot product per column, in 8
/// lanes whatever the vector width (so the bits are the same at every width).
#[inline(always)]
fn col_major_generic(
    y: &mut [f32],
    a_rows: &[f32],
    (m, k): (usize, usize),
    b: &[f32],
    at: (isize, isize, usize),
) {
    let (base, cs, n0) = at;
    let w = y.len() / m;
    for j in 0..w {
        let start = (base + (n0 + j) as isize * cs) as usize;
        let col = &b[start..start + k];
        for i in 0..m {
            let row = &a_rows[i * k..(i + 1) * k];
            let mut acc = [0.0f32; 8];
            let (rc, cc) = (row.chunks_exact(8), col.chunks_exact(8));
            let (rr, cr) = (rc.remainder(), cc.remainder());
            for (x, y) in rc.zip(cc) {
                for l in 0..8 {
                    acc[l] += x[l] * y[l];
                }
            }
            let tail: f32 = rr.iter().zip(cr).map(|(x, y)| x * y).sum();
            y[i * w + j] += acc.iter().sum::<f32>() + tail;
        }
    }
}

at_simd_level! {
    fn col_major_at(y: &mut [f32], a_rows: &[f32], mk: (usize, usize), b: &[f32], at: (isize, isize, usize)) = col_major_generic;
}

at_simd_level! {
    /// At the CPU's vector width (the loop was compiled for baseline SSE: 4 lanes); no FMA is
    /// formed, so the bits are the same at every width.
    fn row_major_at(y: &mut [f32], a_rows: &[f32], mk: (usize, usize), b: &[f32], at: (isize, isize, usize)) = row_major_generic;
}

/// Whether [`gemm`] takes this product: few rows, and B contiguous along one dimension.
pub fn applies(m: usize, b: &View) -> bool {
    m <= MAX_ROWS && (b.cs == 1 || b.rs == 1)
}

/// C (m×n, row-major) = A (m×k) · B (k×n), or C += A·B with `accumulate` (C then initialised).
pub fn gemm(p: Product, c: &mut [MaybeUninit<f32>], accumulate: bool) {
    if p.trivial(c, accumulate) {
        return;
    }
    let Product { m, n, k, a, b } = p;
    debug_assert!(applies(m, &b));
    // A's rows, contiguous (m·k values: small by definition).
    let a_rows: Vec<f32> = (0..m)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| a.at(i, j))
        .collect();
    let base = b.offset as isize;
    let nc = task_width(n);
    // Each task owns columns [n0, n0 + nc) of every row of C, started from C or from zero.
    let mut cols: Vec<Vec<f32>> = (0..n.div_ceil(nc))
        .map(|t| {
            let (n0, n1) = (t * nc, ((t + 1) * nc).min(n));
            (0..m)
                .flat_map(|i| c[i * n + n0..i * n + n1].iter())
                // SAFETY: with `accumulate` the caller initialised C.
                .map(|v| {
                    if accumulate {
                        unsafe { v.assume_init() }
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    cols.par_iter_mut().enumerate().for_each(|(t, block)| {
        let n0 = t * nc;
        if b.cs == 1 {
            // Row-major B: contiguous rows of B, added into the task's columns of C.
            row_major_at(
                simd_level(),
                block,
                &a_rows,
                (m, k),
                b.data,
                (base, b.rs, n0),
            );
        } else {
            // Column-major B (a transposed weight, e.g. a tied LM head): one dot product per
            // column, over a contiguous column.
            col_major_at(
                simd_level(),
                block,
                &a_rows,
                (m, k),
                b.data,
                (base, b.cs, n0),
            );
        }
    });
    for (t, block) in cols.iter().enumerate() {
        let (n0, n1) = (t * nc, ((t + 1) * nc).min(n));
        let w = n1 - n0;
        for i in 0..m {
            for (o, &v) in c[i * n + n0..i * n + n1]
                .iter_mut()
                .zip(&block[i * w..(i + 1) * w])
            {
                o.write(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_give_the_same_bits_at_every_width() {
        let (m, k, w) = (3, 37, 40);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 31 % 89) as f32 - 44.0) / 17.0)
            .collect();
        let b: Vec<f32> = (0..k * w)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
            .collect();
        for (rs, cs) in [(w as isize, 1), (1, k as isize)] {
            let run = |level: u8| {
                let mut y = vec![0.5f32; m * w];
                if cs == 1 {
                    row_major_at(level, &mut y, &a, (m, k), &b, (0, rs, 0));
                } else {
                    col_major_at(level, &mut y, &a, (m, k), &b, (0, cs, 0));
                }
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            for level in 1..=simd_level() {
                assert_eq!(run(level), run(0), "level {level}, column stride {cs}");
            }
        }
    }

    #[test]
    fn matches_the_definition_in_both_layouts() {
        let (m, n, k) = (3, 1100, 70);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
            .collect();
        let want: Vec<f32> = (0..m * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum()
            })
            .collect();
        let bt: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
        let views = [View::strided(&b, 0, n, 1), View::strided(&bt, 0, 1, k)];
        for bv in views {
            for acc in [false, true] {
                let mut c: Vec<MaybeUninit<f32>> =
                    (0..m * n).map(|_| MaybeUninit::new(1.0)).collect();
                gemm(
                    Product::new(m, n, k, View::strided(&a, 0, k, 1), bv),
                    &mut c,
                    acc,
                );
                for (idx, (got, w)) in c.iter().zip(&want).enumerate() {
                    let got = unsafe { got.assume_init() };
                    let w = if acc { w + 1.0 } else { *w };
                    assert!((got - w).abs() < 1e-3, "{idx}: {got} vs {w}");
                }
            }
        }
    }
}
