//! The `scalenet` binary as a user meets it: the happy paths, and every bad input ending in one
//! readable line that names the file, a non-zero exit, no panic and no partial output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scalenet"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/timm")
        .join(name)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalenet-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A writable copy of a fixture model directory.
fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let dst = tempdir(tag).join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors", "io.safetensors"] {
        std::fs::copy(fixture(name).join(f), dst.join(f)).unwrap();
    }
    dst
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("binary runs")
}

/// Asserts a clean failure: exit 1, one stderr line mentioning every `needle`, no panic.
fn assert_clean_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "'{n}' not in: {stderr}");
    }
}

fn forward(model: &Path, input: &Path, output: &Path) -> Output {
    run(bin()
        .arg("forward")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output))
}

#[test]
fn forward_writes_timm_logits() {
    let dir = tempdir("fwd-ok");
    let out = dir.join("out.safetensors");
    let model = fixture("distilled");
    let o = forward(&model, &model.join("io.safetensors"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names(), vec!["logits"]);
    assert_eq!(st.tensor("logits").unwrap().shape(), &[3, 6]);
}

#[test]
fn info_and_init_round_trip() {
    let dir = tempdir("init");
    let m = dir.join("m");
    let o = run(bin()
        .args([
            "init",
            "--arch",
            "deit_tiny_patch16_224",
            "--model-arg",
            "img_size=32",
        ])
        .args([
            "--model-arg",
            "in_chans=1",
            "--model-arg",
            "depth=2",
            "--model-arg",
            "global_pool=avg",
            "--out",
        ])
        .arg(&m));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(bin().arg("info").arg(&m).arg("--json"));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["patch_grid"], serde_json::json!([2, 2]));
    assert_eq!(v["input"]["size"], serde_json::json!([1, 32, 32]));
    // blocks: 2 × (2·192 + 192·576+576 + 192·192+192 + 2·192 + 192·768+768 + 768·192+192)
    assert_eq!(v["params"]["blocks"], 2 * 444_864);
    // A second init into the same directory is refused rather than overwriting.
    let o = run(bin()
        .args(["init", "--arch", "deit_tiny_patch16_224", "--out"])
        .arg(&m));
    assert_clean_error(&o, &["already holds a model"]);
}

#[test]
fn missing_directory_and_files() {
    let dir = tempdir("missing");
    let o = run(bin().arg("info").arg(dir.join("nope")));
    assert_clean_error(&o, &["nope", "no such model directory"]);
    let m = copy_fixture("rgb_token_p8", "missing-weights");
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    assert_clean_error(&run(bin().arg("info").arg(&m)), &["model.safetensors"]);
    let m = copy_fixture("rgb_token_p8", "missing-config");
    std::fs::remove_file(m.join("config.json")).unwrap();
    assert_clean_error(&run(bin().arg("info").arg(&m)), &["config.json"]);
}

