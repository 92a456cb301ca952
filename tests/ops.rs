//! The fused kernels in `scalenet::ops` against burn's reference ops (forward and backward) and
//! against finite differences.

use burn::tensor::{Device, Tensor, TensorData};
use scalenet::model::weights::to_vec;

/// Largest |a - b| / max(1, |b|): absolute near zero, relative for large values.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// Inputs spanning GELU's interesting range, plus the clamp region of the erf approximation.
fn inputs(device: &Device) -> Tensor<2> {
    let mut v: Vec<f32> = (0..600).map(|i| -6.0 + i as f32 * 0.02).collect();
    v.extend([-30.0, -9.0, 9.0, 30.0, 0.0, -0.0]);
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n / 6, 6]), device)
}

/// d/dx sum(w · f(x)) by the op's backward, and by central differences in f64 of the forward.
fn grads(f: &dyn Fn(Tensor<2>) -> Tensor<2>, x: Tensor<2>) -> (Vec<f32>, Vec<f32>) {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    // Fixed weights, so two calls see the same objective.
    let out_dims = f(x.clone()).dims();
    let n = out_dims.iter().product::<usize>();
    let w: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let w = Tensor::<2>::from_data(TensorData::new(w, out_dims), &device);
    let xa = Tensor::<2>::from_data(x.to_data(), &ad).require_grad();
    let wa = Tensor::<2>::from_data(w.to_data(), &ad);
    let g = (f(xa.clone()) * wa).sum().backward();
    let analytic = to_vec(xa.grad(&g).unwrap());
    let (xs, ws) = (to_vec(x.clone()), to_vec(w));
    let h = 1e-2f32;
    let numeric = (0..xs.len())
        .map(|i| {
            let at = |d: f32| {
                let mut v = xs.clone();
                v[i] += d;
                let y = to_vec(f(Tensor::from_data(TensorData::new(v, x.dims()), &device)));
                y.iter()
                    .zip(&ws)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
            };
            ((at(h) - at(-h)) / (2.0 * h as f64)) as f32
        })
        .collect();
    (analytic, numeric)
}

#[test]
fn gelu_matches_burn_forward_and_backward() {
    let device = Device::flex();
    let x = inputs(&device);
    let ours = to_vec(scalenet::ops::gelu(x.clone()));
    let burns = to_vec(burn::tensor::activation::gelu(x.clone()));
    assert!(
        max_abs_diff(&ours, &burns) < 1e-6,
        "fwd: {}",
        max_abs_diff(&ours, &burns)
    );
    // A transposed (non-contiguous) input takes the copy path and must agree too.
    let t = to_vec(scalenet::ops::gelu(x.clone().transpose()).transpose());
    assert!(max_abs_diff(&t, &burns) < 1e-6);

    let (ours, numeric) = grads(&|x| scalenet::ops::gelu(x), x.clone());
    let (burns, _) = grads(&|x| burn::tensor::activation::gelu(x), x);
    assert!(
        max_abs_diff(&ours, &burns) < 2e-6,
        "vs burn: {}",
        max_abs_diff(&ours, &burns)
    );
    // Central differences with h = 1e-2 are exact to O(h^2 · GELU''') ~ 1e-5 here.
    assert!(
        max_abs_diff(&ours, &numeric) < 1e-3,
        "vs fd: {}",
        max_abs_diff(&ours, &numeric)
    );
}

#[test]
fn silu_matches_burn_forward_and_backward() {
    let device = Device::flex();
    let x = inputs(&device);
    let ours = to_vec(scalenet::ops::silu(x.clone()));
    let burns = to_vec(burn::tensor::activation::silu(x.clone()));
    assert!(
        max_abs_diff(&ours, &burns) < 1e-6,
        "fwd: {}",
        max_abs_diff(&ours, &burns)
    );
    let t = to_vec(scalenet::ops::silu(x.clone().transpose()).transpose());
    assert!(max_abs_diff(&t, &burns) < 1e-6);
    let (ours, numeric) = grads(&|x| scalenet::ops::silu(x), x.clone());
    let (burns, _) = grads(&|x| burn::tensor::activation::silu(x), x);
    assert!(
        max_abs_diff(&ours, &burns) < 2e-6,
        "vs burn: {}",
        max_abs_diff(&ours, &burns)
    );
    assert!(
        max_abs_diff(&ours, &numeric) < 1e-3,
        "vs fd: {}",
        max_abs_diff(&ours, &numeric)
    );
}

