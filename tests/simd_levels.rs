//! Every SIMD path of the CPU kernels, on every CPU that has it: each level this CPU offers
//! (portable, AVX2+FMA, AVX-512F, AVX512-BF16) runs the products (f32 and bf16, forward and
//! backward), the convolution, attention (ViT and causal), GELU, LayerNorm and the
//! language-model loss against f64 references (burn's for the convolution), over shapes with
//! 0, 1 and tile sizes ± 1 and transposed operands. A level this CPU lacks says so and
//! passes. Its own test binary: the cap is process-wide, and the tests here take turns.

use std::sync::{Arc, Mutex};

use burn::tensor::{Device, Tensor, TensorData};
use scalenet::model::weights::to_vec;
use scalenet::ops::math::{cap_simd, cpu_simd, Simd};
use scalenet::ops::{autocast, Precision};

static TURNS: Mutex<()> = Mutex::new(());

/// Runs every check with the kernels capped at `level`, or says why it cannot.
fn at_level(level: Simd) {
    let _turn = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    if cpu_simd() < level {
        eprintln!(
            "SIMD level {level:?} skipped: this CPU offers up to {:?}",
            cpu_simd()
        );
        return;
    }
    cap_simd(level);
    let checks: [(&str, fn()); 8] = [
        ("f32 products", products_f32),
        ("bf16 products", products_bf16),
        ("product gradients", product_gradients),
        ("convolution", convolution),
        ("attention", attention),
        ("causal attention", causal_attention),
        ("elementwise", elementwise),
        ("loss", loss),
    ];
    let result = std::panic::catch_unwind(|| {
        for (name, check) in checks {
            eprintln!("SIMD level {level:?}: {name}");
            check();
        }
    });
    cap_simd(Simd::Avx512Bf16);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    eprintln!("SIMD level {level:?} ran");
}

#[test]
fn portable() {
    at_level(Simd::Portable);
}

#[test]
fn avx2_fma() {
    at_level(Simd::Avx2Fma);
}

#[test]
fn avx512() {
    at_level(Simd::Avx512);
}

#[test]
fn avx512_bf16() {
    at_level(Simd::Avx512Bf16);
}

/// Deterministic values in [-1, 1); with `bf16_exact`, multiples of 1/64 (exact in bf16).
fn values(n: usize, salt: usize, bf16_exact: bool) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let v = ((i * 7919 + salt * 104_729) % 1009) as f32 / 504.5 - 1.0;
            if bf16_exact {
                (v * 64.0).round() / 64.0
            } else {
                v
            }
        })
        .collect()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// `[rows, cols]` from a row-major matrix, stored transposed when `transposed` (a strided view
/// for the kernels).
fn matrix(v: &[f32], (rows, cols): (usize, usize), transposed: bool, dev: &Device) -> Tensor<2> {
    if !transposed {
        return tensor(v.to_vec(), [rows, cols], dev);
    }
    let t: Vec<f32> = (0..rows * cols)
        .map(|i| v[(i % rows) * cols + i / rows])
        .collect();
    tensor(t, [cols, rows], dev).transpose()
}

/// C = A·B in f64 (A m×k, B k×n, row-major).
fn product_f64(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for t in 0..k {
            let x = a[i * k + t] as f64;
            for j in 0..n {
                c[i * n + j] += x * b[t * n + j] as f64;
            }
        }
    }
    c
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() / w.abs().max(1.0);
        assert!(err <= tol, "{what}: element {i}: {g} vs {w}");
    }
}

/// Empty, one, the 8×32 tile ± 1, several tiles and row blocks, a GEMV-sized product.
const SHAPES: [(usize, usize, usize); 10] = [
    (0, 3, 4),
    (3, 0, 4),
    (3, 4, 0),
    (1, 1, 1),
    (7, 9, 31),
    (8, 16, 32),
    (9, 17, 33),
    (2, 40, 70),
    (33, 64, 65),
    (130, 70, 300),
];

fn check_products(bf16: bool) {
    let dev = Device::flex();
    let _precision = autocast(if bf16 {
        Precision::Bf16
    } else {
        Precision::F32
    });
    for (m, k, n) in SHAPES {
        let (a, b) = (values(m * k, 1, bf16), values(k * n, 2, bf16));
        let want = product_f64(&a, &b, (m, k, n));
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (x, w) = (matrix(&a, (m, k), ta, &dev), matrix(&b, (k, n), tb, &dev));
            let what = format!("{m}x{k}x{n} A^T {ta} B^T {tb} bf16 {bf16}");
            assert_close(
                &to_vec(scalenet::ops::matmul(x.clone(), w.clone())),
                &want,
                1e-4,
                &what,
            );
            // With a bias: the bias is C's starting value.
            let bias = values(n, 3, bf16);
            let with_bias: Vec<f64> = want
                .iter()
                .enumerate()
                .map(|(i, v)| v + bias[i % n.max(1)] as f64)
                .collect();
            let y = scalenet::ops::linear(x, w, Some(tensor(bias, [n], &dev)));
            assert_close(&to_vec(y), &with_bias, 1e-4, &format!("linear {what}"));
        }
    }
}

