//! The grown model: against the PyTorch reference, identity init, true sharing of gradients
//! and optimizer updates, and parameter counts.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor};
use scalenet::checkpoint::{load_model, load_vit, ModelConfig, TensorFile};
use scalenet::growth::{expand, AdapterSpec, ExpandOptions, GrownVit, InitMode, MapStrategy};
use scalenet::inference::{run_batched, ImageBatch};
use scalenet::model::weights::to_vec;
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

#[test]
fn grown_logits_match_the_pytorch_reference() {
    let device = Device::flex();
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures("grown")).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let loaded = load_model(&dir, &device).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(loaded.network, Network::Grown(_)));
        let io = dir.join("io.safetensors");
        let images = ImageBatch::read(&io, &loaded.config.vit).unwrap();
        let expected = TensorFile::read(&io).unwrap().take("logits").unwrap();
        let (got, _) = run_batched(&images, 2, &device, |x| loaded.network.forward(x), |_| {});
        let err = max_abs_diff(&got, &expected.values);
        eprintln!("{}: max abs error {err:e}", dir.display());
        assert!(err <= 1e-4, "{}: max abs error {err}", dir.display());
        n += 1;
    }
    assert_eq!(n, 3);
}

fn opts(depth: usize, map: MapStrategy, init: InitMode) -> ExpandOptions {
    ExpandOptions {
        depth,
        map,
        adapter: Some(AdapterSpec::default()),
        unshared_norms: false,
        init,
        no_share: false,
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
        let images = ImageBatch::read(&dir.join("io.safetensors"), &base.config.vit).unwrap();
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

/// Named float tensors of a module on an autodiff device: the shared `blocks.j.*` of a grown
/// model or the `blocks.i.*` of a plain one, with their gradients.
fn block_grads(
    blocks: &[scalenet::model::Block],
    grads: &burn::tensor::Gradients,
) -> Vec<Vec<Vec<f32>>> {
    blocks
        .iter()
        .map(|b| {
            let msg = "every block tensor gets a gradient";
            vec![
                to_vec(b.norm1.weight.val().grad(grads).expect(msg)),
                to_vec(b.attn.qkv.weight.val().grad(grads).expect(msg)),
                to_vec(
                    b.attn
                        .proj
                        .bias
                        .as_ref()
                        .unwrap()
                        .val()
                        .grad(grads)
                        .expect(msg),
                ),
                to_vec(b.norm2.bias.val().grad(grads).expect(msg)),
                to_vec(b.mlp.fc1.weight.val().grad(grads).expect(msg)),
                to_vec(b.mlp.fc2.weight.val().grad(grads).expect(msg)),
            ]
        })
        .collect()
}

#[test]
fn shared_gradients_are_sums_and_one_step_updates_once() {
    let device = Device::flex().autodiff();
    let dir = fixtures("timm").join("rgb_token_p8"); // depth 2
    let map = vec![0, 1, 1, 0, 1];
    let (_, grown) = grow(
        &dir,
        &opts(5, MapStrategy::Explicit(map.clone()), InitMode::Paper),
        &device,
    );
    let plain: VisionTransformer = grown.unshared(&device);
    assert_eq!(plain.blocks.len(), 5);

    let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<2>::random([2, 5], Distribution::Normal(0.0, 1.0), &device);
    let loss_g = (grown.forward(x.clone()) * w.clone()).sum();
    let loss_p = (plain.forward(x) * w).sum();
    assert!(
        (loss_g.clone().into_scalar::<f32>() - loss_p.clone().into_scalar::<f32>()).abs() < 1e-4
    );
    let grads_g = loss_g.backward();
    let grads_p = loss_p.backward();
    let shared = block_grads(&grown.blocks, &grads_g);
    let copies = block_grads(&plain.blocks, &grads_p);
    for (j, shared_j) in shared.iter().enumerate() {
        for (t, g) in shared_j.iter().enumerate() {
            let mut sum = vec![0.0f32; g.len()];
            for (i, _) in map.iter().enumerate().filter(|(_, &m)| m == j) {
                for (s, c) in sum.iter_mut().zip(&copies[i][t]) {
                    *s += c;
                }
            }
            let scale = sum.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            let err = max_abs_diff(g, &sum);
            assert!(
                err <= 1e-4 * scale.max(1.0),
                "block {j} tensor {t}: {err} (scale {scale})"
            );
            assert!(scale > 1e-6, "gradient vanished");
        }
    }

    // Every parameter gets a gradient, and the optimizer holds each shared tensor once.
    let params = GradientsParams::from_grads(grads_g, &grown);
    assert_eq!(params.len(), grown.num_params_tensors());
    let before = to_vec(grown.blocks[1].attn.qkv.weight.val());
    let g_sum = shared[1][1].clone();
    let lr = 0.5;
    let mut optim = SgdConfig::new().init();
    let stepped = optim.step(lr, grown, params);
    let after = to_vec(stepped.blocks[1].attn.qkv.weight.val());
    // Our weight is [d_in, d_out]; gradients have the same layout.
    let expected: Vec<f32> = before
        .iter()
        .zip(&g_sum)
        .map(|(w, g)| w - lr as f32 * g)
        .collect();
    assert!(
        max_abs_diff(&after, &expected) < 1e-6,
        "shared tensor must move once by the summed gradient"
    );
    // Inference view shares the same values.
    let _ = stepped.valid();
}

trait CountTensors {
    fn num_params_tensors(&self) -> usize;
}

impl<M: Module> CountTensors for M {
    fn num_params_tensors(&self) -> usize {
        struct Count(usize);
        impl burn::module::ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<Tensor<D>>) {
                self.0 += 1;
            }
        }
        let mut c = Count(0);
        self.visit(&mut c);
        c.0
    }
}

#[test]
fn deit_tiny_12_to_24_costs_base_plus_adapters() {
    let device = Device::flex();
    let cfg = ModelConfig::from_preset("deit_tiny_patch16_224", &Default::default()).unwrap();
    let base = VisionTransformer::new(&cfg.vit, &mut RandomInit::new(0), &device);
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