/// Under `autocast(Bf16)` a ViT's logits stay f32 and close to the f32 ones, and the f32
/// parameters receive f32 gradients (the master weights never change dtype).
#[test]
fn bf16_autocast_keeps_f32_master_weights_and_close_logits() {
    use scalenet::checkpoint::ModelConfig;
    use scalenet::model::{RandomInit, VisionTransformer};
    use scalenet::ops::{autocast, Precision};

    let args = serde_json::json!({"img_size": 28, "patch_size": 7, "in_chans": 1, "depth": 2,
                                  "embed_dim": 32, "num_heads": 2, "num_classes": 10});
    let cfg = ModelConfig::from_preset("vit_tiny_patch16_224", args.as_object().unwrap()).unwrap();
    let ad = Device::flex().autodiff();
    let model = VisionTransformer::new(cfg.arch.vit().unwrap(), &mut RandomInit::new(3), &ad);
    let x = Tensor::<4>::random(
        [4, 1, 28, 28],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &ad,
    );
    let full = to_vec(model.forward(x.clone()));
    let (half, grads) = {
        let _bf16 = autocast(Precision::Bf16);
        let logits = model.forward(x);
        assert_eq!(logits.dtype(), burn::tensor::DType::F32);
        let half = to_vec(logits.clone());
        (half, logits.sum().backward())
    };
    let scale = full.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = full
        .iter()
        .zip(&half)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    // bf16 keeps 8 bits of mantissa: products agree to ~1e-2 relative, not to f32 precision.
    assert!(
        err > 0.0 && err < 0.05 * scale.max(1.0),
        "err {err}, scale {scale}"
    );
    let w = model.blocks[0].mlp.fc1.weight.val();
    assert_eq!(w.dtype(), burn::tensor::DType::F32);
    let g = w.grad(&grads).expect("fc1 weight has a gradient");
    assert_eq!(g.dtype(), burn::tensor::DType::F32);
    assert!(to_vec(g).iter().any(|v| *v != 0.0));
}

/// Values on a coarse grid are exact in bf16, so the bf16 product and its gradients must equal
/// the f32 ones up to summation order.
fn bf16_exact(rows: usize, cols: usize, salt: usize, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| (((i * 31 + salt * 17) % 23) as f32 - 11.0) / 8.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, cols]), device)
}

#[test]
fn matmul_bf16_matches_f32_forward_and_backward_on_bf16_exact_values() {
    let ad = Device::flex().autodiff();
    for (m, k, n) in [(37, 20, 45), (130, 64, 33), (5, 3, 1)] {
        let run = |bf16: bool| {
            let a = bf16_exact(m, k, 1, &ad).require_grad();
            let b = bf16_exact(k, n, 2, &ad).require_grad();
            let w = bf16_exact(m, n, 3, &ad);
            let y = if bf16 {
                {
                    let _bf16 = scalenet::ops::autocast(scalenet::ops::Precision::Bf16);
                    scalenet::ops::matmul(a.clone(), b.clone())
                }
            } else {
                a.clone().matmul(b.clone())
            };
            let g = (y.clone() * w).sum().backward();
            (
                to_vec(y),
                to_vec(a.grad(&g).unwrap()),
                to_vec(b.grad(&g).unwrap()),
            )
        };
        let (y16, ga16, gb16) = run(true);
        let (y32, ga32, gb32) = run(false);
        assert!(max_abs_diff(&y16, &y32) < 1e-5, "{m}x{k}x{n} forward");
        assert!(max_abs_diff(&ga16, &ga32) < 1e-5, "{m}x{k}x{n} d lhs");
        assert!(max_abs_diff(&gb16, &gb32) < 1e-5, "{m}x{k}x{n} d rhs");
    }
    // A transposed (strided) operand reads correctly.
    let dev = Device::flex();
    let a = bf16_exact(20, 37, 4, &dev);
    let b = bf16_exact(20, 9, 5, &dev);
    let ours = {
        let _bf16 = scalenet::ops::autocast(scalenet::ops::Precision::Bf16);
        to_vec(scalenet::ops::matmul(a.clone().transpose(), b.clone()))
    };
    let want = to_vec(a.transpose().matmul(b));
    assert!(max_abs_diff(&ours, &want) < 1e-5);
}

