//! Products with only a few rows in A (decoding one token at a time, batch 1 to 4): the packed
//! GEMM would copy all of B into panels on every call, which for a weight matrix costs more
//! than the product. Here B is read once, in place, row-major or column-major.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm_bf16::View;

/// The most rows of A this path takes.
pub const MAX_ROWS: usize = 4;
/// Columns of C per parallel task.
const NC: usize = 512;

/// Whether [`gemm`] takes this product: few rows, and B contiguous along one dimension.
pub fn applies(m: usize, b: &View) -> bool {
    m <= MAX_ROWS && (b.cs == 1 || b.rs == 1)
}

/// C (m×n, row-major) = A (m×k) · B (k×n), or C += A·B with `accumulate` (C then initialised).
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    c: &mut [MaybeUninit<f32>],
    accumulate: bool,
) {
    debug_assert!(applies(m, &b));
    // A's rows, contiguous (m·k values: small by definition).
    let a_rows: Vec<f32> = (0..m)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| a.at(i, j))
        .collect();
    let base = b.offset as isize;
    // Each task owns columns [n0, n0 + NC) of every row of C, started from C or from zero.
    let mut cols: Vec<Vec<f32>> = (0..n.div_ceil(NC))
        .map(|t| {
            let (n0, n1) = (t * NC, ((t + 1) * NC).min(n));
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
        let (n0, n1) = (t * NC, ((t + 1) * NC).min(n));
        let w = n1 - n0;
        if b.cs == 1 {
            // Row-major B: y[i, :] += a[i, kk] · B[kk, n0..n1], one contiguous row at a time.
            for kk in 0..k {
                let start = (base + kk as isize * b.rs) as usize + n0;
                let row = &b.data[start..start + w];
                for i in 0..m {
                    let x = a_rows[i * k + kk];
                    for (y, &v) in block[i * w..(i + 1) * w].iter_mut().zip(row) {
                        *y += x * v;
                    }
                }
            }
        } else {
            // Column-major B (a transposed weight, e.g. a tied LM head): one dot product per
            // column, over a contiguous column.
            for j in 0..w {
                let start = (base + (n0 + j) as isize * b.cs) as usize;
                let col = &b.data[start..start + k];
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
                    block[i * w + j] += acc.iter().sum::<f32>() + tail;
                }
            }
        }
    });
    for (t, block) in cols.iter().enumerate() {
        let (n0, n1) = (t * NC, ((t + 1) * NC).min(n));
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
                gemm(m, n, k, View::strided(&a, 0, k, 1), bv, &mut c, acc);
                for (idx, (got, w)) in c.iter().zip(&want).enumerate() {
                    let got = unsafe { got.assume_init() };
                    let w = if acc { w + 1.0 } else { *w };
                    assert!((got - w).abs() < 1e-3, "{idx}: {got} vs {w}");
                }
            }
        }
    }
}
