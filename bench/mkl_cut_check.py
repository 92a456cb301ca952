#!/usr/bin/env python3
"""Checks that MKL's cblas_sgemm gives the same bits when a product is cut into blocks of rows
or columns, as `scalenet --blas` cuts it across its threads (src/ops/blas.rs). Run it on a new
CPU before trusting thread-count independence there:

    MKL_CBWR=AUTO,STRICT python3 bench/mkl_cut_check.py /path/to/libmkl_rt.so.3

Needs numpy. Exits 1 on any differing element.
"""
import ctypes
import sys

import numpy as np

lib = ctypes.CDLL(sys.argv[1] if len(sys.argv) > 1 else "libmkl_rt.so.3")
sgemm = lib.cblas_sgemm
P = ctypes.POINTER(ctypes.c_float)
sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, P, ctypes.c_int, P, ctypes.c_int,
                                       ctypes.c_float, P, ctypes.c_int]
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def ptr(a, off=0):
    return ctypes.cast(a.ctypes.data + 4 * off, P)


rng = np.random.default_rng(0)
bad = 0
# ViT forward products (A row-major, B a transposed weight) and weight gradients (A transposed).
for m, n, k, ta, tb in [(3152, 576, 192, 0, 1), (3152, 192, 768, 0, 1), (192, 576, 3152, 1, 0),
                        (768, 192, 3152, 1, 0), (12800, 288, 96, 0, 1), (96, 288, 12800, 1, 0),
                        (5, 4000, 576, 0, 1), (197, 197, 64, 0, 1)]:
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    lda, ldb = a.shape[1], b.shape[1]
    flags = (TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS)
    whole = np.zeros((m, n), np.float32)
    sgemm(ROW_MAJOR, *flags, m, n, k, 1.0, ptr(a), lda, ptr(b), ldb, 0.0, ptr(whole), n)
    for parts in (2, 3, 5):
        by_rows = np.zeros((m, n), np.float32)
        step = -(-m // parts)
        for r0 in range(0, m, step):
            r = min(step, m - r0)
            sgemm(ROW_MAJOR, *flags, r, n, k, 1.0, ptr(a, r0 if ta else r0 * lda), lda, ptr(b),
                  ldb, 0.0, ptr(by_rows, r0 * n), n)
        by_cols = np.zeros((m, n), np.float32)
        step = -(-n // parts)
        for c0 in range(0, n, step):
            c = min(step, n - c0)
            sgemm(ROW_MAJOR, *flags, m, c, k, 1.0, ptr(a), lda, ptr(b, c0 * ldb if tb else c0),
                  ldb, 0.0, ptr(by_cols, c0), n)
        diff_rows = int((by_rows.view(np.int32) != whole.view(np.int32)).sum())
        diff_cols = int((by_cols.view(np.int32) != whole.view(np.int32)).sum())
        bad += diff_rows + diff_cols
        print(f"{m}x{n}x{k} ta={ta} tb={tb} in {parts}: {diff_rows} elements differ cut by "
              f"rows, {diff_cols} by columns")
print("same bits however the products are cut" if bad == 0 else "DIFFERENT BITS")
sys.exit(1 if bad else 0)