/// The fused linear (f32) against burn's `linear`: forward, and the gradients of input, weight
/// and bias; also with a transposed (strided) input and without a bias.
#[test]
fn linear_matches_burn_forward_and_backward() {
    let ad = Device::flex().autodiff();
    for (m, k, n, bias) in [(70, 24, 33, true), (3, 5, 1, true), (130, 64, 96, false)] {
        let run = |ours: bool| {
            let x = bf16_exact(m, k, 6, &ad).require_grad();
            let w = bf16_exact(k, n, 7, &ad).require_grad();
            let b = bias.then(|| bf16_exact(1, n, 8, &ad).reshape([n]).require_grad());
            let y = if ours {
                scalenet::ops::linear(x.clone(), w.clone(), b.clone())
            } else {
                burn::tensor::module::linear(x.clone(), w.clone(), b.clone())
            };
            let g = (y.clone() * bf16_exact(m, n, 9, &ad)).sum().backward();
            let gb = b.map(|b| to_vec(b.grad(&g).unwrap())).unwrap_or_default();
            (
                to_vec(y),
                to_vec(x.grad(&g).unwrap()),
                to_vec(w.grad(&g).unwrap()),
                gb,
            )
        };
        let (a, b) = (run(true), run(false));
        assert!(max_abs_diff(&a.0, &b.0) < 1e-5, "{m}x{k}x{n} forward");
        assert!(max_abs_diff(&a.1, &b.1) < 1e-5, "{m}x{k}x{n} d x");
        assert!(max_abs_diff(&a.2, &b.2) < 1e-5, "{m}x{k}x{n} d w");
        assert!(max_abs_diff(&a.3, &b.3) < 1e-5, "{m}x{k}x{n} d b");
    }
    let dev = Device::flex();
    let x = bf16_exact(24, 70, 10, &dev);
    let w = bf16_exact(24, 5, 11, &dev);
    let b = bf16_exact(1, 5, 12, &dev).reshape([5]);
    let ours = to_vec(scalenet::ops::linear(
        x.clone().transpose(),
        w.clone(),
        Some(b.clone()),
    ));
    let want = to_vec(burn::tensor::module::linear(x.transpose(), w, Some(b)));
    assert!(max_abs_diff(&ours, &want) < 1e-5);
}