#[test]
fn bad_config_json() {
    let cases: &[(&str, &[&str])] = &[
        ("{not json", &["config.json", "not valid JSON"]),
        (r#"{"num_classes": 3}"#, &["config.json", "architecture"]),
        (
            r#"{"architecture": "resnet50"}"#,
            &["unknown architecture 'resnet50'", "config.json"],
        ),
        (
            r#"{"architecture": "vit_tiny_patch16_224", "model_args": {"embed_dim": 32, "num_heads": 3}}"#,
            &["config.json", "not divisible by num_heads"],
        ),
        (
            r#"{"architecture": "vit_tiny_patch16_224", "model_args": {"reg_tokens": 4}}"#,
            &["config.json", "reg_tokens"],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let m = copy_fixture("rgb_token_p8", &format!("cfg{i}"));
        std::fs::write(m.join("config.json"), text).unwrap();
        assert_clean_error(&run(bin().arg("info").arg(&m)), needles);
    }
}

/// A safetensors file by hand: 8-byte header length, JSON header, data.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn bad_safetensors() {
    let good = std::fs::read(fixture("rgb_token_p8").join("model.safetensors")).unwrap();
    let cases: Vec<(Vec<u8>, &[&str])> = vec![
        (
            good[..good.len() - 100].to_vec(),
            &["model.safetensors", "truncated"],
        ),
        (
            b"\x10\x00\x00\x00\x00\x00\x00\x00garbage!garbage!".to_vec(),
            &["model.safetensors", "header"],
        ),
        (vec![1, 2, 3], &["model.safetensors", "too short"]),
        (
            raw_safetensors(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}"#,
                &[0; 8],
            ),
            &["model.safetensors"],
        ),
        (
            raw_safetensors(
                r#"{"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            &["model.safetensors", "'w'", "I32"],
        ),
    ];
    for (i, (bytes, needles)) in cases.iter().enumerate() {
        let m = copy_fixture("rgb_token_p8", &format!("st{i}"));
        std::fs::write(m.join("model.safetensors"), bytes).unwrap();
        let out = m.join("out.safetensors");
        let o = forward(&m, &m.join("io.safetensors"), &out);
        assert_clean_error(&o, needles);
        assert!(!out.exists(), "partial output left behind");
    }
}

#[test]
fn config_that_contradicts_the_weights() {
    // Shape: the config says 3 classes, the head holds 5.
    let m = copy_fixture("rgb_token_p8", "shape");
    let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
    std::fs::write(
        m.join("config.json"),
        cfg.replace("\"num_classes\": 5", "\"num_classes\": 3"),
    )
    .unwrap();
    assert_clean_error(
        &run(bin().arg("info").arg(&m)),
        &["'head.weight'", "[5, 32]", "[3, 32]"],
    );
    // Keys: depth 3 in the config, 2 blocks in the file; and an extra tensor.
    let m = copy_fixture("rgb_token_p8", "keys");
    let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
    std::fs::write(
        m.join("config.json"),
        cfg.replace("\"depth\": 2", "\"depth\": 1"),
    )
    .unwrap();
    assert_clean_error(
        &run(bin().arg("info").arg(&m)),
        &["unexpected", "blocks.1.attn.qkv.weight"],
    );
    let m = copy_fixture("rgb_token_p8", "keys2");
    let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
    std::fs::write(
        m.join("config.json"),
        cfg.replace("\"depth\": 2", "\"depth\": 3"),
    )
    .unwrap();
    assert_clean_error(
        &run(bin().arg("info").arg(&m)),
        &["missing", "blocks.2.norm1.weight"],
    );
}

#[test]
fn input_that_does_not_fit() {
    let model = fixture("grey_avg_nobias"); // 1 channel, 28x28
    let dir = tempdir("input");
    let write = |name: &str, shape: &[usize]| {
        let n: usize = shape.iter().product();
        let data: Vec<u8> = vec![0f32; n].iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &data)
                .unwrap();
        let p = dir.join(name);
        safetensors::serialize_to_file(vec![("input", view)], &None, &p).unwrap();
        p
    };
    let cases: Vec<(PathBuf, &[&str])> = vec![
        (
            write("chans.safetensors", &[2, 3, 28, 28]),
            &["chans.safetensors", "3 channels", "takes 1"],
        ),
        (
            write("size.safetensors", &[2, 1, 32, 32]),
            &["size.safetensors", "32x32", "28x28"],
        ),
        (
            write("rank.safetensors", &[2, 28, 28]),
            &["rank.safetensors", "[N, C, H, W]"],
        ),
    ];
    for (input, needles) in cases {
        let out = dir.join("out.safetensors");
        assert_clean_error(&forward(&model, &input, &out), needles);
        assert!(!out.exists());
    }
    assert_clean_error(
        &forward(&model, &dir.join("absent.safetensors"), &dir.join("o")),
        &["absent.safetensors"],
    );
}

#[test]
fn init_rejects_bad_arguments() {
    let dir = tempdir("init-bad");
    let o = run(bin()
        .args(["init", "--arch", "vit_huge_patch99", "--out"])
        .arg(dir.join("a")));
    assert_clean_error(&o, &["unknown architecture 'vit_huge_patch99'"]);
    let o = run(bin()
        .args([
            "init",
            "--arch",
            "vit_tiny_patch16_224",
            "--model-arg",
            "num_heads=5",
            "--out",
        ])
        .arg(dir.join("b")));
    assert_clean_error(&o, &["not divisible by num_heads"]);
    assert!(!dir.join("b").exists());
}
