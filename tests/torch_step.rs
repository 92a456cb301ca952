//! One AdamW step of grown models against PyTorch's (tests/fixtures/gen_step_fixtures.py, on
//! the python/scalenet_torch package): the gradient of a block shared by several positions is
//! the sum over them in both, and the step moves every stored tensor as PyTorch's does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use scalenet::checkpoint::hf_dir::load_llama;
use scalenet::checkpoint::model_dir::load_model;
use scalenet::train::optim::{AdamW, AdamWConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The case's tensors (f32, i64 as f32 would lose ids: those come back as i64) and metadata.
struct Case {
    f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ids: Option<(Vec<usize>, Vec<i64>)>,
    model: PathBuf,
    lr: f64,
    eps: f64,
}

fn read_case(name: &str) -> Case {
    let bytes = std::fs::read(fixtures().join("step").join(format!("{name}.safetensors"))).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut f32s = HashMap::new();
    let mut ids = None;
    for (k, t) in st.tensors() {
        let shape = t.shape().to_vec();
        match t.dtype() {
            safetensors::Dtype::F32 => {
                let v = t
                    .data()
                    .chunks(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()));
                f32s.insert(k, (shape, v.collect()));
            }
            _ => {
                let v = t
                    .data()
                    .chunks(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()));
                ids = Some((shape, v.collect()));
            }
        }
    }
    Case {
        f32s,
        ids,
        model: fixtures().join(&meta["model"]),
        lr: meta["lr"].parse().unwrap(),
        eps: meta["eps"].parse().unwrap(),
    }
}

fn tensor<const D: usize>(c: &Case, key: &str, device: &Device) -> Tensor<D> {
    let (shape, v) = &c.f32s[key];
    Tensor::from_data(TensorData::new(v.clone(), shape.clone()), device)
}

fn optimizer(c: &Case) -> AdamW {
    AdamW::new(AdamWConfig {
        eps: c.eps,
        weight_decay: 0.0,
        ..AdamWConfig::default()
    })
}

/// Every stored tensor after the step against PyTorch's (relative to max(1, |w|)).
fn compare(name: &str, c: &Case, after: Vec<scalenet::model::weights::NamedTensor>) {
    let mut checked = 0;
    for t in after {
        let Some((_, want)) = c.f32s.get(&format!("after.{}", t.name)) else {
            continue;
        };
        let err = t
            .values
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(
            err < 1e-4,
            "{name}: {} is {err} off PyTorch's after the step",
            t.name
        );
        checked += 1;
    }
    let stored = c.f32s.keys().filter(|k| k.starts_with("after.")).count();
    assert_eq!(checked, stored, "{name}: every stored tensor compared");
}

#[test]
fn one_adamw_step_of_grown_image_models_is_pytorchs() {
    let device = Device::flex().autodiff();
    for name in ["vit_irregular_full", "vit_lora", "swin_interleave_full"] {
        let c = read_case(name);
        let net = load_model(&c.model, &device).unwrap().network;
        let x = tensor::<4>(&c, "input", &device);
        let w = tensor::<2>(&c, "w", &device);
        let grads = GradientsParams::from_grads((net.forward(x) * w).sum().backward(), &net);
        let stepped = optimizer(&c).step(c.lr, net, grads, 1.0);
        compare(name, &c, stepped.export().tensors);
    }
}

#[test]
fn one_adamw_step_of_grown_llamas_is_pytorchs() {
    let device = Device::flex().autodiff();
    for name in ["llama_gqa_tied_full", "llama_lora"] {
        let c = read_case(name);
        let net = load_llama(&c.model, &device).unwrap().model;
        let (shape, ids) = c.ids.clone().unwrap();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &device);
        let w = tensor::<3>(&c, "w", &device);
        let grads =
            GradientsParams::from_grads((net.forward(ids, None) * w).sum().backward(), &net);
        let stepped = optimizer(&c).step(c.lr, net, grads, 1.0);
        compare(name, &c, stepped.export().tensors);
    }
}
