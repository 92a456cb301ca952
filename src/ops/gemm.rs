//! The one entry to the CPU's matrix products: each product goes to the kernel that suits its
//! shape and this CPU (GEMV, a `--blas` library, our AVX-512 GEMMs, the `gemm` crate).

use std::mem::MaybeUninit;

use super::gemm_tile::{Product, View};
use super::{blas, gemm_bf16, gemm_f32, gemv};

/// C (m×n) = A·B, or += with `accumulate`, on whichever CPU kernel suits the shape: few-row
/// products on the GEMV path, large ones on a `--blas` library where one is in use, the rest
/// on our AVX-512 kernels (f32 or bf16) or the `gemm` crate. bf16 needs
/// `gemm_bf16::available()`.
pub(crate) fn cpu_gemm(
    (m, n, k): (usize, usize, usize),
    a: View,
    b: View,
    buf: &mut [MaybeUninit<f32>],
    accumulate: bool,
    bf16: bool,
) {
    let p = Product::new(m, n, k, a, b);
    if gemv::applies(m, &b) {
        gemv::gemm(p, buf, accumulate);
    } else if blas::active()
        .filter(|_| m * n * k >= blas::MIN_FLOPS)
        // SAFETY: as for gemm_portable below.
        .is_some_and(|lib| unsafe {
            let c = buf.as_mut_ptr() as *mut f32;
            lib.gemm(p, c, n, accumulate, bf16)
        })
    {
        // The library wrote C.
    } else if bf16 {
        gemm_bf16::gemm(p, buf, accumulate);
    } else if gemm_f32::available() {
        gemm_f32::gemm(p, buf, accumulate);
    } else {
        // SAFETY: the views address their elements inside their storage (burn's layouts
        // guarantee it) and `buf` holds m × n, initialised by the bias rows if `accumulate`.
        let c = buf.as_mut_ptr() as *mut f32;
        unsafe { gemm_f32::gemm_portable(p, c, n, accumulate, true) };
    }
}
