//! Training on real data (the built-in Fashion-MNIST subset): it learns, shared weights move
//! once per step by the summed gradient, and an interrupted run resumes exactly.

use std::path::{Path, PathBuf};

use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use scalenet::checkpoint::{load_vit, save_vit, ModelConfig};
use scalenet::growth::{expand, AdapterSpec, ExpandOptions, InitMode, MapStrategy};
use scalenet::model::weights::to_vec;
use scalenet::model::{RandomInit, VisionTransformer};
use scalenet::network::Network;
use scalenet::ops::Precision;
use scalenet::train::optim::{named_params, AdamW, AdamWConfig};
use scalenet::train::trainer::read_metrics;
use scalenet::train::{train, Hooks, Outcome, TrainConfig};
use serde_json::json;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalenet-train-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small grey 28px ViT for Fashion-MNIST, written as a model directory.
fn tiny_model(dir: &Path, depth: usize, dim: usize, patch: usize) -> PathBuf {
    let args = json!({"img_size": 28, "patch_size": patch, "in_chans": 1, "depth": depth,
                      "embed_dim": dim, "num_heads": 2, "mlp_ratio": 2.0, "num_classes": 10});
    let cfg = ModelConfig::from_preset("vit_tiny_patch16_224", args.as_object().unwrap()).unwrap();
    let model = VisionTransformer::new(
        cfg.arch.vit().unwrap(),
        &mut RandomInit::new(1),
        &Device::flex(),
    );
    let out = dir.join("model");
    save_vit(&out, &cfg, &model).unwrap();
    out
}

fn config(model_dir: PathBuf) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 32,
        lr: 2e-3,
        warmup_epochs: 0.2,
        warmup_lr: 1e-5,
        smoothing: 0.0,
        train_subset: Some(1200),
        test_subset: Some(300),
        seed: 3,
        eval_batch_size: 128,
        ..TrainConfig::new(model_dir, "fmnist-mini")
    }
}

#[test]
fn a_tiny_run_learns() {
    let dir = tempdir("learn");
    let mut cfg = config(tiny_model(&dir, 2, 32, 4));
    cfg.epochs = 6;
    cfg.lr = 3e-3;
    cfg.train_subset = Some(2000);
    let out = dir.join("run");
    let outcome = train(cfg, &out, false, &Hooks::default()).unwrap();
    assert!(matches!(outcome, Outcome::Finished { .. }));
    let m = read_metrics(&out).unwrap();
    assert_eq!(m.len(), 6);
    let last = m.last().unwrap();
    // Chance is ln(10) = 2.30 loss and 10% accuracy.
    assert!(
        last.train_loss < 1.8,
        "loss {} (test top-1 {:?})",
        last.train_loss,
        last.test_top1
    );
    assert!(
        last.test_top1.unwrap() > 0.3,
        "test top-1 {:?}",
        last.test_top1
    );
    assert!(m[0].train_loss > last.train_loss);
    for f in [
        "run.json",
        "curves.png",
        "model/config.json",
        "model/model.safetensors",
        "checkpoint/state.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The final model loads as a plain timm directory.
    load_vit(&out.join("model"), &Device::flex()).unwrap();
}

#[test]
fn interrupted_run_resumes_exactly() {
    let dir = tempdir("resume");
    let model = tiny_model(&dir, 2, 16, 7);
    let base = load_vit(&model, &Device::flex()).unwrap();
    // A grown model, with every source of randomness on: drop path, mixup/cutmix, erasing,
    // EMA, accumulation and clipping.
    let (gcfg, net) = expand(
        base.model,
        &base.config,
        &ExpandOptions {
            depth: 3,
            depths: Vec::new(),
            map: MapStrategy::Cyclic,
            adapter: Some(AdapterSpec {
                rank: 4,
                ..AdapterSpec::default()
            }),
            unshared_norms: true,
            init: InitMode::Identity,
            no_share: false,
            lora: None,
            seed: 0,
        },
    )
    .unwrap();
    let grown = dir.join("grown");
    scalenet::checkpoint::save_model(&grown, &gcfg, &net).unwrap();
    let mut cfg = config(grown);
    cfg.train_subset = Some(256);
    cfg.test_subset = Some(64);
    cfg.drop_path = 0.1;
    cfg.mixup = 0.8;
    cfg.cutmix = 1.0;
    cfg.reprob = 0.25;
    cfg.rand_augment = Some((2, 9.0));
    cfg.smoothing = 0.1;
    cfg.ema = Some(0.9);
    cfg.accum = 2;
    cfg.clip_grad = Some(1.0);

    let straight = dir.join("straight");
    train(cfg.clone(), &straight, false, &Hooks::default()).unwrap();
    let resumed = dir.join("resumed");
    // 7 batches per epoch with accum 2 → 4 steps per epoch; stop mid-epoch 1, then mid-epoch 2.
    let stop = |n| Hooks {
        stop_after_steps: Some(n),
        ..Hooks::default()
    };
    assert!(matches!(
        train(cfg.clone(), &resumed, false, &stop(2)).unwrap(),
        Outcome::Interrupted { .. }
    ));
    assert!(matches!(
        train(cfg.clone(), &resumed, true, &stop(3)).unwrap(),
        Outcome::Interrupted { .. }
    ));
    assert!(matches!(
        train(cfg.clone(), &resumed, true, &Hooks::default()).unwrap(),
        Outcome::Finished { .. }
    ));

    let (a, b) = (
        read_metrics(&straight).unwrap(),
        read_metrics(&resumed).unwrap(),
    );
    assert_eq!(a.len(), 2);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.train_loss, y.train_loss);
        assert_eq!(
            (x.val_top1, x.val_loss, x.test_top1, x.test_top5),
            (y.val_top1, y.val_loss, y.test_top1, y.test_top5)
        );
        assert_eq!((x.lr, x.train_images), (y.lr, y.train_images));
    }
    let wa = std::fs::read(straight.join("model/model.safetensors")).unwrap();
    let wb = std::fs::read(resumed.join("model/model.safetensors")).unwrap();
    assert!(wa == wb, "final weights differ");
}

