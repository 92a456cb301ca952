//! GFLOP/s of `ops::gemm_f32` on the transformer shapes (forward products and the weight
//! gradients, whose A is a transposed activation), best of N runs so that a shared machine's
//! noise reads as little as possible. For docs/PERFORMANCE.md and kernel work:
//! `cargo run --release --example gemm_shapes -- ROWS DIM [RUNS]`; with `SCALENET_BLAS=PATH`
//! the same products through that CBLAS library are timed beside ours; on CPUs with
//! AVX512-BF16 the bf16 products too (ours, and the library's where it has one: MKL).
use std::mem::MaybeUninit;
use std::time::Instant;

use scalenet::ops::gemm_bf16::{Product, View};

fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn view(data: &[f32], rs: usize, cs: usize) -> View<'_> {
    View {
        data,
        offset: 0,
        rs: rs as isize,
        cs: cs as isize,
    }
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, d) = (
        a.first().copied().unwrap_or(6400),
        a.get(1).copied().unwrap_or(192),
    );
    let runs = a.get(2).copied().unwrap_or(20);
    if !scalenet::ops::gemm_f32::available() {
        eprintln!("gemm_f32 needs AVX-512");
        return;
    }
    let lib = match scalenet::ops::blas::from_env() {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("rows {m}, dim {d}, best of {runs}");
    if let Some(lib) = lib {
        println!("BLAS: {}", lib.path().display());
    }
    // (name, rows, k, n, A transposed)
    let shapes = [
        ("qkv", m, d, 3 * d, false),
        ("fc1", m, d, 4 * d, false),
        ("fc2", m, 4 * d, d, false),
        ("dW qkv", d, m, 3 * d, true),
        ("dW fc2", 4 * d, m, d, true),
        ("sq2048", 2048, 2048, 2048, false),
    ];
    for (name, rows, k, n, transposed) in shapes {
        let av: Vec<f32> = (0..rows * k).map(|i| (i % 13) as f32 * 0.1).collect();
        let bv: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut c = vec![MaybeUninit::new(0f32); rows * n];
        let a = if transposed {
            view(&av, 1, rows)
        } else {
            view(&av, k, 1)
        };
        let b = view(&bv, n, 1);
        let s = best(runs, || {
            scalenet::ops::gemm_f32::gemm(Product::new(rows, n, k, a, b), &mut c, false)
        });
        let gf = |s: f64| 2.0 * (rows * k * n) as f64 / s / 1e9;
        print!(
            "{name:8} {rows:5}x{k:5}x{n:5}  {:8.3} ms  {:6.1} GFLOP/s",
            s * 1e3,
            gf(s)
        );
        if let Some(lib) = lib {
            let t = best(runs, || {
                // SAFETY: the views and C hold the sizes described.
                let done = unsafe {
                    lib.gemm(
                        Product::new(rows, n, k, a, b),
                        c.as_mut_ptr() as *mut f32,
                        n,
                        false,
                        false,
                    )
                };
                assert!(done, "the library refused a plain layout");
            });
            print!("   BLAS {:6.1} GFLOP/s", gf(t));
        }
        if scalenet::ops::gemm_bf16::available() {
            let t = best(runs, || {
                scalenet::ops::gemm_bf16::gemm(Product::new(rows, n, k, a, b), &mut c, false)
            });
            print!("   bf16 {:6.1}", gf(t));
        }
        if let Some(lib) = lib.filter(|l| l.has_bf16()) {
            let t = best(runs, || {
                // SAFETY: as above.
                let done = unsafe {
                    lib.gemm(
                        Product::new(rows, n, k, a, b),
                        c.as_mut_ptr() as *mut f32,
                        n,
                        false,
                        true,
                    )
                };
                assert!(done, "the library refused a plain layout");
            });
            print!("   BLAS bf16 {:6.1}", gf(t));
        }
        println!();
    }
}