fn products_f32() {
    check_products(false);
}

/// bf16-exact operands: a bf16 product equals the f32 one to f32 accumulation.
fn products_bf16() {
    check_products(true);
}

/// d(Σ C ⊙ G)/dA = G·Bᵀ and /dB = Aᵀ·G: the backward's products read transposed operands.
fn product_gradients() {
    let dev = Device::flex().autodiff();
    for (m, k, n) in [(1, 1, 1), (9, 17, 33), (33, 64, 65)] {
        let (a, b, g) = (
            values(m * k, 4, false),
            values(k * n, 5, false),
            values(m * n, 6, false),
        );
        let x = tensor(a.clone(), [m, k], &dev).require_grad();
        let w = tensor(b.clone(), [k, n], &dev).require_grad();
        let grads = (scalenet::ops::matmul(x.clone(), w.clone()) * tensor(g.clone(), [m, n], &dev))
            .sum()
            .backward();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let what = format!("gradients {m}x{k}x{n}");
        assert_close(
            &to_vec(x.grad(&grads).unwrap()),
            &product_f64(&g, &bt, (m, n, k)),
            1e-4,
            &what,
        );
        assert_close(
            &to_vec(w.grad(&grads).unwrap()),
            &product_f64(&at, &g, (k, m, n)),
            1e-4,
            &what,
        );
    }
}

/// The convolution (column products on the capped kernels) against burn's own `conv2d`,
/// forward and every gradient: 3×3 padded, strided, and 1×1.
fn convolution() {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    let dev = Device::flex().autodiff();
    for (n, c, hw, co, k, s, p) in [
        (2, 5, 6, 9, 3, 1, 1),
        (1, 3, 9, 4, 3, 2, 1),
        (2, 7, 4, 33, 1, 1, 0),
    ] {
        let run = |ours: bool| {
            let x = tensor(values(n * c * hw * hw, 7, false), [n, c, hw, hw], &dev).require_grad();
            let w = tensor(values(co * c * k * k, 8, false), [co, c, k, k], &dev).require_grad();
            let b = tensor(values(co, 9, false), [co], &dev).require_grad();
            let y = if ours {
                scalenet::ops::conv2d(x.clone(), w.clone(), Some(b.clone()), s, p)
            } else {
                let opts = ConvOptions::new([s, s], [p, p], [1, 1], 1);
                conv2d(x.clone(), w.clone(), Some(b.clone()), opts)
            };
            let dims = y.dims();
            let g = tensor(values(dims.iter().product(), 10, false), dims, &dev);
            let grads = (y.clone() * g).sum().backward();
            let flat = |t: Tensor<4>| to_vec(t.flatten::<1>(0, 3));
            let gb = to_vec(b.grad(&grads).unwrap());
            [
                flat(y),
                flat(x.grad(&grads).unwrap()),
                flat(w.grad(&grads).unwrap()),
                gb,
            ]
        };
        let (got, want) = (run(true), run(false));
        for (i, what) in ["forward", "d x", "d w", "d b"].iter().enumerate() {
            let want: Vec<f64> = want[i].iter().map(|&v| v as f64).collect();
            assert_close(
                &got[i],
                &want,
                1e-4,
                &format!("conv {n}x{c}x{hw} k{k} s{s}: {what}"),
            );
        }
    }
}