/// Our convolution (column products on our GEMM) against burn's `conv2d`, forward and every
/// gradient: 3×3 and 1×1 kernels, strides 1 and 2, with and without padding, maps of a few
/// pixels (the detection head's) and one wide enough to take two column blocks; in f32,
/// and under bf16 autocast on inputs that bf16 holds exactly.
#[test]
fn conv2d_matches_burn_forward_and_backward() {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use scalenet::ops::{autocast, Precision};
    let ad = Device::flex().autodiff();
    let cases = [
        // n, c, h, w, co, k, stride, pad, bias
        (2, 3, 7, 5, 4, 3, 1, 1, true),
        (3, 8, 6, 6, 16, 3, 1, 1, true),
        (2, 5, 9, 8, 6, 3, 2, 1, false),
        (1, 4, 5, 7, 3, 1, 1, 0, true),
        (2, 2, 4, 4, 3, 3, 1, 0, true),
        (1, 3, 1, 1, 5, 3, 2, 1, true),
        (2, 512, 30, 30, 4, 3, 1, 1, true),
        // A weight of 4.5 MiB: burn's forward, our backward.
        (1, 512, 4, 5, 256, 3, 1, 1, true),
    ];
    for precision in [Precision::F32, Precision::Bf16] {
        let _guard = autocast(precision);
        for (n, c, h, w, co, k, s, p, bias) in cases {
            let run = |ours: bool| {
                let x = bf16_exact(n * c, h * w, 21, &ad)
                    .reshape([n, c, h, w])
                    .require_grad();
                let wt = bf16_exact(co, c * k * k, 22, &ad)
                    .reshape([co, c, k, k])
                    .require_grad();
                let b = bias.then(|| bf16_exact(1, co, 23, &ad).reshape([co]).require_grad());
                let y = if ours {
                    scalenet::ops::conv2d(x.clone(), wt.clone(), b.clone(), s, p)
                } else {
                    let opts = ConvOptions::new([s, s], [p, p], [1, 1], 1);
                    conv2d(x.clone(), wt.clone(), b.clone(), opts)
                };
                let [_, _, ho, wo] = y.dims();
                let weights = bf16_exact(n * co, ho * wo, 24, &ad).reshape([n, co, ho, wo]);
                let g = (y.clone() * weights).sum().backward();
                let gb = b.map(|b| to_vec(b.grad(&g).unwrap())).unwrap_or_default();
                let grads = [
                    x.grad(&g).unwrap().flatten::<1>(0, 3),
                    wt.grad(&g).unwrap().flatten(0, 3),
                ];
                let [gx, gw] = grads.map(to_vec);
                [to_vec(y.flatten::<1>(0, 3)), gx, gw, gb]
            };
            let (got, want) = (run(true), run(false));
            // bf16 rounds the output's gradient before the backward products.
            let tol = if precision == Precision::F32 {
                1e-5
            } else {
                2e-2
            };
            for (i, what) in ["forward", "d x", "d w", "d b"].iter().enumerate() {
                let err = max_abs_diff(&got[i], &want[i]);
                assert!(
                    err < tol,
                    "{precision} {n}x{c}x{h}x{w} → {co}, k{k} s{s} p{p}: {what} off by {err}"
                );
            }
        }
    }
}

/// The fused attention on a qkv activation against burn's path as the model used it: reshape,
/// permute, slice, burn's `attention` op, swap and merge heads; forward and the qkv gradient.
#[test]
fn fused_attention_matches_burn_forward_and_backward() {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    let ad = Device::flex().autodiff();
    for (b, n, h, hd) in [(2, 7, 2, 4), (3, 50, 3, 16), (2, 50, 3, 32), (1, 1, 1, 8)] {
        let d = h * hd;
        let qkv_vals: Vec<f32> = (0..b * n * 3 * d)
            .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 60.0)
            .collect();
        let w: Vec<f32> = (0..b * n * d)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let run = |ours: bool| {
            let qkv = Tensor::<3>::from_data(TensorData::new(qkv_vals.clone(), [b, n, 3 * d]), &ad)
                .require_grad();
            let out = if ours {
                scalenet::ops::attention(qkv.clone(), h)
            } else {
                let t = qkv
                    .clone()
                    .reshape([b, n, 3, h, hd])
                    .permute([2, 0, 3, 1, 4]);
                let part = |i: usize| t.clone().slice(i..i + 1).reshape([b, h, n, hd]);
                let o = attention(
                    part(0),
                    part(1),
                    part(2),
                    None,
                    None,
                    AttentionModuleOptions::default(),
                );
                o.swap_dims(1, 2).reshape([b, n, d])
            };
            let wt = Tensor::<3>::from_data(TensorData::new(w.clone(), [b, n, d]), &ad);
            let g = (out.clone() * wt).sum().backward();
            (to_vec(out), to_vec(qkv.grad(&g).unwrap()))
        };
        let (ours, burns) = (run(true), run(false));
        assert!(
            max_abs_diff(&ours.0, &burns.0) < 1e-5,
            "{b}x{n}x{h}x{hd} forward: {}",
            max_abs_diff(&ours.0, &burns.0)
        );
        assert!(
            max_abs_diff(&ours.1, &burns.1) < 1e-5,
            "{b}x{n}x{h}x{hd} backward: {}",
            max_abs_diff(&ours.1, &burns.1)
        );
    }
}

