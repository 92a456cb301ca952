//! GFLOP/s of `ops::gemm_f32` on the transformer shapes (forward products and the weight
//! gradients, whose A is a transposed activation), best of N runs so that a shared machine's
//! noise reads as little as possible. For docs/PERFORMANCE.md and kernel work:
//! `cargo run --release --example gemm_shapes -- ROWS DIM [RUNS]`
use std::mem::MaybeUninit;
use std::time::Instant;

use scalenet::ops::gemm_bf16::View;

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
    println!("rows {m}, dim {d}, best of {runs}");
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
            scalenet::ops::gemm_f32::gemm(rows, n, k, a, b, &mut c, false)
        });
        let gf = 2.0 * (rows * k * n) as f64 / s / 1e9;
        println!(
            "{name:8} {rows:5}x{k:5}x{n:5}  {:8.3} ms  {gf:6.1} GFLOP/s",
            s * 1e3
        );
    }
}
