//! 2-D convolution (square kernel, one stride and padding, no dilation or groups: every
//! convolution of the segmentation and detection heads) as column products on our GEMM.
//!
//! Why: burn-flex runs its convolutions and their backward (a transposed convolution for the
//! input's gradient) on the `gemm` crate's AVX2 kernel in f32, whatever `--precision` says;
//! they were 60% of a RetinaNet training step at the study's shape (docs/PERFORMANCE.md).
//! Here the output pixels of the whole batch are the product's columns, in blocks whose
//! im2col buffer stays small: the heads' maps are a few pixels wide, and a product per image
//! would be too thin to run fast.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm::cpu_gemm;
use super::gemm_tile::View;

/// A convolution's stride and padding (both axes), and whether its products run in bf16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub stride: usize,
    pub pad: usize,
    pub bf16: bool,
}

/// The shapes of one convolution: input `[n, c, h, w]`, weight `[co, c, k, k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvDims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvDims {
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }

    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Whether [`forward`] runs this convolution well. Its product streams the whole weight
    /// through every thread's rows once per column block, which a weight of a few MiB (a head's
    /// 3×3 over 64–256 channels) makes cheap and one of tens (UperNet's 3×3 fusion over 2,048
    /// channels, 38 MiB) makes slower than burn's cache-blocked GEMM: 1.04 against 1.75 images/s
    /// for UperNet + Swin-Tiny inference. The backward's products keep the small operand
    /// packed whatever the weight, so it is ours for every size.
    pub fn forward_is_ours(&self) -> bool {
        self.co * self.rows() <= 1 << 20
    }

    /// Output pixels of one image.
    fn p(&self) -> usize {
        self.ho() * self.wo()
    }

    /// The product's inner dimension: one row of the column buffer per (channel, ky, kx).
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Output pixels (columns) per block: whole output rows, the column buffer near 16 MiB.
    fn block(&self) -> usize {
        let wo = self.wo().max(1);
        let rows_per = ((1 << 22) / (self.rows() * wo).max(1)).max(1);
        (rows_per * wo).min((self.n * self.p()).max(wo))
    }

    /// Every column block: (first output pixel of the batch, pixels).
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let (total, b) = (self.n * self.p(), self.block());
        (0..total).step_by(b).map(move |s| (s, b.min(total - s)))
    }
}

/// Items of `len` elements per rayon task: ~16K elements, so that a head's maps of a few
/// pixels are not split into tasks that cost more to schedule than to run.
fn min_len(len: usize) -> usize {
    (16 * 1024 / len.max(1)).max(1)
}

/// A pointer that threads writing disjoint elements share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every use writes elements no other thread touches (see the call sites).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// Calls `f(image, first pixel, column, run)` for each run of the columns
/// `start..start + cols` that lies in one image (`unit` = its pixels) or in one output row
/// (`unit` = the row's width). Blocks start and end on whole output rows.
fn runs(
    d: &ConvDims,
    (start, cols): (usize, usize),
    unit: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let p = d.p();
    let mut j = 0;
    while j < cols {
        let q = start + j;
        let pix = q % p;
        let run = (unit - pix % unit).min(cols - j);
        f(q / p, pix, j, run);
        j += run;
    }
}

