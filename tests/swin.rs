//! Swin: logits against timm's on the committed fixtures (tests/fixtures/gen_swin_fixtures.py),
//! lossless save/load, and growth per stage (identity start, sharing, the unshared copy).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use scalenet::checkpoint::model_dir::build_network;
use scalenet::checkpoint::{load_model, save_model, ModelConfig, TensorFile};
use scalenet::growth::{expand_swin, ExpandOptions, InitMode, MapStrategy};
use scalenet::model::weights::to_vec;
use scalenet::network::Network;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn swin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("swin"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4);
    dirs
}

#[test]
fn logits_match_timm_within_1e4() {
    let device = Device::flex();
    for (name, dir) in scalenet::selfcheck::fixture_dirs(&fixtures()) {
        if !name.contains("swin") {
            continue;
        }
        let c = scalenet::selfcheck::fixture(&name, &dir, &device).unwrap();
        eprintln!("{name}: max abs error {:e}", c.max_err);
        assert!(c.passed(), "{name}: max abs error {}", c.max_err);
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalenet-swin-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn input(dir: &Path) -> Tensor<4> {
    let t = TensorFile::read(&dir.join("io.safetensors"))
        .unwrap()
        .take("input")
        .unwrap();
    let [n, c, h, w] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
    Tensor::from_data(TensorData::new(t.values, [n, c, h, w]), &Device::flex())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn save_then_load_is_lossless() {
    let device = Device::flex();
    let tmp = tempdir("roundtrip");
    let mut dirs = swin_dirs();
    dirs.extend(
        std::fs::read_dir(fixtures().join("grown_swin"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir()),
    );
    for dir in dirs {
        let loaded = load_model(&dir, &device).unwrap();
        let out = tmp.join(dir.file_name().unwrap());
        save_model(&out, &loaded.config, &loaded.network).unwrap();
        let again = load_model(&out, &device).unwrap();
        assert_eq!(again.config.arch, loaded.config.arch);
        assert_eq!(again.config.growth, loaded.config.growth);
        let a = TensorFile::read(&dir.join("model.safetensors")).unwrap();
        let b = TensorFile::read(&out.join("model.safetensors")).unwrap();
        assert_eq!(
            a.tensors.keys().collect::<Vec<_>>(),
            b.tensors.keys().collect::<Vec<_>>()
        );
        for (k, t) in &a.tensors {
            assert_eq!(t.values, b.tensors[k].values, "{k}");
        }
    }
}

fn opts(depths: &[usize], map: MapStrategy, init: InitMode, no_share: bool) -> ExpandOptions {
    ExpandOptions {
        depth: 0,
        depths: depths.to_vec(),
        map,
        adapter: Some(Default::default()),
        unshared_norms: true,
        init,
        no_share,
        lora: None,
        seed: 7,
    }
    .with_rank(4)
}

trait WithRank {
    fn with_rank(self, r: usize) -> Self;
}

impl WithRank for ExpandOptions {
    fn with_rank(mut self, r: usize) -> Self {
        if let Some(a) = &mut self.adapter {
            a.rank = r;
        }
        self
    }
}

fn base(name: &str) -> (PathBuf, scalenet::checkpoint::model_dir::LoadedModel) {
    let dir = fixtures().join("swin").join(name);
    let loaded = load_model(&dir, &Device::flex()).unwrap();
    (dir, loaded)
}

fn swin_of(net: Network) -> scalenet::model::swin::SwinTransformer {
    match net {
        Network::Swin(m) => m,
        _ => panic!("expected a plain Swin"),
    }
}

/// Identity init reproduces the base's logits exactly, for cyclic and interleave maps (the
/// latter opens block 1's gate at an odd position, where it keeps its shifted windows).
#[test]
fn identity_growth_reproduces_the_base_exactly() {
    let cases: [(&str, &[usize]); 2] = [
        ("three_stages_w4", &[4, 3, 5]),
        ("rect_four_stages", &[4, 2, 3, 4]),
    ];
    for (name, depths) in cases {
        for map in [MapStrategy::Cyclic, MapStrategy::Interleave] {
            let (dir, loaded) = base(name);
            let x = input(&dir);
            let want = to_vec(loaded.network.forward(x.clone()));
            let (_, grown) = expand_swin(
                swin_of(loaded.network),
                &loaded.config,
                &opts(depths, map.clone(), InitMode::Identity, false),
            )
            .unwrap();
            let got = to_vec(grown.forward(x));
            assert_eq!(max_diff(&got, &want), 0.0, "{name} {map:?}");
        }
    }
}

/// The paper's init starts with zero adapters, so `--no-share` writes a plain timm Swin with
/// the grown depths that computes the grown model's function; and it loads back as one.
#[test]
fn no_share_copy_computes_the_grown_function() {
    let (dir, loaded) = base("three_stages_w4");
    let x = input(&dir);
    let config = loaded.config.clone();
    let net = swin_of(loaded.network);
    let o = opts(&[3, 4, 2], MapStrategy::Interleave, InitMode::Paper, false);
    let (_, grown) = expand_swin(net, &config, &o).unwrap();
    let want = to_vec(grown.forward(x.clone()));
    let (_, loaded) = base("three_stages_w4");
    let o = ExpandOptions {
        no_share: true,
        lora: None,
        ..o
    };
    let (c, plain) = expand_swin(swin_of(loaded.network), &config, &o).unwrap();
    assert!(c.growth.is_none());
    let got = to_vec(plain.forward(x.clone()));
    assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
    let tmp = tempdir("noshare");
    save_model(&tmp, &c, &plain).unwrap();
    let again = load_model(&tmp, &Device::flex()).unwrap();
    assert_eq!(again.network.depth(), 9);
    assert_eq!(max_diff(&to_vec(again.network.forward(x)), &got), 0.0);
}

/// Shared blocks are stored once: the module holds as many parameters as the counts say, and
/// a grown stage's positions reuse one tensor (one optimizer entry).
#[test]
fn shared_blocks_are_stored_once() {
    use burn::module::Module;
    let (_, loaded) = base("three_stages_w4");
    let config = loaded.config.clone();
    let base_params = loaded.network.num_params();
    let o = opts(&[6, 6, 6], MapStrategy::Cyclic, InitMode::Paper, false);
    let (_, grown) = expand_swin(swin_of(loaded.network), &config, &o).unwrap();
    let Network::GrownSwin(g) = &grown else {
        panic!()
    };
    let c = g.param_counts();
    assert_eq!(g.num_params(), c.total());
    assert_eq!(c.total(), base_params + c.adjustments());
    assert!(c.unshared_total() > c.total() + 2 * c.shared_blocks / 2);
}

/// Bad configs and weights get one line naming the file and the problem.
#[test]
fn bad_swin_inputs_are_refused_by_name() {
    let (dir, loaded) = base("three_stages_w4");
    let tmp = tempdir("bad");
    let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg_text).unwrap();
    v["model_args"]["num_heads"] = serde_json::json!([2, 2]);
    std::fs::write(tmp.join("config.json"), v.to_string()).unwrap();
    std::fs::copy(dir.join("model.safetensors"), tmp.join("model.safetensors")).unwrap();
    let e = load_model(&tmp, &Device::flex()).err().unwrap().to_string();
    assert!(
        e.contains("different lengths") && e.contains("config.json"),
        "{e}"
    );
    // A window that contradicts the stored relative-position table.
    v["model_args"]["num_heads"] = serde_json::json!([2, 2, 4]);
    v["model_args"]["window_size"] = serde_json::json!(2);
    std::fs::write(tmp.join("config.json"), v.to_string()).unwrap();
    let e = load_model(&tmp, &Device::flex()).err().unwrap().to_string();
    assert!(e.contains("relative_position_bias_table"), "{e}");
    // Growth that does not fit the stages.
    let o = opts(&[4, 4], MapStrategy::Cyclic, InitMode::Paper, false);
    let e = expand_swin(swin_of(loaded.network), &loaded.config, &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 stages"), "{e}");
    // A fresh model from a preset with model_args, as `scalenet init` builds it.
    let args = serde_json::json!({"img_size": 28, "patch_size": 2, "in_chans": 1, "embed_dim": 8,
        "depths": [2, 2], "num_heads": [2, 4], "window_size": 7, "num_classes": 10});
    let mc = ModelConfig::from_preset("swin_tiny_patch4_window7_224", args.as_object().unwrap())
        .unwrap();
    let net = build_network(
        &mc,
        &mut scalenet::model::RandomInit::new(0),
        &Device::flex(),
    );
    assert_eq!(net.depth(), 4);
}

/// A grown grey Swin trains on Fashion-MNIST through the shared loop (drop path by position
/// over the whole network, mixup) and an interrupted run resumes to the same weights.
#[test]
fn grown_swin_trains_and_resumes_exactly() {
    use scalenet::train::{train, Hooks, Outcome, TrainConfig};
    let dir = tempdir("train");
    let args = serde_json::json!({"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 8,
        "depths": [1, 1], "num_heads": [2, 2], "window_size": 4, "num_classes": 10});
    let mc = ModelConfig::from_preset("swin_tiny_patch4_window7_224", args.as_object().unwrap())
        .unwrap();
    let net = build_network(
        &mc,
        &mut scalenet::model::RandomInit::new(1),
        &Device::flex(),
    );
    let o = opts(&[2, 2], MapStrategy::Cyclic, InitMode::Identity, false);
    let (gc, grown) = expand_swin(swin_of(net), &mc, &o).unwrap();
    let model = dir.join("grown");
    save_model(&model, &gc, &grown).unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 32,
        lr: 2e-3,
        train_subset: Some(256),
        test_subset: Some(64),
        drop_path: 0.1,
        mixup: 0.8,
        seed: 5,
        ..TrainConfig::new(model, "fmnist-mini")
    };
    let straight = dir.join("straight");
    train(cfg.clone(), &straight, false, &Hooks::default()).unwrap();
    let resumed = dir.join("resumed");
    let stop = Hooks {
        stop_after_steps: Some(5),
        ..Hooks::default()
    };
    assert!(matches!(
        train(cfg.clone(), &resumed, false, &stop).unwrap(),
        Outcome::Interrupted { .. }
    ));
    assert!(matches!(
        train(cfg, &resumed, true, &Hooks::default()).unwrap(),
        Outcome::Finished { .. }
    ));
    let m = scalenet::train::trainer::read_metrics(&straight).unwrap();
    assert!(m.iter().all(|e| e.train_loss.is_finite()));
    let wa = std::fs::read(straight.join("model/model.safetensors")).unwrap();
    let wb = std::fs::read(resumed.join("model/model.safetensors")).unwrap();
    assert!(wa == wb, "final weights differ");
    let back = load_model(&straight.join("model"), &Device::flex()).unwrap();
    assert!(matches!(back.network, Network::GrownSwin(_)));
}

/// Checkpoints from older timm versions also hold the buffers timm now computes
/// (`relative_position_index` as int64, `attn_mask`): they are skipped, as timm skips them.
#[test]
fn stale_timm_buffers_in_a_checkpoint_are_skipped() {
    use safetensors::tensor::{Dtype, TensorView};
    let dir = fixtures().join("swin/three_stages_w4");
    let tmp = tempdir("stale");
    std::fs::copy(dir.join("config.json"), tmp.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let index: Vec<u8> = (0..16i64 * 16).flat_map(|v| v.to_le_bytes()).collect();
    let mask: Vec<u8> = (0..4 * 16 * 16).flat_map(|_| 0f32.to_le_bytes()).collect();
    let mut views: Vec<(String, TensorView)> = st.tensors();
    views.push((
        "layers.0.blocks.1.attn.relative_position_index".into(),
        TensorView::new(Dtype::I64, vec![16, 16], &index).unwrap(),
    ));
    views.push((
        "layers.0.blocks.1.attn_mask".into(),
        TensorView::new(Dtype::F32, vec![4, 16, 16], &mask).unwrap(),
    ));
    let out = safetensors::serialize(views, &None).unwrap();
    std::fs::write(tmp.join("model.safetensors"), out).unwrap();
    let want = to_vec(
        load_model(&dir, &Device::flex())
            .unwrap()
            .network
            .forward(input(&dir)),
    );
    let got = to_vec(
        load_model(&tmp, &Device::flex())
            .unwrap()
            .network
            .forward(input(&dir)),
    );
    assert_eq!(got, want);
}
