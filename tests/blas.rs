//! `--blas`: a CBLAS library opened at run time takes the large f32 products. Its own test
//! binary, because the choice is per process. `.ci/run` installs Debian's OpenBLAS; where it is
//! absent the library test says so and checks only the refusals.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use scalenet::model::weights::to_vec;
use scalenet::ops::blas::{self, BlasError};

fn openblas() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
        "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
        "/usr/lib64/libopenblas.so.0",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn matrix(rows: usize, cols: usize, salt: usize, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 + salt * 104_729) % 1009) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, cols]), device)
}

/// A linear layer's output and its three gradients (dW multiplies a transposed activation),
/// and a plain matmul with a transposed left operand.
fn products() -> Vec<Vec<f32>> {
    let ad = Device::flex().autodiff();
    let (m, k, n) = (300, 192, 576);
    let x = matrix(m, k, 1, &ad).require_grad();
    let w = matrix(k, n, 2, &ad).require_grad();
    let b = matrix(1, n, 3, &ad).reshape([n]).require_grad();
    let y = scalenet::ops::linear(x.clone(), w.clone(), Some(b.clone()));
    let g = (y.clone() * matrix(m, n, 4, &ad)).sum().backward();
    let dev = Device::flex();
    let t = scalenet::ops::matmul(matrix(k, m, 5, &dev).transpose(), matrix(k, n, 6, &dev));
    vec![
        to_vec(y),
        to_vec(x.grad(&g).unwrap()),
        to_vec(w.grad(&g).unwrap()),
        to_vec(b.grad(&g).unwrap()),
        to_vec(t),
    ]
}

#[test]
fn a_blas_library_gives_the_same_products_and_bad_ones_are_refused_by_name() {
    let missing = Path::new("/nonexistent/libblas.so");
    let err = blas::use_library(missing).err().expect("a missing file");
    assert!(matches!(err, BlasError::Open { .. }), "{err}");
    assert!(
        err.to_string().starts_with("/nonexistent/libblas.so: "),
        "{err}"
    );
    let err = blas::use_library(Path::new("libc.so.6"))
        .err()
        .expect("libc has no cblas_sgemm");
    assert!(matches!(err, BlasError::NoSgemm { .. }), "{err}");
    assert!(blas::active().is_none());

    let Some(lib) = openblas() else {
        eprintln!("OpenBLAS is not installed (apt install libopenblas0): library path not tested");
        return;
    };
    let ours = products();
    assert!(!blas::f32_kernel().starts_with("BLAS"));
    blas::use_library(&lib).expect("OpenBLAS opens");
    assert!(blas::f32_kernel().starts_with("BLAS"));
    let theirs = products();
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a.len(), b.len());
        let err = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0, f32::max);
        assert!(err < 1e-4, "product {i}: max relative difference {err}");
    }
    // The choice is made once per process.
    let other = Path::new("/some/other/libblas.so");
    assert!(matches!(
        blas::use_library(other),
        Err(BlasError::AlreadySet(_))
    ));
}