#[test]
fn shared_weights_move_once_by_the_summed_gradient() {
    let device = Device::flex().autodiff();
    let dir = tempdir("shared");
    let base = load_vit(&tiny_model(&dir, 2, 16, 7), &device).unwrap();
    let (_, net) = expand(
        base.model,
        &base.config,
        &ExpandOptions {
            depth: 4,
            depths: Vec::new(),
            map: MapStrategy::Cyclic,
            adapter: Some(AdapterSpec {
                rank: 4,
                ..AdapterSpec::default()
            }),
            unshared_norms: false,
            init: InitMode::Paper,
            no_share: false,
            lora: None,
            seed: 0,
        },
    )
    .unwrap();
    let Network::Grown(grown) = net else {
        unreachable!()
    };
    let plain = grown.unshared(&device);
    let x = Tensor::<4>::random([3, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<2>::random([3, 10], Distribution::Normal(0.0, 1.0), &device);
    let g_plain = (plain.forward(x.clone()) * w.clone()).sum().backward();
    let sum: Vec<f32> = {
        let a = to_vec(plain.blocks[0].mlp.fc1.weight.val().grad(&g_plain).unwrap());
        let b = to_vec(plain.blocks[2].mlp.fc1.weight.val().grad(&g_plain).unwrap());
        a.iter().zip(&b).map(|(x, y)| x + y).collect()
    };
    let grads = GradientsParams::from_grads((grown.forward(x) * w).sum().backward(), &grown);
    let before = to_vec(grown.blocks[0].mlp.fc1.weight.val());
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let lr = 1e-2;
    let stepped = opt.step(lr, grown, grads, 1.0);
    let after = to_vec(stepped.blocks[0].mlp.fc1.weight.val());
    // AdamW's first step: w - lr * g / (|g| + eps), with g the gradient summed over positions.
    for ((b, a), g) in before.iter().zip(&after).zip(&sum) {
        let want = b - (lr as f32) * g / (g.abs() + 1e-8);
        assert!((a - want).abs() < 1e-5, "{a} vs {want} (g = {g})");
    }
    // One optimizer state per parameter tensor: shared blocks are not duplicated.
    assert_eq!(opt.export().len(), 2 * named_params(&stepped).len());
}

/// Gradients that are not finite (an overflow in a bf16 backward that the loss does not show)
/// stop the run before the optimizer step, clipped or not, with one message, and the last good
/// checkpoint stays as it was.
#[test]
fn non_finite_gradients_stop_the_run_and_keep_the_checkpoint() {
    let dir = tempdir("nan-grad");
    let model = tiny_model(&dir, 1, 16, 7);
    for (tag, precision, clip) in [
        ("f32-clipped", Precision::F32, Some(1.0)),
        ("bf16", Precision::Bf16, None),
    ] {
        let mut cfg = config(model.clone());
        cfg.train_subset = Some(64);
        cfg.test_subset = Some(16);
        cfg.epochs = 3;
        cfg.clip_grad = clip;
        cfg.precision = precision;
        cfg.batch_size = 16;
        cfg.val_split = 0.0;
        let out = dir.join(tag);
        // 64 images, batch 16 → 4 steps an epoch: poison the first step of epoch 2.
        let hooks = Hooks {
            poison_gradients_at_step: Some(4),
            ..Hooks::default()
        };
        let err = train(cfg, &out, false, &hooks).unwrap_err().to_string();
        assert!(err.contains("gradient norm became NaN"), "{tag}: {err}");
        assert!(!err.contains('\n'), "{err}");
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            state["epoch"], 1,
            "{tag}: the checkpoint after epoch 1 is kept"
        );
    }
}

#[test]
fn the_data_seed_carves_the_validation_split() {
    // With a learning rate of 0 the model never moves, so the validation loss depends on
    // which images were carved off and nothing else.
    let dir = tempdir("dataseed");
    let model = tiny_model(&dir, 1, 16, 7);
    let val_loss = |tag: &str, seed: u64, data_seed: Option<u64>| {
        let cfg = TrainConfig {
            epochs: 1,
            lr: 0.0,
            min_lr: 0.0,
            warmup_lr: 0.0,
            weight_decay: 0.0,
            train_subset: Some(400),
            val_split: 0.25,
            seed,
            data_seed,
            ..config(model.clone())
        };
        let out = dir.join(tag);
        train(cfg, &out, false, &Hooks::default()).unwrap();
        read_metrics(&out).unwrap()[0].val_loss.unwrap()
    };
    let base = val_loss("seed0", 0, None);
    assert_eq!(val_loss("seed5-data0", 5, Some(0)), base);
    assert_ne!(val_loss("seed5", 5, None), base);
}