/// softmax(q kᵀ / √hd, masked past `limit(i)`) v for one head, in f64.
fn attend_f64(
    q: &dyn Fn(usize, usize) -> f32,
    k: &dyn Fn(usize, usize) -> f32,
    v: &dyn Fn(usize, usize) -> f32,
    (t, hd): (usize, usize),
    limit: &dyn Fn(usize) -> usize,
) -> Vec<f64> {
    let mut out = vec![0f64; t * hd];
    for i in 0..t {
        let keys = limit(i);
        let scores: Vec<f64> = (0..keys)
            .map(|j| {
                (0..hd)
                    .map(|e| q(i, e) as f64 * k(j, e) as f64)
                    .sum::<f64>()
                    / (hd as f64).sqrt()
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        for (j, e) in exps.iter().enumerate() {
            for c in 0..hd {
                out[i * hd + c] += e / sum * v(j, c) as f64;
            }
        }
    }
    out
}

/// `[b, t, heads·hd]` from each (batch item, head)'s `[t, hd]` output.
fn merged_heads(
    (b, t, heads, hd): (usize, usize, usize, usize),
    head: impl Fn(usize, usize) -> Vec<f64>,
) -> Vec<f64> {
    let d = heads * hd;
    let mut out = vec![0f64; b * t * d];
    for bi in 0..b {
        for h in 0..heads {
            for (i, row) in head(bi, h).chunks(hd.max(1)).enumerate() {
                out[(bi * t + i) * d + h * hd..][..hd].copy_from_slice(row);
            }
        }
    }
    out
}

/// timm's attention core on a fused qkv `[b, n, 3d]`.
fn attention() {
    let dev = Device::flex();
    for (b, n, heads, hd) in [
        (2, 0, 2, 4),
        (0, 5, 2, 4),
        (1, 1, 1, 8),
        (2, 9, 3, 8),
        (1, 50, 3, 64),
    ] {
        let d = heads * hd;
        let qkv = values(b * n * 3 * d, 7, false);
        let got = to_vec(scalenet::ops::attention(
            tensor(qkv.clone(), [b, n, 3 * d], &dev),
            heads,
        ));
        let want = merged_heads((b, n, heads, hd), |bi, h| {
            let at = |which: usize| {
                let qkv = &qkv;
                move |i: usize, e: usize| qkv[(bi * n + i) * 3 * d + which * d + h * hd + e]
            };
            attend_f64(&at(0), &at(1), &at(2), (n, hd), &|_| n)
        });
        assert_close(
            &got,
            &want,
            1e-4,
            &format!("attention b {b} n {n} heads {heads} hd {hd}"),
        );
    }
}

/// A language model's attention: causal, grouped-query, after cached keys.
fn causal_attention() {
    let dev = Device::flex();
    for (b, t, s, heads, kv, hd) in [
        (1, 0, 3, 2, 1, 4),
        (1, 1, 1, 1, 1, 8),
        (2, 5, 9, 4, 2, 8),
        (1, 33, 33, 3, 3, 16),
    ] {
        let (q, k, v) = (
            values(b * heads * t * hd, 8, false),
            values(b * kv * s * hd, 9, false),
            values(b * kv * s * hd, 10, false),
        );
        let got = to_vec(scalenet::ops::causal_attention(
            tensor(q.clone(), [b, heads, t, hd], &dev),
            tensor(k.clone(), [b, kv, s, hd], &dev),
            tensor(v.clone(), [b, kv, s, hd], &dev),
        ));
        let want = merged_heads((b, t, heads, hd), |bi, h| {
            let g = h / (heads / kv);
            let qf = |i: usize, e: usize| q[((bi * heads + h) * t + i) * hd + e];
            let kf = |j: usize, e: usize| k[((bi * kv + g) * s + j) * hd + e];
            let vf = |j: usize, e: usize| v[((bi * kv + g) * s + j) * hd + e];
            attend_f64(&qf, &kf, &vf, (t, hd), &|i| s - t + i + 1)
        });
        assert_close(
            &got,
            &want,
            1e-4,
            &format!("causal attention b {b} t {t} s {s}"),
        );
    }
}

/// GELU and LayerNorm, at lengths around the vector widths.
fn elementwise() {
    let dev = Device::flex();
    for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 1000] {
        let x: Vec<f32> = values(len, 11, false).iter().map(|v| v * 6.0).collect();
        let got = to_vec(scalenet::ops::gelu(tensor(x.clone(), [len], &dev)));
        let want: Vec<f64> = x.iter().map(|&v| gelu_f64(v as f64)).collect();
        assert_close(&got, &want, 1e-5, &format!("gelu of {len}"));
    }
    for (rows, d) in [(0, 8), (1, 1), (3, 7), (5, 16), (4, 33)] {
        let x = values(rows * d, 12, false);
        let (gamma, beta) = (values(d, 13, false), values(d, 14, false));
        let got = to_vec(scalenet::ops::layer_norm(
            tensor(x.clone(), [rows, d], &dev),
            tensor(gamma.clone(), [d], &dev),
            tensor(beta.clone(), [d], &dev),
            1e-6,
        ));
        let mut want = vec![0f64; rows * d];
        for r in 0..rows {
            let row: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            for c in 0..d {
                let xhat = (row[c] - mean) / (var + 1e-6).sqrt();
                want[r * d + c] = xhat * gamma[c] as f64 + beta[c] as f64;
            }
        }
        assert_close(&got, &want, 1e-4, &format!("layer norm {rows}x{d}"));
    }
}

fn gelu_f64(x: f64) -> f64 {
    // erf by Simpson's rule: a reference independent of the kernels' polynomial.
    let erf = |z: f64| {
        let n = 2000;
        let h = z / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(z);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    };
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// Each row's negative log-likelihood of its target.
fn loss() {
    let dev = Device::flex();
    for (rows, vocab) in [(0, 5), (1, 1), (3, 7), (4, 17), (2, 1000)] {
        let logits: Vec<f32> = values(rows * vocab, 15, false)
            .iter()
            .map(|v| v * 8.0)
            .collect();
        let targets: Vec<u32> = (0..rows).map(|r| ((r * 31) % vocab) as u32).collect();
        let got = to_vec(scalenet::ops::nll(
            tensor(logits.clone(), [rows, vocab], &dev),
            Arc::from(targets.clone()),
        ));
        let want: Vec<f64> = (0..rows)
            .map(|r| {
                let row = &logits[r * vocab..(r + 1) * vocab];
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max
                    + row
                        .iter()
                        .map(|&v| (v as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                lse - row[targets[r] as usize] as f64
            })
            .collect();
        assert_close(&got, &want, 1e-5, &format!("nll {rows}x{vocab}"));
    }
}
