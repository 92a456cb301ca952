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
    let n = x.dims().iter().product::<usize>();
    let w: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let w = Tensor::<2>::from_data(TensorData::new(w, x.dims()), &device);
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
