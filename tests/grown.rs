//! The grown model: against the PyTorch reference, identity init, true sharing of gradients
//! and optimizer updates, and parameter counts.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use scalenet::checkpoint::{load_model, load_vit, ModelConfig, TensorFile};
use scalenet::growth::{expand, AdapterSpec, ExpandOptions, GrownVit, InitMode, MapStrategy};
use scalenet::inference::{run_batched, ImageBatch};
use scalenet::model::{RandomInit, VisionTransformer};
use scalenet::network::Network;

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn opts(depth: usize, map: MapStrategy, init: InitMode) -> ExpandOptions {
    ExpandOptions {
        depth,
        depths: Vec::new(),
        map,
        adapter: Some(AdapterSpec::default()),
        unshared_norms: false,
        init,
        no_share: false,
        lora: None,
        seed: 7,
    }
}

fn grow(base_dir: &Path, o: &ExpandOptions, device: &Device) -> (ModelConfig, GrownVit) {
    let base = load_vit(base_dir, device).unwrap();
    match expand(base.model, &base.config, o).unwrap() {
        (c, Network::Grown(g)) => (c, g),
        _ => unreachable!("expand without --no-share grows"),
    }
}

#[test]
fn identity_init_reproduces_the_base() {
    let device = Device::flex();
    for fixture in ["rgb_token_p8", "layerscale_rect", "distilled"] {
        let dir = fixtures("timm").join(fixture);
        let base = load_vit(&dir, &device).unwrap();
        let images = ImageBatch::read(&dir.join("io.safetensors"), &base.config.arch).unwrap();
        let (want, _) = run_batched(&images, 8, &device, |x| base.model.forward(x), |_| {});
        for (map, depth) in [
            (MapStrategy::Cyclic, 5),
            (MapStrategy::Interleave, 5),
            (MapStrategy::Cyclic, 4),
        ] {
            let mut o = opts(depth, map.clone(), InitMode::Identity);
            o.unshared_norms = depth == 4;
            let (_, g) = grow(&dir, &o, &device);
            let (got, _) = run_batched(&images, 8, &device, |x| g.forward(x), |_| {});
            let err = max_abs_diff(&got, &want);
            eprintln!("identity {fixture} {map:?} depth {depth}: {err:e}");
            assert!(err <= 1e-5, "{fixture} {map:?}: {err}");
        }
        // The paper's init is not the identity once positions repeat.
        let (_, g) = grow(
            &dir,
            &opts(4, MapStrategy::Cyclic, InitMode::Paper),
            &device,
        );
        let (got, _) = run_batched(&images, 8, &device, |x| g.forward(x), |_| {});
        assert!(max_abs_diff(&got, &want) > 1e-3);
    }
}

#[test]
fn shared_gradients_are_sums_and_one_step_updates_once() {
    let checks = scalenet::selfcheck::sharing(&Device::flex()).unwrap();
    assert!(checks.len() >= 14, "{checks:?}");
    for c in &checks {
        assert!(c.passed(), "{}: {} > {}", c.name, c.max_err, c.tolerance);
    }
}

#[test]
fn deit_tiny_12_to_24_costs_base_plus_adapters() {
    let device = Device::flex();
    let cfg = ModelConfig::from_preset("deit_tiny_patch16_224", &Default::default()).unwrap();
    let base = VisionTransformer::new(cfg.arch.vit().unwrap(), &mut RandomInit::new(0), &device);
    let base_total = base.param_counts().total();
    assert_eq!(base_total, 5_717_416);
    assert_eq!(base.num_params(), base_total);
    let (_, net) = expand(base, &cfg, &opts(24, MapStrategy::Cyclic, InitMode::Paper)).unwrap();
    let Network::Grown(g) = net else {
        unreachable!()
    };
    // Closed form: L' positions × 2 adapters × (d·r + r + r·d + d), d = 192, r = 32.
    let (d, r, positions) = (192, 32, 24);
    let closed = base_total + positions * 2 * (2 * d * r + r + d);
    assert_eq!(closed, 6_317_992);
    assert_eq!(g.param_counts().total(), closed);
    // What burn holds in memory: every parameter tensor visited once, so base + adjustments.
    assert_eq!(g.num_params(), closed);
    assert_eq!(g.param_counts().unshared_total(), 11_055_784);
}

#[test]
fn grown_save_round_trip_is_lossless() {
    let device = Device::flex();
    for name in [
        "irregular_full",
        "gelu_mlp_layerscale_base",
        "shared_only_distilled",
    ] {
        let dir = fixtures("grown").join(name);
        let loaded = load_model(&dir, &device).unwrap();
        let out =
            std::env::temp_dir().join(format!("scalenet-grown-rt-{}-{name}", std::process::id()));
        scalenet::checkpoint::save_model(&out, &loaded.config, &loaded.network).unwrap();
        let again = load_model(&out, &device).unwrap();
        assert_eq!(again.config.growth, loaded.config.growth);
        let a = TensorFile::read(&dir.join("model.safetensors")).unwrap();
        let b = TensorFile::read(&out.join("model.safetensors")).unwrap();
        assert_eq!(a.tensors.len(), b.tensors.len());
        for (k, t) in &a.tensors {
            assert_eq!(t.values, b.tensors[k].values, "{name}: {k}");
        }
    }
}

