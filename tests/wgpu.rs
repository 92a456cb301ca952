//! The GPU code path without a GPU: wgpu on Mesa's software Vulkan driver (lavapipe), built
//! with `--features wgpu`. The same CubeCL kernels run on CUDA, so a check here is a check of
//! the GPU path on every CI run. `.ci/run` installs `mesa-vulkan-drivers` and runs this file.
#![cfg(feature = "wgpu")]

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scalenet"));
    cmd.env("SCALENET_BLAS", "none").env("HF_HUB_OFFLINE", "1");
    cmd.env_remove("XDG_RUNTIME_DIR");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every golden fixture (ViT, Swin, Llama, grown), every op forward and backward against the
/// CPU and the sharing checks pass on wgpu; bf16 is skipped with its reason; Mesa prints
/// nothing a user would have to learn to ignore.
#[test]
fn selfcheck_passes_on_wgpu() {
    let o = bin()
        .args([
            "selfcheck",
            "--device",
            "wgpu",
            "--fixtures",
            "tests/fixtures",
        ])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
    assert!(
        out.contains("skip  ops") && out.contains("has no bf16"),
        "{out}"
    );
    assert!(
        !out.contains("XDG_RUNTIME_DIR") && !out.contains("panicked"),
        "{out}"
    );
}

/// bf16 on wgpu is one line, nothing written; auto takes f32 there.
#[test]
fn bf16_on_wgpu_is_refused_in_one_line() {
    let dir = std::env::temp_dir().join(format!("scalenet-wgpu-{}", std::process::id()));
    let model = Path::new("tests/fixtures/grown/irregular_full");
    let o = bin()
        .arg("train")
        .arg(model)
        .args([
            "--data",
            "fmnist-mini",
            "--device",
            "wgpu",
            "--precision",
            "bf16",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--precision bf16 is not supported on wgpu"),
        "{err}"
    );
    assert!(!dir.exists());
}

/// A few f32 training steps and greedy generation run on wgpu.
#[test]
fn train_and_generate_run_on_wgpu() {
    let dir = std::env::temp_dir().join(format!("scalenet-wgpu-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = bin()
        .arg("train")
        .arg("tests/fixtures/grown/gelu_mlp_layerscale_base")
        .args(["--data", "fmnist-mini", "--device", "wgpu", "--epochs", "1"])
        .args([
            "--batch-size",
            "16",
            "--train-subset",
            "32",
            "--test-subset",
            "16",
        ])
        .args(["--reset-head", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("precision: f32"), "{out}");
    assert!(dir.join("model/config.json").is_file());
    assert!(!out.contains("XDG_RUNTIME_DIR"), "{out}");
}
