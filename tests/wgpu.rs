//! The GPU code path without a GPU: wgpu on Mesa's software Vulkan driver (lavapipe), built
//! with `--features wgpu`. The same CubeCL kernels run on CUDA, so a check here is a check of
//! the GPU path on every CI run: `.ci/run` installs `mesa-vulkan-drivers` and runs the whole
//! suite with `--features wgpu`. Without a Vulkan driver these tests say so and pass, unless
//! `SCALENET_REQUIRE_WGPU` is set (CI sets it).
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

/// Whether a Vulkan driver is installed for wgpu to find (lavapipe on a machine without a GPU).
fn vulkan() -> bool {
    let dirs = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];
    let found = std::env::var_os("VK_ICD_FILENAMES").is_some()
        || std::env::var_os("VK_DRIVER_FILES").is_some()
        || dirs
            .iter()
            .any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()));
    if !found {
        assert!(
            std::env::var_os("SCALENET_REQUIRE_WGPU").is_none(),
            "SCALENET_REQUIRE_WGPU is set but no Vulkan driver is installed"
        );
        eprintln!("skipped: no Vulkan driver (apt install mesa-vulkan-drivers)");
    }
    found
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
    if !vulkan() {
        return;
    }
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
    if !vulkan() {
        return;
    }
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

/// A few f32 training steps on wgpu (auto precision takes f32 there) give the CPU's loss and
/// weights to 1e-4.
#[test]
fn training_on_wgpu_matches_the_cpu() {
    if !vulkan() {
        return;
    }
    let root = std::env::temp_dir().join(format!("scalenet-wgpu-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let train = |device: &str, precision: &str| {
        let dir = root.join(device);
        let o = bin()
            .arg("train")
            .arg("tests/fixtures/grown/gelu_mlp_layerscale_base")
            .args([
                "--data",
                "fmnist-mini",
                "--epochs",
                "1",
                "--batch-size",
                "16",
            ])
            .args([
                "--train-subset",
                "32",
                "--test-subset",
                "16",
                "--reset-head",
            ])
            .args(["--device", device, "--precision", precision, "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(!out.contains("XDG_RUNTIME_DIR"), "{out}");
        (out, dir)
    };
    let (out, gpu) = train("wgpu", "auto");
    assert!(out.contains("precision: f32"), "{out}");
    let (_, cpu) = train("flex", "f32");
    let loss = |dir: &Path| -> f64 {
        let m = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(m.lines().last().unwrap()).unwrap();
        v["train_loss"].as_f64().unwrap()
    };
    let (a, b) = (loss(&gpu), loss(&cpu));
    assert!(
        (a - b).abs() <= 1e-4,
        "train loss {a} on wgpu, {b} on the CPU"
    );
    let weights = |dir: &Path| std::fs::read(dir.join("model/model.safetensors")).unwrap();
    let (wa, wb) = (weights(&gpu), weights(&cpu));
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&wa).unwrap(),
        safetensors::SafeTensors::deserialize(&wb).unwrap(),
    );
    for name in sa.names() {
        let worst = f32s(sa.tensor(name).unwrap().data())
            .iter()
            .zip(f32s(sb.tensor(name).unwrap().data()))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-4, "{name}: worst |Δ| {worst} after training");
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn logits(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    f32s(t.data())
}

/// `forward --device wgpu` gives the golden fixtures' logits (timm's and transformers') to
/// 1e-4: a grown ViT on images and a Llama on token ids.
#[test]
fn forward_on_wgpu_matches_the_fixtures() {
    if !vulkan() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("scalenet-wgpu-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for model in [
        "tests/fixtures/grown/gelu_mlp_layerscale_base",
        "tests/fixtures/llama/gqa_tied",
    ] {
        let model = Path::new(model);
        let out = dir.join("out.safetensors");
        let o = bin()
            .arg("forward")
            .arg(model)
            .arg("--input")
            .arg(model.join("io.safetensors"))
            .arg("--output")
            .arg(&out)
            .args(["--device", "wgpu"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let (got, want) = (logits(&out), logits(&model.join("io.safetensors")));
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-4, "{}: worst |Δ| {worst}", model.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Greedy generation on wgpu writes what it writes on the CPU.
#[test]
fn generation_on_wgpu_equals_the_cpu() {
    if !vulkan() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("scalenet-wgpu-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new("tests/fixtures/llama/gqa_tied");
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    // One word per id of the fixture's 97, so that every generated id is seen in the text.
    let vocab: Vec<String> = (0..97).map(|i| format!("\"w{i}\":{i}")).collect();
    let tokenizer = format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{{"type":"Whitespace"}},"post_processor":null,
            "decoder":null,"model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"w0"}}}}"#,
        vocab.join(",")
    );
    std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
    let generate = |device: &str| {
        let o = bin()
            .arg("generate")
            .arg(&dir)
            .args(["--prompt", "w5 w17 w42", "--max-new-tokens", "12"])
            .args(["--device", device])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let cpu = generate("flex");
    assert!(cpu.split_whitespace().count() > 3, "{cpu}");
    assert_eq!(generate("wgpu"), cpu);
    let _ = std::fs::remove_dir_all(&dir);
}
