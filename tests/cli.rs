//! The `scalenet` binary as a user meets it: the happy paths, and every bad input ending in one
//! readable line that names the file, a non-zero exit, no panic and no partial output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, with its cache (`--precision auto`'s measurement) in a temporary directory:
/// a measurement taken while the other tests load every core would otherwise be cached in the
/// user's home and decide their precision from then on.
fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scalenet"));
    // Our own kernels throughout: `--blas auto` would time the libraries of the machine the
    // tests run on, under the load of the other tests.
    cmd.env("SCALENET_BLAS", "none");
    // A path a test expects to be missing must never become a hub id that is looked up.
    cmd.env("HF_HUB_OFFLINE", "1");
    cmd.env(
        "XDG_CACHE_HOME",
        std::env::temp_dir().join(format!("scalenet-test-cache-{}", std::process::id())),
    );
    cmd
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
    // An empty SCALENET_BLAS means no library (as in `SCALENET_BLAS= scalenet ...`).
    let o = run(bin()
        .env("SCALENET_BLAS", "")
        .arg("info")
        .arg(&m)
        .arg("--json"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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

fn grown_fixture(name: &str, tag: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/grown")
        .join(name);
    let dst = tempdir(tag).join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors", "io.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn expand_then_info_and_forward() {
    let dir = tempdir("expand");
    let base = fixture("rgb_token_p8");
    let g = dir.join("g");
    let o = run(bin()
        .arg("expand")
        .arg(&base)
        .args(["--depth", "5", "--map", "interleave", "--init", "identity"])
        .args(["--unshared-norms", "--adapter-rank", "4", "--out"])
        .arg(&g));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("from 2 to 5 positions"));
    let o = run(bin().arg("info").arg(&g).arg("--json"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["scalenet"]["spec"]["layer_map"],
        serde_json::json!([0, 0, 1, 1, 1])
    );
    assert_eq!(v["scalenet"]["spec"]["layer_scale"], true);
    // 5 positions × 2 adapters × (2·32·4 + 4 + 32), plus 5 × 2 norms × 64, plus 5 × 2 gates × 32.
    assert_eq!(
        v["scalenet"]["params"]["adapters"],
        5 * 2 * (2 * 32 * 4 + 4 + 32)
    );
    assert_eq!(v["scalenet"]["params"]["position_norms"], 5 * 2 * 64);
    assert_eq!(v["scalenet"]["params"]["gates"], 5 * 2 * 32);
    // Identity init: the grown model gives the base's logits.
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    assert!(forward(&base, &base.join("io.safetensors"), &a)
        .status
        .success());
    assert!(forward(&g, &base.join("io.safetensors"), &b)
        .status
        .success());
    let read = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor("logits")
            .unwrap()
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<_>>()
    };
    let (la, lb) = (read(&a), read(&b));
    assert!(la.iter().zip(&lb).all(|(x, y)| (x - y).abs() < 1e-5));
    // --no-share writes a plain timm model of the grown depth.
    let n = dir.join("n");
    let o = run(bin()
        .arg("expand")
        .arg(&base)
        .args(["--depth", "4", "--no-share", "--out"])
        .arg(&n));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(bin().arg("info").arg(&n).arg("--json"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["model_args"]["depth"], 4);
    assert!(v["scalenet"].is_null());
    // Growing a grown model is refused with a clear message.
    let o = run(bin()
        .arg("expand")
        .arg(&g)
        .args(["--depth", "8", "--out"])
        .arg(dir.join("gg")));
    assert_clean_error(&o, &["grown scalenet model"]);
    let o = run(bin()
        .arg("expand")
        .arg(&base)
        .args(["--depth", "3", "--map", "0,0,0", "--out"])
        .arg(dir.join("x")));
    assert_clean_error(&o, &["never uses base block(s) 1"]);
    let o = run(bin()
        .arg("expand")
        .arg(&base)
        .args(["--depth", "1", "--out"])
        .arg(dir.join("x")));
    assert_clean_error(&o, &["smaller than the base depth"]);
    assert!(!dir.join("x").exists());
}

#[test]
fn malformed_grown_directories() {
    let info = |m: &Path| run(bin().arg("info").arg(m));
    // Map out of range.
    let m = grown_fixture("irregular_full", "g-range");
    edit_json(&m.join("config.json"), |v| {
        v["scalenet"]["layer_map"][2] = serde_json::json!(3)
    });
    assert_clean_error(
        &info(&m),
        &["config.json", "layer_map[2] = 3 is out of range"],
    );
    // Map shorter than the per-position tensors present.
    let m = grown_fixture("irregular_full", "g-short");
    edit_json(&m.join("config.json"), |v| {
        v["scalenet"]["layer_map"].as_array_mut().unwrap().pop();
    });
    assert_clean_error(
        &info(&m),
        &["model.safetensors", "unexpected", "scalenet.layers.6."],
    );
    // Map longer than the tensors present.
    let m = grown_fixture("irregular_full", "g-long");
    edit_json(&m.join("config.json"), |v| {
        v["scalenet"]["layer_map"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(0))
    });
    assert_clean_error(
        &info(&m),
        &["missing", "scalenet.layers.7.attn_adapter.down.weight"],
    );
    // Rank in the config differs from the tensors.
    let m = grown_fixture("irregular_full", "g-rank");
    edit_json(&m.join("config.json"), |v| {
        v["scalenet"]["adapter"]["rank"] = serde_json::json!(8)
    });
    assert_clean_error(
        &info(&m),
        &[
            "scalenet.layers.0.attn_adapter.down.weight",
            "[4, 32]",
            "[8, 32]",
        ],
    );
    // Placement claims an adapter that is not there.
    let m = grown_fixture("gelu_mlp_layerscale_base", "g-place");
    edit_json(&m.join("config.json"), |v| {
        v["scalenet"]["adapter"]["placement"] = serde_json::json!(["attn", "mlp"])
    });
    assert_clean_error(&info(&m), &["missing", "attn_adapter"]);
    // base_depth contradicting model_args, unknown version, unknown field.
    let m = grown_fixture("irregular_full", "g-depth");
    edit_json(&m.join("config.json"), |v| {
        v["scalenet"]["base_depth"] = serde_json::json!(4)
    });
    assert_clean_error(&info(&m), &["base_depth 4 contradicts model_args depth 3"]);
    let m = grown_fixture("irregular_full", "g-version");
    edit_json(&m.join("config.json"), |v| {
        v["scalenet"]["format_version"] = serde_json::json!(2)
    });
    assert_clean_error(&info(&m), &["format_version 2"]);
    let m = grown_fixture("irregular_full", "g-field");
    edit_json(&m.join("config.json"), |v| {
        v["scalenet"]["adapters"] = serde_json::json!(1)
    });
    assert_clean_error(&info(&m), &["'scalenet' section", "adapters"]);
}

/// A tiny grey model for Fashion-MNIST-sized input.
fn tiny_fmnist_model(dir: &Path, classes: usize) -> PathBuf {
    let m = dir.join(format!("tiny{classes}"));
    let o = run(bin()
        .args(["init", "--arch", "vit_tiny_patch16_224"])
        .args([
            "--model-arg",
            "img_size=28",
            "--model-arg",
            "patch_size=7",
            "--model-arg",
            "in_chans=1",
        ])
        .args([
            "--model-arg",
            "depth=1",
            "--model-arg",
            "embed_dim=16",
            "--model-arg",
            "num_heads=2",
        ])
        .arg("--model-arg")
        .arg(format!("num_classes={classes}"))
        .arg("--out")
        .arg(&m));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    m
}

fn train_cmd(model: &Path, data: &str, out: &Path) -> Command {
    let mut c = bin();
    c.arg("train")
        .arg(model)
        .args([
            "--data",
            data,
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--train-subset",
            "64",
        ])
        .args(["--test-subset", "32", "--val-split", "0.25", "--out"])
        .arg(out);
    c
}

#[test]
fn train_eval_predict_through_the_cli() {
    let dir = tempdir("train-cli");
    let m = tiny_fmnist_model(&dir, 10);
    let out = dir.join("run");
    let o = run(&mut train_cmd(&m, "fmnist-mini", &out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for k in [
        "train_loss",
        "lr",
        "val_top1",
        "val_top5",
        "test_top1",
        "test_top5",
        "img_per_s",
        "wall_s",
    ] {
        assert!(v[k].is_number(), "{k} in {v}");
    }
    assert!(out.join("curves.png").exists());
    // A second run into the same directory is refused; resuming a finished run is a no-op.
    assert_clean_error(
        &run(&mut train_cmd(&m, "fmnist-mini", &out)),
        &["already holds a run", "--resume"],
    );
    let json = dir.join("eval.json");
    let o = run(bin()
        .arg("eval")
        .arg(out.join("model"))
        .args(["--data", "fmnist-mini", "--json"])
        .arg(&json));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Ankle boot"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["n"], 1000);
    // predict on a PNG.
    let png = dir.join("shoe.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * y) % 256) as u8]))
        .save(&png)
        .unwrap();
    let o = run(bin().arg("predict").arg(out.join("model")).arg(&png));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 6);
}

#[test]
fn training_bad_inputs() {
    let dir = tempdir("train-bad");
    let m10 = tiny_fmnist_model(&dir, 10);
    // Missing dataset directory.
    assert_clean_error(
        &run(&mut train_cmd(
            &m10,
            "idx:/nonexistent/data",
            &dir.join("r0"),
        )),
        &["/nonexistent/data", "not found"],
    );
    // Unknown dataset kind.
    assert_clean_error(
        &run(&mut train_cmd(&m10, "svhn:/x", &dir.join("r0"))),
        &["--data svhn:/x", "unknown dataset"],
    );
    // IDX with the wrong magic.
    let idx = dir.join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(idx.join(f), [0u8, 0, 8, 9, 0, 0, 0, 0]).unwrap();
    }
    assert_clean_error(
        &run(&mut train_cmd(
            &m10,
            &format!("idx:{}", idx.display()),
            &dir.join("r1"),
        )),
        &["train-images-idx3-ubyte", "magic"],
    );
    // Class count that contradicts the model, and the way out.
    let m5 = tiny_fmnist_model(&dir, 5);
    assert_clean_error(
        &run(&mut train_cmd(&m5, "fmnist-mini", &dir.join("r2"))),
        &["5 classes", "has 10", "--reset-head"],
    );
    assert!(!dir.join("r2").join("run.json").exists());
    let o = run(train_cmd(&m5, "fmnist-mini", &dir.join("r3")).arg("--reset-head"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Resuming with another model is refused.
    let o = run(bin()
        .arg("train")
        .arg(&m10)
        .arg("--resume")
        .arg(dir.join("r3")));
    assert_clean_error(&o, &["run.json", "this run trains"]);
    assert_clean_error(
        &run(bin().arg("train").arg("--resume").arg(dir.join("nothing"))),
        &["run.json"],
    );
}

#[test]
fn image_folders_empty_classes_and_corrupt_images() {
    let dir = tempdir("folder");
    let root = dir.join("imgs");
    for (class, n) in [("cat", 3), ("dog", 3)] {
        std::fs::create_dir_all(root.join("train").join(class)).unwrap();
        for i in 0..n {
            image::RgbImage::from_fn(20, 24, |x, y| {
                image::Rgb([(x * 9) as u8, (y * 7) as u8, i as u8 * 40])
            })
            .save(root.join("train").join(class).join(format!("{i}.png")))
            .unwrap();
        }
    }
    let m = dir.join("m");
    let o = run(bin()
        .args([
            "init",
            "--arch",
            "vit_tiny_patch16_224",
            "--model-arg",
            "img_size=16",
            "--model-arg",
            "patch_size=8",
        ])
        .args([
            "--model-arg",
            "depth=1",
            "--model-arg",
            "embed_dim=16",
            "--model-arg",
            "num_heads=2",
            "--model-arg",
            "num_classes=2",
            "--out",
        ])
        .arg(&m));
    assert!(o.status.success());
    let data = format!("imagefolder:{}", root.display());
    let go = |out: &str, batch: &str, extra: &[&str]| {
        run(bin()
            .arg("train")
            .arg(&m)
            .args([
                "--data",
                &data,
                "--epochs",
                "1",
                "--batch-size",
                batch,
                "--val-split",
                "0",
            ])
            .args(extra)
            .arg("--out")
            .arg(dir.join(out)))
    };
    let o = go("ok", "2", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A corrupt image fails the run by default, and is skipped and counted on request.
    std::fs::write(
        root.join("train/dog/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    assert_clean_error(
        &go("bad", "2", &[]),
        &["broken.png", "corrupt", "--on-bad-image skip"],
    );
    // One image a batch: the broken image's batch is left empty, and the run steps over it.
    for batch in ["2", "1"] {
        let o = go(&format!("skip{batch}"), batch, &["--on-bad-image", "skip"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("skipped 1 unreadable image"));
    }
    // A class folder with no images.
    std::fs::create_dir_all(root.join("train/empty")).unwrap();
    assert_clean_error(&go("empty", "2", &[]), &["train/empty", "no .jpg"]);
}

#[test]
fn selfcheck_on_the_cpu_passes_every_check() {
    let dir = tempdir("selfcheck");
    let json = dir.join("checks.json");
    let out = run(bin()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["selfcheck", "--device", "flex", "--json"])
        .arg(&json));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok    fixtures  grown/"), "{stdout}");
    assert!(stdout.contains("ok    sharing"), "{stdout}");
    assert!(stdout.trim_end().ends_with(" passed, 0 failed"), "{stdout}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(written["checks"].as_array().unwrap().len() > 20);
}

#[test]
fn a_gpu_device_without_a_gpu_is_one_clear_line() {
    let out = run(bin().args([
        "bench",
        "--arch",
        "deit_tiny_patch16_224",
        "--steps",
        "1",
        "--device",
        "cuda:0",
    ]));
    if cfg!(feature = "cuda") {
        if scalenet::device::cuda::device_count().is_ok() {
            return; // a machine with a GPU: nothing to refuse
        }
        assert_clean_error(&out, &["--device cuda:0", "no CUDA driver found"]);
    } else {
        assert_clean_error(
            &out,
            &["--device cuda:0", "built without the 'cuda' feature"],
        );
    }
}

/// Numbers that would need terabytes are refused from the config, before anything is
/// allocated (they used to abort the process in the allocator).
#[test]
fn lying_sizes_are_refused_before_allocating() {
    let cases: [(&str, serde_json::Value, &[&str]); 5] = [
        (
            "depth",
            1_000_000_000u64.into(),
            &["depth 1000000000", "parameters"],
        ),
        (
            "num_classes",
            1_000_000_000_000u64.into(),
            &["num_classes 1000000000000"],
        ),
        (
            "embed_dim",
            1_000_000_000u64.into(),
            &["embed_dim 1000000000"],
        ),
        (
            "img_size",
            10_000_000u64.into(),
            &["img_size [10000000, 10000000]"],
        ),
        // Within limits, but far more than the file holds: the config contradicts the weights.
        (
            "depth",
            100_000u64.into(),
            &["holds only", "contradicts the weights"],
        ),
    ];
    for (i, (key, value, needles)) in cases.into_iter().enumerate() {
        let m = copy_fixture("rgb_token_p8", &format!("lying-{i}"));
        edit_json(&m.join("config.json"), |c| {
            if key == "num_classes" {
                c["num_classes"] = value.clone();
            }
            c["model_args"][key] = value;
        });
        let out = run(bin().arg("info").arg(&m));
        let mut all = vec!["config.json"];
        all.extend_from_slice(needles);
        assert_clean_error(&out, &all);
    }
    let out = run(bin()
        .args([
            "init",
            "--arch",
            "deit_tiny_patch16_224",
            "--model-arg",
            "depth=1000000000",
            "--out",
        ])
        .arg(tempdir("lying-init").join("m")));
    assert_clean_error(&out, &["depth 1000000000"]);
}

#[test]
fn a_tensor_named_twice_is_refused() {
    let m = copy_fixture("rgb_token_p8", "dup-key");
    let t = r#""a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    let header =
        format!("{{{t},{t},\"b\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}}}");
    std::fs::write(
        m.join("model.safetensors"),
        raw_safetensors(&header, &[0; 8]),
    )
    .unwrap();
    let out = run(bin().arg("info").arg(&m));
    assert_clean_error(&out, &["model.safetensors", "names tensor 'a' twice"]);
}

#[test]
fn lying_growth_specs_are_refused() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(Edit, &[&str]); 3] = [
        (
            |s| s["layer_map"][0] = 1_000_000_000u64.into(),
            &["layer_map[0] = 1000000000 is out of range"],
        ),
        (
            |s| s["adapter"]["rank"] = 0.into(),
            &["rank must be positive"],
        ),
        (
            |s| s["adapter"]["rank"] = 1_000_000_000_000u64.into(),
            &["rank 1000000000000 is larger than the width"],
        ),
    ];
    for (i, (edit, needles)) in cases.into_iter().enumerate() {
        let m = grown_fixture("irregular_full", &format!("lying-grown-{i}"));
        edit_json(&m.join("config.json"), |c| edit(&mut c["scalenet"]));
        let out = run(bin().arg("info").arg(&m));
        let mut all = vec!["config.json"];
        all.extend_from_slice(needles);
        assert_clean_error(&out, &all);
    }
    let base = fixture("rgb_token_p8");
    for (flags, needle) in [
        (["--depth", "1000000000"], "positions"),
        (["--adapter-rank", "1000000000000"], "larger than the width"),
    ] {
        let mut cmd = bin();
        cmd.arg("expand").arg(&base).args(flags);
        if flags[0] != "--depth" {
            cmd.args(["--depth", "4"]);
        }
        let out = run(cmd.arg("--out").arg(tempdir("lying-expand").join("g")));
        assert_clean_error(&out, &[needle]);
    }
}

/// A second trainer on a run directory that is in use is refused; the lock dies with its
/// holder, so a killed run never blocks its own resume.
#[test]
fn a_run_directory_in_use_is_refused() {
    let dir = tempdir("lock");
    let model = tiny_fmnist_model(&dir, 10);
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let held = scalenet::checkpoint::lock::lock_dir(&run_dir).unwrap();
    let out = run(&mut train_cmd(&model, "fmnist-mini", &run_dir));
    assert_clean_error(&out, &["run", "another scalenet process is training"]);
    assert!(!run_dir.join("run.json").exists(), "nothing written");
    drop(held);
    // Other tests fork children while the lock was held here; a child between fork and exec
    // still shares the descriptor for a moment, so the first try may still see it held.
    let mut out = run(&mut train_cmd(&model, "fmnist-mini", &run_dir));
    for _ in 0..20 {
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("holds .lock") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        out = run(&mut train_cmd(&model, "fmnist-mini", &run_dir));
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A new run that fails before it starts leaves no directory (and no lock) behind.
    let never = dir.join("never");
    let out = run(&mut train_cmd(&model, "idx:/nonexistent", &never));
    assert_eq!(out.status.code(), Some(1));
    assert!(!never.exists(), "left {}", never.display());
}

/// A 30-epoch run of the tiny model, quiet, for the fault tests; `resume` continues `out`.
fn long_run(model: &Path, out: &Path, resume: bool) -> Command {
    let mut c = bin();
    if resume {
        c.arg("train").arg("--resume").arg(out);
    } else {
        c.arg("train").arg(model).args([
            "--data",
            "fmnist-mini",
            "--epochs",
            "30",
            "--batch-size",
            "16",
            "--train-subset",
            "128",
            "--test-subset",
            "16",
            "--val-split",
            "0",
            "--precision",
            "f32",
            "--out",
        ]);
        c.arg(out);
    }
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// The epoch of the run's last complete checkpoint (0 before the first).
fn checkpointed_epoch(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("checkpoint/state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()?["epoch"].as_u64())
        .unwrap_or(0)
}

/// Waits (at most a minute) until `run` has checkpointed at least one epoch.
fn wait_for_checkpoint(run: &Path, child: &mut std::process::Child) {
    let t0 = std::time::Instant::now();
    while checkpointed_epoch(run) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(t0.elapsed().as_secs() < 60, "no checkpoint after a minute");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A small tmpfs mounted for one test (needs root, or a mount namespace); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(path.to_path_buf()))
    }

    fn remount(&self, how: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "remount {how}");
    }

    /// Fills the file system up to its last byte with `filler`.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        for _ in 0..4096 {
            if f.write_all(&[0]).is_err() {
                break;
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Names in `dir` that an interrupted write would leave: temporary files and directories.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") || name.contains(".old-") {
            found.push(name);
        } else if e.path().is_dir() {
            found.extend(leftovers(&e.path()));
        }
    }
    found
}

/// Faults around a run that must lose nothing: the source model deleted mid-run, a disk that
/// fills up while a checkpoint or a model is written, and a run directory that became
/// read-only. Each ends in one clear line (or, for the deleted model, no error at all), the
/// last checkpoint intact and no temporary files; the resumed run ends with the weights of the
/// run that never met a fault.
#[test]
fn faults_during_training_lose_nothing() {
    let dir = tempdir("faults");
    let model = tiny_fmnist_model(&dir, 10);
    let reference = dir.join("reference");
    assert!(long_run(&model, &reference, false)
        .status()
        .unwrap()
        .success());

    // The model the run started from is deleted after its first epoch: the run has what it
    // needs in memory and in its checkpoints.
    let doomed = dir.join("doomed");
    copy_dir(&model, &doomed);
    let run_a = dir.join("deleted-model");
    let mut child = long_run(&doomed, &run_a, false).spawn().unwrap();
    wait_for_checkpoint(&run_a, &mut child);
    std::fs::remove_dir_all(&doomed).unwrap();
    assert!(child.wait().unwrap().success());
    check_same_run(&reference, &run_a);

    let Some(disk) = Tmpfs::mount(&dir.join("disk"), "4m") else {
        eprintln!("skipped the full-disk and read-only cases: cannot mount a tmpfs here");
        return;
    };
    // The disk fills up mid-run: the next write (a checkpoint, most likely) fails.
    let run_b = disk.0.join("run");
    let mut child = long_run(&model, &run_b, false)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(&run_b, &mut child);
    let filler = disk.fill();
    let out = child.wait_with_output().unwrap();
    // Its stderr has the per-epoch lines, then the error.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("No space left on device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let kept = checkpointed_epoch(&run_b);
    assert!(kept >= 1, "the last checkpoint survives");
    assert_eq!(leftovers(&run_b), Vec::<String>::new());
    std::fs::remove_file(&filler).unwrap();

    // A read-only run directory: resume says so and changes nothing.
    disk.remount("ro");
    let out = run(bin().arg("train").arg("--resume").arg(&run_b));
    disk.remount("rw");
    assert_clean_error(&out, &["Read-only file system"]);
    assert_eq!(checkpointed_epoch(&run_b), kept);

    // With room again, the resumed run ends as if nothing had happened.
    assert!(long_run(&model, &run_b, true).status().unwrap().success());
    check_same_run(&reference, &run_b);

    // A model written onto a full disk: one line, and neither the directory nor temp files.
    let filler = disk.fill();
    let target = disk.0.join("new-model");
    let out = run(bin()
        .args(["init", "--arch", "vit_tiny_patch16_224", "--out"])
        .arg(&target));
    assert_clean_error(&out, &["No space left on device"]);
    assert!(!target.exists(), "no half-written model directory");
    assert_eq!(leftovers(&disk.0), Vec::<String>::new());
    std::fs::remove_file(&filler).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A run SIGKILLed again and again at moments drawn from a seed (during start-up, mid-epoch,
/// while checkpoints are written) and resumed each time ends with the same weights, bit for
/// bit, and the same per-epoch losses, as the run that was never interrupted.
#[test]
fn sigkilled_runs_resume_to_the_same_weights() {
    let dir = tempdir("kill");
    let model = tiny_fmnist_model(&dir, 10);
    let train = |out: &Path, resume: bool| long_run(&model, out, resume);
    let reference = dir.join("reference");
    let t0 = std::time::Instant::now();
    assert!(train(&reference, false).status().unwrap().success());
    let t_ref = t0.elapsed().as_secs_f64();

    let mut seed: u64 = 0x5ca1e;
    let (mut kills, mut attempts, mut progress) = (0, 0, Vec::new());
    // Runs until 20 kills have landed, on as many runs as that takes (a fast machine may
    // finish one before), each carried to its end and checked.
    for run_index in 0.. {
        if kills >= 20 {
            break;
        }
        let killed = dir.join(format!("killed-{run_index}"));
        loop {
            attempts += 1;
            assert!(attempts < 500, "no progress after {kills} kills");
            let resume = killed.join("run.json").exists();
            let mut child = train(&killed, resume).spawn().unwrap();
            if kills < 20 {
                // 1-12% of the whole run: some kills land in start-up, most mid-epoch or while
                // a checkpoint is written, and the run still moves on between them.
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let frac = 0.01 + 0.11 * ((seed >> 33) as f64 / (1u64 << 31) as f64);
                std::thread::sleep(std::time::Duration::from_secs_f64(frac * t_ref));
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    let state = std::fs::read_to_string(killed.join("checkpoint/state.json"));
                    let epoch = state.ok().and_then(|t| {
                        serde_json::from_str::<serde_json::Value>(&t).ok()?["epoch"].as_u64()
                    });
                    progress.push(epoch.unwrap_or(0));
                    continue;
                }
            }
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "attempt {attempts} failed after {kills} kills"
            );
            if killed.join("model/model.safetensors").exists() {
                break;
            }
        }
        check_same_run(&reference, &killed);
    }
    assert!(kills >= 20, "only {kills} kills");
    eprintln!(
        "{kills} kills in {attempts} attempts; uninterrupted run {t_ref:.2} s; epochs checkpointed at each kill: {progress:?}"
    );
}

/// The killed run `killed` ended exactly as `reference`: weights bit for bit, the same
/// per-epoch losses (each epoch listed once), and no leftovers of interrupted saves.
fn check_same_run(reference: &Path, killed: &Path) {
    let weights = |run: &Path| std::fs::read(run.join("model/model.safetensors")).unwrap();
    assert!(
        weights(reference) == weights(killed),
        "weights differ: {}",
        killed.display()
    );
    let losses = |run: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["epoch"].as_u64().unwrap(),
                    v["train_loss"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(losses(reference), losses(killed));
    let leftovers: Vec<_> = std::fs::read_dir(killed)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".checkpoint."))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// A copy of a transformers fixture, for editing.
/// A two-word tokenizer.json in `dir`: "a" is 0, "b" is `b_id`.
fn word_tokenizer(dir: &Path, b_id: usize) {
    let json = format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{{"type":"Whitespace"}},"post_processor":null,"decoder":null,
            "model":{{"type":"WordLevel","vocab":{{"a":0,"b":{b_id}}},"unk_token":"a"}}}}"#
    );
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
}

fn llama_fixture(tag: &str) -> PathBuf {
    let src = fixture("../llama/gqa_tied");
    let dst = tempdir(tag).join("m");
    copy_dir(&src, &dst);
    dst
}

#[test]
fn language_model_bad_inputs() {
    let info = |m: &Path| run(bin().arg("info").arg(m));
    // A switch the model does not implement is refused by name.
    let m = llama_fixture("lm-sliding");
    edit_json(&m.join("config.json"), |v| {
        v["sliding_window"] = 4096.into()
    });
    assert_clean_error(&info(&m), &["config.json", "'sliding_window'"]);
    let m = llama_fixture("lm-type");
    edit_json(&m.join("config.json"), |v| {
        v["model_type"] = "mistral".into()
    });
    assert_clean_error(&info(&m), &["config.json", "model_type 'mistral'"]);
    let m = llama_fixture("lm-bias");
    edit_json(&m.join("config.json"), |v| {
        v["attention_bias"] = true.into()
    });
    assert_clean_error(&info(&m), &["'attention_bias'"]);
    // A shard the index names is missing.
    let m = llama_fixture("lm-shard");
    std::fs::rename(
        m.join("model.safetensors"),
        m.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    std::fs::write(
        m.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    assert_clean_error(
        &info(&m),
        &[
            "model.safetensors.index.json",
            "model-00002-of-00002.safetensors",
            "missing",
        ],
    );
    // A tokenizer with ids past the embeddings.
    let m = llama_fixture("lm-tok");
    word_tokenizer(&m, 500);
    assert_clean_error(&info(&m), &["tokenizer.json", "token id 500", "97 rows"]);
    // An image model where a language model is needed.
    let out = run(bin()
        .arg("generate")
        .arg(fixture("distilled"))
        .args(["--prompt", "hi"]));
    assert_clean_error(&out, &["config.json", "timm image model"]);
    // A truncated GGUF.
    let dir = tempdir("lm-gguf");
    let g = dir.join("bad.gguf");
    std::fs::write(&g, b"GGUF\x03\x00\x00\x00\x01\x00").unwrap();
    assert_clean_error(&info(&g), &["bad.gguf", "GGUF"]);
    // input_ids outside the vocabulary.
    let m = llama_fixture("lm-ids");
    let ids = dir.join("ids.safetensors");
    let data: Vec<u8> = [1i64, 2, 1000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, 3], &data).unwrap();
    std::fs::write(
        &ids,
        safetensors::serialize([("input_ids", view)], &None).unwrap(),
    )
    .unwrap();
    let out = forward(&m, &ids, &dir.join("out.safetensors"));
    assert_clean_error(&out, &["ids.safetensors", "1000", "vocabulary"]);
    assert!(!dir.join("out.safetensors").exists());
}

/// A Swin through the CLI: init from a preset with model_args, grow per stage, info's
/// per-stage table, identity growth giving the base's logits, and the Swin-specific refusals.
#[test]
fn swin_init_expand_info_forward() {
    let dir = tempdir("swin");
    let base = dir.join("base");
    let o = run(bin()
        .args(["init", "--arch", "swin_tiny_patch4_window7_224"])
        .args(["--model-arg", "img_size=28", "--model-arg", "patch_size=2"])
        .args(["--model-arg", "in_chans=1", "--model-arg", "embed_dim=8"])
        .args([
            "--model-arg",
            "depths=[2,1]",
            "--model-arg",
            "num_heads=[2,2]",
        ])
        .args(["--model-arg", "num_classes=10", "--out"])
        .arg(&base));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = dir.join("g");
    let o = run(bin()
        .arg("expand")
        .arg(&base)
        .args([
            "--depths",
            "3,2",
            "--map",
            "interleave",
            "--init",
            "identity",
        ])
        .args(["--adapter-rank", "4", "--out"])
        .arg(&g));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(bin().arg("info").arg(&g));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("2→3") && table.contains("1→2"), "{table}");
    let o = run(bin().arg("info").arg(&g).arg("--json"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["scalenet"]["layer_maps"],
        serde_json::json!([[0, 1, 1], [0, 0]])
    );
    assert_eq!(v["stages"][1]["resolution"], serde_json::json!([7, 7]));
    // Identity growth: the same logits as the base.
    let input = dir.join("in.safetensors");
    let values: Vec<u8> = (0..2 * 28 * 28)
        .flat_map(|i| ((i % 17) as f32 / 8.0 - 1.0).to_le_bytes())
        .collect();
    let header = r#"{"input":{"dtype":"F32","shape":[2,1,28,28],"data_offsets":[0,6272]}}"#;
    std::fs::write(&input, raw_safetensors(header, &values)).unwrap();
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    assert!(forward(&base, &input, &a).status.success());
    assert!(forward(&g, &input, &b).status.success());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // A Swin needs --depths; a ViT refuses them.
    let o = run(bin()
        .arg("expand")
        .arg(&base)
        .args(["--depth", "6", "--out"])
        .arg(dir.join("x")));
    assert_clean_error(&o, &["is a Swin", "--depths", "2,1"]);
    let o = run(bin()
        .arg("expand")
        .arg(fixture("rgb_token_p8"))
        .args(["--depths", "2,2", "--out"])
        .arg(dir.join("x")));
    assert_clean_error(&o, &["is a ViT"]);
    let o = run(bin()
        .arg("expand")
        .arg(&base)
        .args(["--depths", "3", "--out"])
        .arg(dir.join("x")));
    assert_clean_error(&o, &["2 stages"]);
    // Heads and depths of different lengths.
    let o = run(bin()
        .args(["init", "--arch", "swin_tiny_patch4_window7_224"])
        .args(["--model-arg", "depths=[2,2]", "--out"])
        .arg(dir.join("x")));
    assert_clean_error(&o, &["different lengths"]);
    assert!(!dir.join("x").exists());
}

/// Output into a pipe that is already closed (`scalenet info DIR | head`, with head gone)
/// ends the process quietly: no panic, no "internal error" line.
#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_is_not_an_internal_error() {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] was just opened by pipe() and is closed once, here.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is an open descriptor that nothing else owns.
    let stdout = unsafe { std::process::Stdio::from_raw_fd(fds[1]) };
    let out = bin()
        .arg("info")
        .arg(fixture("rgb_token_p8"))
        .arg("--json")
        .stdout(stdout)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("internal error"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A batch of no images, and token inputs with no sequence or no token, give empty logits of
/// the right width, not a panic.
#[test]
fn empty_inputs_give_empty_results() {
    let dir = tempdir("empty");
    let write = |name: &str, key: &str, dtype: safetensors::Dtype, shape: Vec<usize>| {
        let view = safetensors::tensor::TensorView::new(dtype, shape, &[]).unwrap();
        let p = dir.join(name);
        safetensors::serialize_to_file(vec![(key, view)], &None, &p).unwrap();
        p
    };
    let logits_shape = |out: &Output, path: &Path| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor("logits").unwrap().shape().to_vec()
    };
    let images = write(
        "images.safetensors",
        "input",
        safetensors::Dtype::F32,
        vec![0, 1, 28, 28],
    );
    let out = dir.join("out.safetensors");
    let o = forward(&fixture("grey_avg_nobias"), &images, &out);
    assert_eq!(logits_shape(&o, &out), vec![0, 10]);
    // A tokenizer of two words, inside the model's 97 embeddings.
    let llama = llama_fixture("empty-lm");
    word_tokenizer(&llama, 1);
    // An empty prompt starts from the model's bos token.
    let o = run(bin()
        .arg("generate")
        .arg(&llama)
        .args(["--prompt", "", "--max-new-tokens", "2"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A text shorter than one window is one clear line.
    let text = dir.join("short.txt");
    std::fs::write(&text, "a b").unwrap();
    let o = run(bin()
        .arg("eval")
        .arg(&llama)
        .arg("--data")
        .arg(format!("text:{}", text.display()))
        .args(["--seq-len", "16"]));
    assert_clean_error(&o, &["window"]);
    for (name, shape, want) in [
        ("n0", vec![0, 4], vec![0, 4, 97]),
        ("t0", vec![2, 0], vec![2, 0, 97]),
    ] {
        let ids = write(
            &format!("{name}.safetensors"),
            "input_ids",
            safetensors::Dtype::I64,
            shape,
        );
        let o = forward(&llama, &ids, &out);
        assert_eq!(logits_shape(&o, &out), want);
    }
}

/// Models by hub id come from the Hugging Face cache, laid out as `huggingface_hub` lays it
/// out (refs, snapshots of symlinks into blobs); a local path still wins, and an id the cache
/// lacks is one line naming where it looked.
#[test]
fn hub_ids_are_read_from_the_hugging_face_cache() {
    let cache = tempdir("hub-cache");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--timm--tiny_vit");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for (file, blob) in [("config.json", "c0ffee"), ("model.safetensors", "5afe")] {
        std::fs::copy(
            fixture("distilled").join(file),
            repo.join("blobs").join(blob),
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snapshot.join(file)).unwrap();
    }
    // Offline: nothing here may reach a network.
    let hub = |args: &[&str]| {
        run(bin()
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .args(args))
    };
    for id in [
        "timm/tiny_vit",
        "hf-hub:timm/tiny_vit",
        &format!("timm/tiny_vit@{commit}"),
    ] {
        let o = hub(&["info", id]);
        assert!(
            o.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("deit_tiny_distilled"));
    }
    let out = cache.join("out.safetensors");
    let input = fixture("distilled").join("io.safetensors");
    let o = hub(&[
        "forward",
        "timm/tiny_vit",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_clean_error(
        &hub(&["info", "timm/other"]),
        &["timm/other", "models--timm--other", "Hugging Face cache"],
    );
    assert_clean_error(
        &hub(&["info", "timm/tiny_vit@v2"]),
        &["timm/tiny_vit@v2", "refs/v2"],
    );
}

/// A language model from nothing: a tokenizer trained on text, a random Llama of that
/// vocabulary (transformers' layout), then info and forward on it; missing sizes and a
/// vocabulary too small for the bytes are one line each.
#[test]
fn a_new_language_model_from_text() {
    let dir = tempdir("new-lm");
    let text = dir.join("corpus.txt");
    let words = [
        "the", "grown", "model", "shares", "its", "blocks", "and", "trains", "fast",
    ];
    let doc: Vec<&str> = (0..3000)
        .map(|i| words[(i * 7 + i / 5) % words.len()])
        .collect();
    std::fs::write(&text, doc.join(" ")).unwrap();
    let m = dir.join("lm");
    let data = format!("text:{}", text.display());
    let tok = m.join("tokenizer.json");
    let tok = tok.to_str().unwrap();
    let train_tokenizer = |vocab: &str| {
        let args = [
            "tokenizer",
            "train",
            "--data",
            &data,
            "--vocab-size",
            vocab,
            "--out",
            tok,
        ];
        run(bin().args(args))
    };
    let o = train_tokenizer("280");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sizes = [
        "vocab_size=280",
        "hidden_size=32",
        "intermediate_size=64",
        "num_hidden_layers=2",
        "num_attention_heads=2",
    ];
    let mut init = bin();
    init.args(["init", "--arch", "llama", "--out"]).arg(&m);
    for s in sizes {
        init.args(["--model-arg", s]);
    }
    let o = run(&mut init);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = String::from_utf8_lossy(&run(bin().arg("info").arg(&m)).stdout).into_owned();
    assert!(
        info.contains("layers 2") && info.contains("tokenizer 280 tokens"),
        "{info}"
    );
    let o = run(bin().args(["eval"]).arg(&m).args([
        "--data",
        &data,
        "--seq-len",
        "16",
        "--max-windows",
        "4",
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(bin()
        .args([
            "init",
            "--arch",
            "llama",
            "--model-arg",
            "hidden_size=32",
            "--out",
        ])
        .arg(dir.join("x")));
    assert_clean_error(&o, &["vocab_size", "num_hidden_layers"]);
    let o = train_tokenizer("100");
    assert_clean_error(&o, &["--vocab-size", "257"]);
}

/// `expand --method`: each growth operator of the literature as one flag, with its defining
/// map, sharing and init; LLaMA-Pro starts as the base's function; bad combinations are one
/// line each.
#[test]
fn growth_methods_as_one_flag() {
    let dir = tempdir("methods");
    let base = dir.join("base");
    let o = run(bin()
        .args(["init", "--arch", "vit_tiny_patch16_224", "--out"])
        .arg(&base)
        .args(["--model-arg", "img_size=28", "--model-arg", "patch_size=7"])
        .args(["--model-arg", "in_chans=1", "--model-arg", "num_classes=3"])
        .args([
            "--model-arg",
            "depth=4",
            "--model-arg",
            "embed_dim=32",
            "--model-arg",
            "num_heads=2",
        ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expand = |method: &str, extra: &[&str]| {
        let out = dir.join(format!("{method}{}", extra.join("")));
        let o = run(bin()
            .arg("expand")
            .arg(&base)
            .args(["--method", method])
            .args(extra)
            .arg("--out")
            .arg(&out));
        (o, out)
    };
    let info = |m: &Path| -> serde_json::Value {
        serde_json::from_slice(&run(bin().arg("info").arg(m).arg("--json")).stdout).unwrap()
    };
    for (method, extra, depth) in [
        ("stack", &["--depth", "8"][..], 8),
        ("llama-pro", &["--depth", "6"][..], 6),
        ("solar-dus", &["--dus-drop", "1"][..], 6),
    ] {
        let (o, out) = expand(method, extra);
        assert!(
            o.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Unshared copies: a plain timm model of the grown depth.
        assert_eq!(info(&out)["model_args"]["depth"], depth, "{method}");
        assert!(info(&out)["scalenet"].is_null(), "{method}");
    }
    let (o, out) = expand("shared", &["--depth", "8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec = &info(&out)["scalenet"]["spec"];
    assert!(spec["adapter"].is_null() && spec["layer_map"].as_array().unwrap().len() == 8);
    // LLaMA-Pro's copies add nothing at the start: the base's logits.
    let input = dir.join("in.safetensors");
    let data: Vec<u8> = (0..2 * 28 * 28)
        .flat_map(|i| ((i % 17) as f32 / 8.0 - 1.0).to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 1, 28, 28], &data)
            .unwrap();
    safetensors::serialize_to_file(vec![("input", view)], &None, &input).unwrap();
    let logits = |m: &Path| {
        let out = dir.join("logits.safetensors");
        assert!(forward(m, &input, &out).status.success());
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("logits").unwrap();
        t.data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect::<Vec<f32>>()
    };
    let (want, got) = (logits(&base), logits(&dir.join("llama-pro--depth6")));
    assert!(
        want.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-5),
        "{want:?} {got:?}"
    );
    // LLaMA-Pro trains its copies alone: blocks 2 and 5 of 0,1,1,2,3,3 move, the rest stays.
    let pro = dir.join("llama-pro--depth6");
    let params = &info(&pro)["params"];
    assert_eq!(
        params["added_blocks"].as_u64().unwrap() * 3,
        params["blocks"].as_u64().unwrap()
    );
    let run_dir = dir.join("pro-run");
    let o = run(bin()
        .arg("train")
        .arg(&pro)
        .args([
            "--data",
            "fmnist-mini",
            "--epochs",
            "1",
            "--batch-size",
            "32",
        ])
        .args([
            "--train-subset",
            "64",
            "--test-subset",
            "32",
            "--reset-head",
        ])
        .args(["--train-only", "new", "--precision", "f32", "--out"])
        .arg(&run_dir));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let weights = |m: &Path, key: &str| -> Vec<u8> {
        let bytes = std::fs::read(m.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor(key).unwrap().data().to_vec()
    };
    for (block, trains) in [(0, false), (1, false), (2, true), (3, false), (5, true)] {
        let key = format!("blocks.{block}.mlp.fc1.weight");
        let same = weights(&pro, &key) == weights(&run_dir.join("model"), &key);
        assert_eq!(same, !trains, "{key}");
    }
    let o = run(bin()
        .arg("train")
        .arg(&base)
        .args([
            "--data",
            "fmnist-mini",
            "--epochs",
            "1",
            "--reset-head",
            "--train-only",
            "new",
            "--out",
        ])
        .arg(dir.join("no-new")));
    assert_clean_error(&o, &["--train-only new", "scalenet_new_layers"]);
    assert_clean_error(
        &expand("llama-pro", &["--depth", "7"]).0,
        &["llama-pro", "divide"],
    );
    assert_clean_error(
        &expand("solar-dus", &["--dus-drop", "3"]).0,
        &["--dus-drop 3"],
    );
    assert_clean_error(
        &expand("stack", &["--depth", "8", "--dus-drop", "1"]).0,
        &["--dus-drop", "solar-dus"],
    );
    assert_clean_error(&expand("nope", &["--depth", "8"]).0, &["--method 'nope'"]);
    assert_clean_error(
        &expand("stack", &["--depth", "8", "--lora-rank", "4"]).0,
        &["--lora-rank", "relaxed-recursive"],
    );
    // Relaxed recursive: shared blocks and a LoRA per position, B at zero, so the start is
    // shared looping's function; one training step moves the LoRA and the shared weights.
    let (o, rr) = expand("relaxed-recursive", &["--depth", "8", "--lora-rank", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec = &info(&rr)["scalenet"]["spec"];
    assert_eq!(spec["lora"]["rank"], 4, "{spec}");
    assert!(spec["adapter"].is_null());
    let shared = dir.join("shared--depth8");
    assert_eq!(logits(&rr), logits(&shared));
    let rr_run = dir.join("rr-run");
    let o = run(bin()
        .arg("train")
        .arg(&rr)
        .args([
            "--data",
            "fmnist-mini",
            "--epochs",
            "1",
            "--batch-size",
            "32",
        ])
        .args([
            "--train-subset",
            "64",
            "--test-subset",
            "32",
            "--reset-head",
        ])
        .args(["--precision", "f32", "--out"])
        .arg(&rr_run));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for key in [
        "blocks.0.attn.qkv.weight",
        "scalenet.layers.5.lora.mlp.fc2.lora_B.weight",
    ] {
        assert_ne!(
            weights(&rr, key),
            weights(&rr_run.join("model"), key),
            "{key}"
        );
    }
}

/// Files laid out as Debian's bible-kjv, fortunes and dict-gcide packages lay them out, small:
/// the KJV as `bible -f` prints it, two fortune files, and a dictzip-compatible dictionary with
/// its base-64 index.
fn fake_english_packages(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use std::io::Write;
    let words = [
        "and", "the", "light", "was", "good", "upon", "waters", "earth", "said", "day",
    ];
    let verse = |i: usize| -> String {
        (0..12)
            .map(|k| words[(i * 3 + k * k) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut kjv = String::new();
    for ch in 1..=120 {
        for v in 1..=6 {
            kjv.push_str(&format!("Ge{ch}:{v} {}.\n", verse(ch * 7 + v)));
        }
    }
    let kjv_path = dir.join("kjv.txt");
    std::fs::write(&kjv_path, kjv).unwrap();
    let fortunes = dir.join("fortunes");
    std::fs::create_dir_all(&fortunes).unwrap();
    for (f, n) in [("wisdom", 40), ("zippy", 30)] {
        let text: Vec<String> = (0..n).map(|i| format!("{} -- {f}\n", verse(i))).collect();
        std::fs::write(fortunes.join(f), text.join("%\n")).unwrap();
        std::fs::write(fortunes.join(format!("{f}.dat")), [0u8, 1, 2]).unwrap();
    }
    let (mut dict, mut index) = (String::new(), String::new());
    let b64 = |mut n: usize| {
        let digits = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = vec![digits[n % 64]];
        while n >= 64 {
            n /= 64;
            s.insert(0, digits[n % 64]);
        }
        String::from_utf8(s).unwrap()
    };
    for i in 0..60 {
        let entry = format!(
            "Word{i} \\Word{i}\\, n.\n   {}.\n   [1913 Webster]\n\n",
            verse(i)
        );
        index.push_str(&format!(
            "word{i}\t{}\t{}\n",
            b64(dict.len()),
            b64(entry.len())
        ));
        dict.push_str(&entry);
    }
    let gcide = dir.join("gcide.dict.dz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(dict.as_bytes()).unwrap();
    std::fs::write(&gcide, gz.finish().unwrap()).unwrap();
    std::fs::write(dir.join("gcide.index"), index).unwrap();
    (kjv_path, fortunes, gcide)
}

/// `scalenet corpus`: the three sources split by document, the same bytes on a second run;
/// a missing package and a lying index are one line each.
#[test]
fn an_english_corpus_from_debian_packages() {
    let dir = tempdir("corpus");
    let (kjv, fortunes, gcide) = fake_english_packages(&dir);
    let corpus = |out: &Path, fortunes: &Path| {
        run(bin()
            .args(["corpus", "--out"])
            .arg(out)
            .arg("--kjv")
            .arg(&kjv)
            .arg("--fortunes")
            .arg(fortunes)
            .arg("--gcide")
            .arg(&gcide))
    };
    let (a, b) = (dir.join("a"), dir.join("b"));
    for out in [&a, &b] {
        let o = corpus(out, &fortunes);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("corpus.json")).unwrap()).unwrap();
    let sources = info["sources"].as_array().unwrap();
    let docs = |s: usize, split: usize| sources[s][1][split]["documents"].as_u64().unwrap();
    assert_eq!(sources.len(), 3);
    assert_eq!((docs(0, 0), docs(0, 1), docs(0, 2)), (108, 6, 6));
    assert_eq!(docs(1, 0) + docs(1, 1) + docs(1, 2), 70);
    assert_eq!(docs(2, 0) + docs(2, 1) + docs(2, 2), 60);
    for f in ["train.jsonl", "valid.jsonl", "test.jsonl", "corpus.json"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let train = std::fs::read_to_string(a.join("train.jsonl")).unwrap();
    assert!(!train.contains("Ge1:") && !train.contains("[1913 Webster]"));
    assert_clean_error(
        &corpus(&dir.join("c"), &dir.join("nowhere")),
        &["nowhere", "fortunes"],
    );
    std::fs::write(dir.join("gcide.index"), "word\tA\tzzzz\n").unwrap();
    let o = corpus(&dir.join("d"), &fortunes);
    assert_clean_error(&o, &["gcide.index", "line 1"]);
    assert!(!dir.join("d").join("train.jsonl").exists());
}

/// `reproduce --family llama` on a tiny corpus: the base, then growth operators, each run
/// evaluated on the whole validation and test splits, the report with every finished arm; a
/// second call reuses every run; bad settings are one line.
#[test]
fn the_language_model_study_runs_and_resumes() {
    let dir = tempdir("lm-study");
    let (kjv, fortunes, gcide) = fake_english_packages(&dir);
    let corpus = dir.join("corpus");
    let o = run(bin()
        .args(["corpus", "--out"])
        .arg(&corpus)
        .arg("--kjv")
        .arg(&kjv)
        .arg("--fortunes")
        .arg(&fortunes)
        .arg("--gcide")
        .arg(&gcide));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let study = dir.join("study");
    let reproduce = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.args(["reproduce", "--family", "llama", "--out"])
            .arg(&study)
            .arg("--corpus")
            .arg(&corpus);
        cmd.args([
            "--hidden-size",
            "16",
            "--num-heads",
            "2",
            "--num-kv-heads",
            "1",
        ])
        .args([
            "--intermediate-size",
            "32",
            "--vocab-size",
            "300",
            "--seq-len",
            "16",
        ])
        .args([
            "--batch-size",
            "4",
            "--epoch-tokens",
            "640",
            "--base-epochs",
            "2",
        ])
        .args(["--epochs", "1", "--seeds", "1", "--base-depth", "2"])
        .args([
            "--val-windows",
            "4",
            "--precision",
            "f32",
            "--adapter-rank",
            "4",
        ])
        .args([
            "--only",
            "scalenet,llama-pro-new,solar-dus,relaxed-recursive",
        ])
        .args(extra);
        run(&mut cmd)
    };
    let o = reproduce(&["--lr-grid", "none"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = std::fs::read_to_string(study.join("RESULTS.md")).unwrap();
    for row in [
        "| base |",
        "| scalenet |",
        "| llama-pro-new |",
        "| solar-dus |",
        "| relaxed-recursive |",
        "| kjv |",
    ] {
        assert!(report.contains(row), "{row} not in {report}");
    }
    assert!(study.join("results.png").is_file());
    let metrics = std::fs::read_to_string(study.join("runs/base/metrics.jsonl")).unwrap();
    let tokens: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["train_tokens"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        tokens,
        [640, 1280],
        "an epoch is --epoch-tokens of the stream"
    );
    let fin = |run: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(study.join("runs").join(run).join("final.json")).unwrap(),
        )
        .unwrap()
    };
    let pro = fin("llama-pro-new-s0");
    assert!(
        pro["params_trained"].as_u64() < pro["params_stored"].as_u64(),
        "{pro}"
    );
    assert_eq!(
        fin("solar-dus-s0")["positions"],
        2,
        "SOLAR with m = 1 of 2 layers"
    );
    assert!(fin("scalenet-s0")["test_loss"]
        .as_f64()
        .unwrap()
        .is_finite());
    let o = reproduce(&["--lr-grid", "none"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("scalenet-s0: done earlier, reusing"));
    assert_clean_error(
        &reproduce(&["--lr-grid", "1e-3,4e-3"]),
        &["--lr", "--lr-grid"],
    );
    assert_clean_error(&reproduce(&["--mixup", "0.2"]), &["--mixup", "llama"]);
    assert_clean_error(&reproduce(&["--dus-drop", "2"]), &["--dus-drop", "1 to 1"]);
}