/// The output columns `ox` whose tap `kx` reads inside the input row (not the padding).
fn valid_ox(d: &ConvDims, kx: usize) -> (usize, usize) {
    let (s, pad, wo) = (d.stride, d.pad, d.wo());
    let lo = pad.saturating_sub(kx).div_ceil(s).min(wo);
    let hi = match (d.w - 1 + pad).checked_sub(kx) {
        Some(last) => (last / s + 1).min(wo),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// One tap (ci, ky, kx) of the kernel: where it reads in each output row.
struct Tap {
    ci: usize,
    ky: usize,
    kx: usize,
    /// Output columns `lo..hi` read inside the input row; the rest read padding.
    lo: usize,
    hi: usize,
}

impl Tap {
    fn new(d: &ConvDims, r: usize) -> Self {
        let k = d.k;
        let (ci, ky, kx) = (r / (k * k), r / k % k, r % k);
        let (lo, hi) = valid_ox(d, kx);
        Tap { ci, ky, kx, lo, hi }
    }

    /// The input row's offset in `x` that output row `oy` of image `img` reads; None in the
    /// padding.
    fn row(&self, d: &ConvDims, img: usize, oy: usize) -> Option<usize> {
        let iy = (oy * d.stride + self.ky)
            .checked_sub(d.pad)
            .filter(|&iy| iy < d.h)?;
        Some(((img * d.c + self.ci) * d.h + iy) * d.w)
    }

    /// The input column output column `ox` reads (inside `lo..hi`).
    #[inline(always)]
    fn ix(&self, d: &ConvDims, ox: usize) -> usize {
        ox * d.stride + self.kx - d.pad
    }
}

/// The column buffer `[rows, cols]` of output pixels `start..start + cols`: row
/// (ci, ky, kx) holds the input each pixel's tap reads (zero in the padding).
fn im2col(x: &[f32], d: &ConvDims, block: (usize, usize), col: &mut [f32]) {
    let wo = d.wo();
    col.par_chunks_mut(block.1)
        .with_min_len(min_len(block.1))
        .enumerate()
        .for_each(|(r, row)| {
            let tap = Tap::new(d, r);
            runs(d, block, wo, |img, pix, j, _| {
                let out = &mut row[j..j + wo];
                let Some(at) = tap.row(d, img, pix / wo) else {
                    out.fill(0.0);
                    return;
                };
                out[..tap.lo].fill(0.0);
                out[tap.hi..].fill(0.0);
                let line = &x[at..at + d.w];
                if d.stride == 1 {
                    let i0 = tap.ix(d, tap.lo);
                    out[tap.lo..tap.hi].copy_from_slice(&line[i0..i0 + tap.hi - tap.lo]);
                } else {
                    for ox in tap.lo..tap.hi {
                        out[ox] = line[tap.ix(d, ox)];
                    }
                }
            });
        });
}

/// Adds the column gradients `[rows, cols]` back onto the input pixels they were read from.
/// One task per input channel: its rows write that channel's planes alone.
fn col2im(dcol: &[f32], d: &ConvDims, block: (usize, usize), dx: &mut [f32]) {
    let (kk, wo) = (d.k * d.k, d.wo());
    assert_eq!(dx.len(), d.n * d.c * d.h * d.w);
    let dxp = Shared(dx.as_mut_ptr());
    dcol.par_chunks(block.1 * kk)
        .with_min_len(min_len(block.1 * kk))
        .enumerate()
        .for_each(move |(ci, rows)| {
            let dxp = dxp;
            for (r, row) in rows.chunks(block.1).enumerate() {
                let tap = Tap::new(d, ci * kk + r);
                runs(d, block, wo, |img, pix, j, _| {
                    let Some(at) = tap.row(d, img, pix / wo) else {
                        return;
                    };
                    // SAFETY: in bounds (asserted above); channel ci's planes are written by
                    // this task alone.
                    let line = unsafe { std::slice::from_raw_parts_mut(dxp.0.add(at), d.w) };
                    if d.stride == 1 {
                        let i0 = tap.ix(d, tap.lo);
                        let src = &row[j + tap.lo..j + tap.hi];
                        for (v, &g) in line[i0..i0 + src.len()].iter_mut().zip(src) {
                            *v += g;
                        }
                    } else {
                        for ox in tap.lo..tap.hi {
                            line[tap.ix(d, ox)] += row[j + ox];
                        }
                    }
                });
            }
        });
}

/// Output pixels `start..start + cols` of `src [n, co, p]` as the products' `[cols, co]`
/// (one row per pixel).
fn gather(d: &ConvDims, block: (usize, usize), src: &[f32], gt: &mut [f32]) {
    let (p, co) = (d.p(), d.co);
    gt.par_chunks_mut(p.min(block.1) * co)
        .with_min_len(min_len(p.min(block.1) * co))
        .enumerate()
        .for_each(|(c, rows)| {
            let q0 = block.0 + c * p.min(block.1);
            for (i, row) in rows.chunks_mut(co).enumerate() {
                let (img, pix) = ((q0 + i) / p, (q0 + i) % p);
                for (o, v) in row.iter_mut().enumerate() {
                    *v = src[(img * co + o) * p + pix];
                }
            }
        });
}

/// The products' `[cols, co]` + `bias` into output pixels `start..start + cols` of
/// `out [n, co, p]`. One task per output channel: it writes that channel's planes alone.
fn scatter(d: &ConvDims, block: (usize, usize), ct: &[f32], bias: &[f32], out: &mut [f32]) {
    let (p, co) = (d.p(), d.co);
    assert_eq!(out.len(), d.n * co * p);
    let outp = Shared(out.as_mut_ptr());
    (0..co)
        .into_par_iter()
        .with_min_len(min_len(block.1))
        .for_each(move |o| {
            let outp = outp;
            runs(d, block, p, |img, pix, j, run| {
                // SAFETY: in bounds (asserted above); channel o is written by this task alone.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(outp.0.add((img * co + o) * p + pix), run)
                };
                for (t, v) in dst.iter_mut().enumerate() {
                    *v = ct[(j + t) * co + o] + bias[o];
                }
            });
        });
}

fn product(
    (m, n, k): (usize, usize, usize),
    a: View,
    b: View,
    c: &mut [f32],
    accumulate: bool,
    bf16: bool,
) {
    // SAFETY: f32 has no invalid bit patterns; the GEMM reads C only with `accumulate`.
    let c = unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) };
    cpu_gemm((m, n, k), a, b, &mut c[..m * n], accumulate, bf16);
}

