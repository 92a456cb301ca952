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

/// Stub libraries that say they use 64-bit integers, as an ILP64 OpenBLAS and an MKL in ILP64
/// mode do, are refused by name; their `cblas_sgemm` aborts, so a product called before the
/// refusal would end the test.
fn ilp64_libraries_are_refused_before_any_product() {
    let dir = std::env::temp_dir().join(format!("scalenet-ilp64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stubs = [
        (
            "openblas64",
            r#"const char *openblas_get_config(void) { return "OpenBLAS 0.3.26 USE64BITINT DYNAMIC_ARCH"; }"#,
        ),
        (
            "mkl_ilp64",
            "int MKL_Set_Interface_Layer(int layer) { return 1; }",
        ),
    ];
    for (name, query) in stubs {
        let src = dir.join(format!("{name}.c"));
        let lib = dir.join(format!("lib{name}.so"));
        let code = format!("#include <stdlib.h>\nvoid cblas_sgemm(void) {{ abort(); }}\n{query}\n");
        std::fs::write(&src, code).unwrap();
        let built = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src)
            .status();
        if !built.is_ok_and(|s| s.success()) {
            eprintln!("no C compiler (cc): the ILP64 refusal is not tested");
            return;
        }
        let err = blas::use_library(&lib)
            .err()
            .expect("an ILP64 library is refused");
        assert!(matches!(err, BlasError::Ilp64 { .. }), "{err}");
        assert!(err.to_string().contains(&format!("lib{name}.so")), "{err}");
        assert!(err.to_string().contains("LP64"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
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
    ilp64_libraries_are_refused_before_any_product();
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