/// Central finite differences (f64 accumulation of the objective) for the fused f32 ops.
#[test]
fn fused_ops_pass_finite_difference_checks() {
    let device = Device::flex();
    let vals = |r: usize, c: usize, salt: usize| {
        let v: Vec<f32> = (0..r * c)
            .map(|i| (((i * 7919 + salt * 31) % 97) as f32 - 48.0) / 40.0)
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [r, c]), &device)
    };
    // Attention: 2 batches × 5 tokens, 2 heads of 3 → qkv [10, 18].
    let (b, n, h, d) = (2, 5, 2, 6);
    let attn = move |x: Tensor<2>| {
        scalenet::ops::attention(x.reshape([b, n, 3 * d]), h).reshape([b * n, d])
    };
    let (analytic, numeric) = grads(&attn, vals(b * n, 3 * d, 1));
    assert!(
        max_abs_diff(&analytic, &numeric) < 2e-3,
        "attention: {}",
        max_abs_diff(&analytic, &numeric)
    );
    // Linear: input, weight and bias gradients.
    let (w, bias) = (vals(6, 4, 2), vals(1, 4, 3).reshape([4]));
    let lin_x = |x: Tensor<2>| scalenet::ops::linear(x, w.clone(), Some(bias.clone()));
    let (analytic, numeric) = grads(&lin_x, vals(7, 6, 4));
    assert!(max_abs_diff(&analytic, &numeric) < 2e-3, "linear dx");
    let x = vals(7, 6, 5);
    let lin_w = |w: Tensor<2>| scalenet::ops::linear(x.clone(), w, Some(bias.clone()));
    let (analytic, numeric) = grads(&lin_w, vals(6, 4, 6));
    assert!(max_abs_diff(&analytic, &numeric) < 2e-3, "linear dw");
    let lin_b = |b: Tensor<2>| scalenet::ops::linear(x.clone(), w.clone(), Some(b.reshape([4])));
    let (analytic, numeric) = grads(&lin_b, vals(1, 4, 7));
    assert!(max_abs_diff(&analytic, &numeric) < 2e-3, "linear db");
}

/// The fused LayerNorm (burn-flex's forward, our one-pass backward) against burn's composed
/// LayerNorm under autodiff: output and the gradients of x, γ and β.
#[test]
fn fused_layer_norm_matches_burn_forward_and_backward() {
    let ad = Device::flex().autodiff();
    for (rows, d, eps) in [(3, 7, 1e-6), (200, 96, 1e-6), (5, 192, 1e-5), (1, 1, 1e-5)] {
        let vals = |n: usize, salt: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + salt * 31) % 211) as f32 - 105.0) / 60.0 * scale)
                .collect()
        };
        let (xv, gv, bv, wv) = (
            vals(rows * d, 1, 3.0),
            vals(d, 2, 1.0),
            vals(d, 3, 1.0),
            vals(rows * d, 4, 1.0),
        );
        let run = |ours: bool| {
            let x = Tensor::<3>::from_data(TensorData::new(xv.clone(), [1, rows, d]), &ad)
                .require_grad();
            let gamma =
                Tensor::<1>::from_data(TensorData::new(gv.clone(), [d]), &ad).require_grad();
            let beta = Tensor::<1>::from_data(TensorData::new(bv.clone(), [d]), &ad).require_grad();
            let out = if ours {
                scalenet::ops::layer_norm(x.clone(), gamma.clone(), beta.clone(), eps)
            } else {
                // burn's ops composed, as its autodiff ran LayerNorm before.
                let mean = x.clone().mean_dim(2);
                let xc = x.clone() - mean;
                let var = (xc.clone() * xc.clone()).mean_dim(2);
                xc / (var + eps).sqrt() * gamma.clone().reshape([1, 1, d])
                    + beta.clone().reshape([1, 1, d])
            };
            let w = Tensor::<3>::from_data(TensorData::new(wv.clone(), [1, rows, d]), &ad);
            let g = (out.clone() * w).sum().backward();
            [
                to_vec(out),
                to_vec(x.grad(&g).unwrap()),
                to_vec(gamma.grad(&g).unwrap()),
                to_vec(beta.grad(&g).unwrap()),
            ]
        };
        let (ours, burns) = (run(true), run(false));
        for (i, what) in ["output", "dx", "dgamma", "dbeta"].iter().enumerate() {
            let e = max_abs_diff(&ours[i], &burns[i]);
            // dγ and dβ sum over up to 200 rows; the rest is per element.
            assert!(e < 2e-5, "{rows}x{d} {what}: {e}");
        }
    }
}