/// `x [n, c, h, w]` ⊛ `w [co, c, k, k]` + `bias [co]` → `[n, co, ho, wo]`. With `bf16` the
/// products take bf16-rounded inputs (the caller checks the CPU has the kernel).
///
/// Each block's product has the pixels as its rows, `[cols, co] = colᵀ · wᵀ`: the many
/// pixel rows split across threads, and the small weight is the operand packed once.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: &[f32], d: &ConvDims, bf16: bool) -> Vec<f32> {
    let (rows, co, b) = (d.rows(), d.co, d.block());
    let mut out = vec![0.0; d.n * co * d.p()];
    let mut col = vec![0.0; rows * b];
    let mut ct = vec![0.0; b * co];
    // wᵀ row-major: the GEMM reads it in place in every block instead of packing it again.
    let w_t = transposed(w, co, rows);
    let w_t = View::strided(&w_t, 0, co, 1);
    for (start, cols) in d.blocks() {
        im2col(x, d, (start, cols), &mut col[..rows * cols]);
        let col_t = View::strided(&col, 0, 1, cols);
        product((cols, co, rows), col_t, w_t, &mut ct, false, bf16);
        scatter(d, (start, cols), &ct[..cols * co], bias, &mut out);
    }
    out
}

/// `m [r, c]` row-major as `[c, r]` row-major.
fn transposed(m: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0; r * c];
    super::gemm_f32::transpose(m, c, (r, c), &mut t, r);
    t
}

/// The gradients of [`forward`] with respect to x, w and the bias, given the output's `g`.
pub(crate) fn backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    d: &ConvDims,
    bf16: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (rows, co, b, p) = (d.rows(), d.co, d.block(), d.p());
    let mut dx = vec![0.0; x.len()];
    let mut dw_t = vec![0.0; rows * co];
    let db: Vec<f32> = (0..co)
        .into_par_iter()
        .map(|o| {
            (0..d.n)
                .map(|i| g[(i * co + o) * p..][..p].iter().sum::<f32>())
                .sum()
        })
        .collect();
    let mut col = vec![0.0; rows * b];
    let mut gt = vec![0.0; b * co];
    let w_t = View::strided(w, 0, 1, rows);
    for (start, cols) in d.blocks() {
        gather(d, (start, cols), g, &mut gt[..cols * co]);
        // dwᵀ [rows, co] += col [rows, cols] · gᵀ [cols, co]
        im2col(x, d, (start, cols), &mut col[..rows * cols]);
        let colv = View::strided(&col, 0, cols, 1);
        let gv = View::strided(&gt, 0, co, 1);
        product((rows, co, cols), colv, gv, &mut dw_t, start > 0, bf16);
        // dcol [rows, cols] = wᵀ [rows, co] · g [co, cols], then back onto the pixels.
        let g_blk = View::strided(&gt, 0, 1, co);
        product((rows, cols, co), w_t, g_blk, &mut col, false, bf16);
        col2im(&col[..rows * cols], d, (start, cols), &mut dx);
    }
    (dx, transposed(&dw_t, rows, co), db)
}
