//! Times the pieces of one ViT block on the flex backend (forward, and forward+backward),
//! for docs/PERFORMANCE.md. `cargo run --release --example op_profile -- BATCH TOKENS DIM
//! [HEADS]` (heads default to DIM / 64, as in DeiT-Tiny); with `SCALENET_BLAS=PATH` the large
//! products run on that CBLAS library, as `--blas` would make them.
use std::time::Instant;

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::{attention, layer_norm, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution, Tensor};

/// Best of 7 runs after one warm-up: on a shared VM the fastest run is the one least disturbed.
/// `OP_FILTER=text` times only the pieces whose name contains it.
fn time<F: FnMut()>(name: &str, flops: f64, mut f: F) {
    if std::env::var("OP_FILTER").is_ok_and(|p| !name.contains(&p)) {
        return;
    }
    f();
    let s = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let gf = if flops > 0.0 {
        format!("{:7.1} GFLOP/s", flops / s / 1e9)
    } else {
        String::new()
    };
    println!("{name:40} {:8.2} ms {gf}", s * 1e3);
}

fn main() {
    scalenet::device::tune_host_allocator();
    // The same library `--blas` would use, so the products time what a run would.
    match scalenet::ops::blas::from_env() {
        Ok(Some(lib)) => eprintln!("products on {}", lib.path().display()),
        Ok(None) => {}
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (b, n, d) = (
        a.first().copied().unwrap_or(128),
        a.get(1).copied().unwrap_or(50),
        a.get(2).copied().unwrap_or(192),
    );
    let h = a.get(3).copied().unwrap_or((d / 64).max(1));
    let hd = d / h;
    let dev = Device::flex();
    let r = |s: [usize; 3]| Tensor::<3>::random(s, Distribution::Normal(0.0, 1.0), &dev);
    let w = |i: usize, o: usize| Tensor::<2>::random([i, o], Distribution::Normal(0.0, 0.02), &dev);
    let bias = |o: usize| Tensor::<1>::zeros([o], &dev);
    let x = r([b, n, d]);
    let rows = (b * n) as f64;
    for (name, o) in [("qkv", 3 * d), ("proj", d), ("fc1", 4 * d)] {
        let wt = w(d, o);
        let fl = 2.0 * rows * d as f64 * o as f64;
        time(&format!("linear {name} 3-D (burn policy)"), fl, || {
            let _ = linear(x.clone(), wt.clone(), Some(bias(o)));
        });
        let x2 = x.clone().reshape([b * n, d]);
        time(&format!("matmul {name} 2-D, no bias"), fl, || {
            let _ = x2.clone().matmul(wt.clone());
        });
        time(&format!("scalenet::ops::linear {name}"), fl, || {
            let _ = scalenet::ops::linear(x2.clone(), wt.clone(), Some(bias(o)));
        });
        time(&format!("scalenet::ops::linear {name}"), fl, || {
            let _ = scalenet::ops::linear(x2.clone(), wt.clone(), Some(bias(o)));
        });
        time(&format!("linear {name} 2-D (rows merged)"), fl, || {
            let _ = linear(x.clone().reshape([b * n, d]), wt.clone(), Some(bias(o)));
        });
    }
    {
        use scalenet::ops::gemm_bf16::{available, gemm, Product, View};
        println!("avx512-bf16 available: {}", available());
        for (name, kk, o) in [
            ("qkv", d, 3 * d),
            ("fc1", d, 4 * d),
            ("fc2", 4 * d, d),
            ("sq2048", 2048, 2048),
        ] {
            let m = if name == "sq2048" { 2048 } else { b * n };
            let av: Vec<f32> = (0..m * kk).map(|i| (i % 13) as f32 * 0.1).collect();
            let bv: Vec<f32> = (0..kk * o).map(|i| (i % 7) as f32 * 0.1).collect();
            let mut c = vec![std::mem::MaybeUninit::new(0f32); m * o];
            time(
                &format!("gemm_bf16 {name}"),
                2.0 * (m * kk * o) as f64,
                || {
                    let a = View::strided(&av, 0, kk, 1);
                    let b = View::strided(&bv, 0, o, 1);
                    gemm(Product::new(m, o, kk, a, b), &mut c, false);
                },
            );
        }
        for (name, kk, o) in [
            ("qkv", d, 3 * d),
            ("fc1", d, 4 * d),
            ("fc2", 4 * d, d),
            ("sq2048", 2048, 2048),
        ] {
            let m = if name == "sq2048" { 2048 } else { b * n };
            let av: Vec<f32> = (0..m * kk).map(|i| (i % 13) as f32 * 0.1).collect();
            let bv: Vec<f32> = (0..kk * o).map(|i| (i % 7) as f32 * 0.1).collect();
            let mut c = vec![std::mem::MaybeUninit::new(0f32); m * o];
            let (a, bb) = (
                View {
                    data: &av,
                    offset: 0,
                    rs: kk as isize,
                    cs: 1,
                },
                View {
                    data: &bv,
                    offset: 0,
                    rs: o as isize,
                    cs: 1,
                },
            );
            time(
                &format!("gemm_f32 {name}"),
                2.0 * (m * kk * o) as f64,
                || {
                    scalenet::ops::gemm_f32::gemm(Product::new(m, o, kk, a, bb), &mut c, false);
                },
            );
        }
        // Weight gradients: xᵀ (column-major view) · g, K = all rows.
        for (name, din, dout) in [("dW qkv", d, 3 * d), ("dW fc2", 4 * d, d)] {
            let m = b * n;
            let xv: Vec<f32> = (0..m * din).map(|i| (i % 13) as f32 * 0.1).collect();
            let gv: Vec<f32> = (0..m * dout).map(|i| (i % 7) as f32 * 0.1).collect();
            let mut c = vec![std::mem::MaybeUninit::new(0f32); din * dout];
            let (a, bb) = (
                View {
                    data: &xv,
                    offset: 0,
                    rs: 1,
                    cs: din as isize,
                },
                View {
                    data: &gv,
                    offset: 0,
                    rs: dout as isize,
                    cs: 1,
                },
            );
            time(
                &format!("gemm_f32 {name}"),
                2.0 * (m * din * dout) as f64,
                || {
                    scalenet::ops::gemm_f32::gemm(Product::new(din, dout, m, a, bb), &mut c, false);
                },
            );
        }
        let sq = Tensor::<2>::random([2048, 2048], Distribution::Normal(0.0, 1.0), &dev);
        time("flex f32 matmul sq2048", 2.0 * 2048f64.powi(3), || {
            let _ = sq.clone().matmul(sq.clone());
        });
    }
    let wt = w(4 * d, d);
    let hid = r([b, n, 4 * d]);
    let fl = 2.0 * rows * d as f64 * 4.0 * d as f64;
    time("linear fc2 3-D", fl, || {
        let _ = linear(hid.clone(), wt.clone(), Some(bias(d)));
    });
    time("linear fc2 2-D", fl, || {
        let _ = linear(
            hid.clone().reshape([b * n, 4 * d]),
            wt.clone(),
            Some(bias(d)),
        );
    });
    time("gelu [b,n,4d]", 0.0, || {
        let _ = gelu(hid.clone());
    });
    time("scalenet::ops::gelu [b,n,4d]", 0.0, || {
        let _ = scalenet::ops::gelu(hid.clone());
    });
    let g = Tensor::<1>::ones([d], &dev);
    time("layer_norm [b,n,d]", 0.0, || {
        let _ = layer_norm(x.clone(), g.clone(), Some(bias(d)), 1e-6);
    });
    time("add [b,n,d]", 0.0, || {
        let _ = x.clone() + x.clone();
    });
    let qkv = r([b, n, 3 * d]);
    time("qkv reshape+permute+slice", 0.0, || {
        let t = qkv
            .clone()
            .reshape([b, n, 3, h, hd])
            .permute([2, 0, 3, 1, 4]);
        let q = t.clone().slice(0..1).reshape([b, h, n, hd]);
        let _ = q + 0.0;
    });
    let q = Tensor::<4>::random([b, h, n, hd], Distribution::Normal(0.0, 1.0), &dev);
    let afl = 4.0 * (b * h * n * n * hd) as f64;
    time("attention op (fwd)", afl, || {
        let _ = attention(
            q.clone(),
            q.clone(),
            q.clone(),
            None,
            None,
            AttentionModuleOptions::default(),
        );
    });
    time("attention decomposed (fwd)", afl, || {
        let s = q.clone().matmul(q.clone().swap_dims(2, 3)) * (hd as f32).powf(-0.5);
        let _ = softmax(s, 3).matmul(q.clone());
    });
    let qkv3 = Tensor::<3>::random([b, n, 3 * d], Distribution::Normal(0.0, 1.0), &dev);
    time("scalenet::ops::attention (fwd)", afl, || {
        let _ = scalenet::ops::attention(qkv3.clone(), h);
    });
    let qkv3 = Tensor::<3>::from_data(qkv3.into_data(), &dev.clone().autodiff()).require_grad();
    time("scalenet::ops::attention (fwd+bwd)", 3.0 * afl, || {
        let _ = scalenet::ops::attention(qkv3.clone(), h).sum().backward();
    });
    let o = q.clone();
    time("out swap_dims+reshape", 0.0, || {
        let _ = o.clone().swap_dims(1, 2).reshape([b, n, d]);
    });

    // forward + backward of a whole block, on autodiff
    let ad = dev.clone().autodiff();
    let p =
        |s: [usize; 2]| Tensor::<2>::random(s, Distribution::Normal(0.0, 0.02), &ad).require_grad();
    let (wqkv, wproj, w1, w2) = (p([d, 3 * d]), p([d, d]), p([d, 4 * d]), p([4 * d, d]));
    let xa = Tensor::<3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &ad);
    let g = Tensor::<1>::ones([d], &ad).require_grad();
    let be = Tensor::<1>::zeros([d], &ad).require_grad();
    let fwd = |x: Tensor<3>, use_attn: bool| {
        let y = layer_norm(x.clone(), g.clone(), Some(be.clone()), 1e-6);
        let t = linear(y, wqkv.clone(), None)
            .reshape([b, n, 3, h, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| t.clone().slice(i..i + 1).reshape([b, h, n, hd]);
        let (q, k, v) = (part(0), part(1), part(2));
        let a = if use_attn {
            attention(q, k, v, None, None, AttentionModuleOptions::default())
        } else {
            softmax(q.matmul(k.swap_dims(2, 3)) * (hd as f32).powf(-0.5), 3).matmul(v)
        };
        let x = x + linear(a.swap_dims(1, 2).reshape([b, n, d]), wproj.clone(), None);
        let y = layer_norm(x.clone(), g.clone(), Some(be.clone()), 1e-6);
        x + linear(gelu(linear(y, w1.clone(), None)), w2.clone(), None)
    };
    let bfl = 3.0 * 2.0 * rows * 12.0 * (d * d) as f64 + 3.0 * afl;
    for use_attn in [true, false] {
        time(
            &format!("block fwd+bwd (attention op={use_attn})"),
            bfl,
            || {
                let _ = fwd(xa.clone(), use_attn).sum().backward();
            },
        );
    }
    time("block fwd only on autodiff", bfl / 3.0, || {
        let _ = fwd(xa.clone(), true);
    });
}