#[test]
fn class_token_shortcut_matches_the_full_forward() {
    // `forward` runs the last block for the tokens the head reads; the full path runs it for
    // every token and pools afterwards. Both must give the same logits.
    let device = Device::flex();
    let timm = ["rgb_token_p8", "layerscale_rect", "distilled"].map(|f| fixtures("timm").join(f));
    let grown = [
        "irregular_full",
        "gelu_mlp_layerscale_base",
        "shared_only_distilled",
    ]
    .map(|f| fixtures("grown").join(f));
    for dir in timm.iter().chain(&grown) {
        let loaded = load_model(dir, &device).unwrap();
        let images = ImageBatch::read(&dir.join("io.safetensors"), &loaded.config.arch).unwrap();
        let full = |x| match &loaded.network {
            Network::Plain(m) => m.forward_head(m.forward_features(x), false),
            Network::Grown(g) => g.head.forward(g.forward_features(x), false),
            _ => unreachable!("a ViT fixture"),
        };
        let (want, _) = run_batched(&images, 8, &device, full, |_| {});
        let (got, _) = run_batched(&images, 8, &device, |x| loaded.network.forward(x), |_| {});
        let err = max_abs_diff(&got, &want);
        assert!(err <= 1e-5, "{}: {err}", dir.display());
    }
}

#[test]
fn class_token_shortcut_trains_as_the_full_forward() {
    // In training the last block's other token rows cannot reach the loss: leaving them out
    // must leave every gradient as it was, through stochastic depth too.
    use burn::tensor::{Distribution, Tensor};
    use scalenet::model::drop_path::DropPath;
    use scalenet::model::weights::to_vec;
    let device = Device::flex().autodiff();
    for dir in [
        fixtures("timm").join("rgb_token_p8"),
        fixtures("timm").join("distilled"),
        fixtures("grown").join("irregular_full"),
    ] {
        let net = load_model(&dir, &device).unwrap().network;
        let arch = net.arch();
        let ([h, w], c) = (arch.img_size(), arch.in_chans());
        let x = Tensor::<4>::random([3, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let k = net.forward(x.clone()).dims()[1];
        let wts = Tensor::<2>::random([3, k], Distribution::Normal(0.0, 1.0), &device);
        let depth = match &net {
            Network::Plain(m) => m.blocks.len(),
            Network::Grown(g) => g.positions.len(),
            _ => unreachable!("a ViT fixture"),
        };
        let grads = |shortcut: bool| {
            let x = x.clone().require_grad();
            let mut dp = DropPath::new(0.3, depth, 5);
            let mut dp = Some(&mut dp);
            let logits = match (&net, shortcut) {
                (_, true) => net.forward_train(x.clone(), &mut dp),
                (Network::Plain(m), false) => m
                    .head
                    .forward(m.forward_features_train(x.clone(), &mut dp), false),
                (Network::Grown(g), false) => g
                    .head
                    .forward(g.forward_features_train(x.clone(), &mut dp), false),
                _ => unreachable!(),
            };
            let g = (logits * wts.clone()).sum().backward();
            let mut out = vec![to_vec(x.grad(&g).unwrap())];
            match &net {
                Network::Plain(m) => {
                    for b in [&m.blocks[0], m.blocks.last().unwrap()] {
                        out.push(to_vec(b.attn.qkv.weight.val().grad(&g).unwrap()));
                        out.push(to_vec(b.mlp.fc1.weight.val().grad(&g).unwrap()));
                    }
                }
                Network::Grown(gr) => {
                    out.push(to_vec(gr.blocks[0].attn.qkv.weight.val().grad(&g).unwrap()));
                    out.push(to_vec(gr.blocks[0].mlp.fc2.weight.val().grad(&g).unwrap()));
                    let last = gr.positions.last().unwrap();
                    let ad = last.mlp_adapter.as_ref().unwrap();
                    out.push(to_vec(ad.up.weight.val().grad(&g).unwrap()));
                    out.push(to_vec(ad.down.weight.val().grad(&g).unwrap()));
                }
                _ => unreachable!(),
            }
            out
        };
        let (full, short) = (grads(false), grads(true));
        for (i, (a, b)) in full.iter().zip(&short).enumerate() {
            let scale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let err = max_abs_diff(a, b) / scale;
            assert!(err < 1e-5, "{} gradient {i}: {err}", dir.display());
        }
    }
}
