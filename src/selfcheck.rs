//! Does a device compute what the reference computes? `scalenet selfcheck --device cuda:0` runs,
//! on that device, the golden fixtures (timm's and the PyTorch grown-model reference's logits),
//! every op of `src/ops` forward and backward against the CPU, and the sharing check (a shared
//! block's gradient is the sum over its positions, and one optimizer step moves it once).
//!
//! The test suite runs the same checks on the CPU, so a GPU build is held to exactly what CI
//! holds the CPU build to, without a Rust toolchain on the GPU machine.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use serde::Serialize;

use crate::checkpoint::model_dir::{load_model, ModelConfig};

use crate::checkpoint::safetensors_io::TensorFile;
use crate::error::Result;
use crate::growth::expand::expand;
use crate::growth::options::{ExpandOptions, InitMode};
use crate::growth::plan::{AdapterSpec, MapStrategy};
use crate::growth::vit::GrownVit;
use crate::inference::{run_batched, ImageBatch};
use crate::model::vit::block::Block;
use crate::model::vit::VisionTransformer;
use crate::model::weights::{to_vec, Init};
use crate::network::Network;
use crate::ops::precision::{autocast, Precision};

/// One comparison: its largest error against the reference, and the most it may be.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub group: &'static str,
    pub name: String,
    pub max_err: f32,
    pub tolerance: f32,
}

impl Check {
    fn new(group: &'static str, name: impl Into<String>, max_err: f32, tolerance: f32) -> Self {
        Self {
            group,
            name: name.into(),
            max_err,
            tolerance,
        }
    }

    /// NaN never passes.
    pub fn passed(&self) -> bool {
        self.max_err <= self.tolerance
    }
}

/// Largest |a - b|; infinite when the lengths differ.
fn max_abs_err(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) })
}

/// Largest |a - b| / max(1, |b|): absolute near zero, relative for large values.
fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) })
}

/// Deterministic values in [-scale, scale), the same on every device.
fn values(n: usize, salt: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) % 10_007;
            (h as f32 / 10_007.0 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The model directories with golden logits under `root/timm`, `root/grown`, `root/llama`
/// and `root/grown_llama` (tests/fixtures), as `("timm/name", dir)`.
pub fn fixture_dirs(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for kind in [
        "timm",
        "grown",
        "llama",
        "grown_llama",
        "swin",
        "grown_swin",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(kind)) else {
            continue;
        };
        let mut dirs: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("io.safetensors").is_file())
            .collect();
        dirs.sort();
        out.extend(dirs.into_iter().map(|d| {
            let name = format!("{kind}/{}", d.file_name().unwrap_or_default().display());
            (name, d)
        }));
    }
    out
}

/// One fixture: our logits on `device` against the reference's, max abs error ≤ 1e-4.
pub fn fixture(name: &str, dir: &Path, device: &Device) -> Result<Check> {
    if crate::checkpoint::hf_dir::is_language_model(dir) {
        return language_model_fixture(name, dir, device);
    }
    let loaded = load_model(dir, device)?;
    let io = dir.join("io.safetensors");
    let images = ImageBatch::read(&io, &loaded.config.arch)?;
    let expected = TensorFile::read(&io)?.take("logits")?;
    // Batch 2 over 3 images also runs a ragged last batch.
    let (got, _) = run_batched(&images, 2, device, |x| loaded.network.forward(x), |_| {});
    Ok(Check::new(
        "fixtures",
        name,
        max_abs_err(&got, &expected.values),
        1e-4,
    ))
}

/// Every fixture under `root` (see [`fixture_dirs`]).
pub fn fixtures(root: &Path, device: &Device) -> Result<Vec<Check>> {
    fixture_dirs(root)
        .iter()
        .map(|(name, dir)| fixture(name, dir, device))
        .collect()
}

/// A language-model fixture: `input_ids` → logits, against transformers' or the reference's.
fn language_model_fixture(name: &str, dir: &Path, device: &Device) -> Result<Check> {
    let model = crate::checkpoint::hf_dir::load_llama(dir, device)?.model;
    let io = dir.join("io.safetensors");
    let (shape, ids) = crate::checkpoint::safetensors_io::read_int_tensor(&io, "input_ids")?;
    let expected = crate::checkpoint::safetensors_io::read_float_tensor(&io, "logits")?;
    let x = Tensor::<2, burn::tensor::Int>::from_data(
        TensorData::new(ids, [shape[0], shape[1]]),
        device,
    );
    let got = to_vec(model.forward(x, None));
    Ok(Check::new(
        "fixtures",
        name,
        max_abs_err(&got, &expected.values),
        1e-4,
    ))
}

/// Forward output and input gradients of `f` (of `sum(w · f(inputs))`) on an autodiff device.
fn run_op(
    f: &dyn Fn(Vec<Tensor<2>>) -> Tensor<2>,
    inputs: &[(Vec<f32>, [usize; 2])],
    device: &Device,
) -> Vec<Vec<f32>> {
    let ad = device.clone().autodiff();
    let xs: Vec<Tensor<2>> = inputs
        .iter()
        .map(|(v, shape)| {
            Tensor::<2>::from_data(TensorData::new(v.clone(), *shape), &ad).require_grad()
        })
        .collect();
    let y = f(xs.clone());
    let dims = y.dims();
    let w = Tensor::<2>::from_data(
        TensorData::new(values(dims[0] * dims[1], 99, 1.0), dims),
        &ad,
    );
    let grads = (y.clone() * w).sum().backward();
    let mut out = vec![to_vec(y)];
    out.extend(
        xs.iter()
            .map(|x| x.grad(&grads).map(to_vec).unwrap_or_else(|| vec![f32::NAN])),
    );
    out
}

/// Each op that the models use, forward and backward, on `device` against the CPU (flex).
/// Only meaningful off flex; on flex it compares the kernels with themselves. Without `bf16`
/// (wgpu) the bf16 cases are not run; their names come back as the second value.
pub fn ops(device: &Device, bf16: bool) -> (Vec<Check>, Vec<String>) {
    let flex = Device::flex();
    let (m, k, n) = (70, 48, 40);
    let x = (values(m * k, 1, 2.0), [m, k]);
    let w = (values(k * n, 2, 0.3), [k, n]);
    let b = (values(n, 3, 0.5), [1, n]);
    let linear = |t: Vec<Tensor<2>>| {
        let b = t[2].clone().reshape([n]);
        crate::ops::linear(t[0].clone(), t[1].clone(), Some(b))
    };
    let (bt, tokens, d, heads) = (2, 17, 48, 3);
    let qkv = (values(bt * tokens * 3 * d, 4, 1.5), [bt * tokens, 3 * d]);
    let attention = |t: Vec<Tensor<2>>| {
        let qkv = t[0].clone().reshape([bt, tokens, 3 * d]);
        crate::model::vit::attention::attend(qkv, heads).reshape([bt * tokens, d])
    };
    // Swin's window attention: a bias per (window, head), windows of 9 tokens.
    let (bw, wn, wd, wh, groups) = (6, 9, 12, 3, 3);
    let wqkv = (values(bw * wn * 3 * wd, 6, 1.5), [bw * wn, 3 * wd]);
    let wbias = (
        values(groups * wh * wn * wn, 7, 2.0),
        [groups * wh * wn, wn],
    );
    let window = |t: Vec<Tensor<2>>| {
        let qkv = t[0].clone().reshape([bw, wn, 3 * wd]);
        let bias = t[1].clone().reshape([groups, wh, wn, wn]);
        crate::model::swin::block::window_attend(qkv, bias, wh).reshape([bw * wn, wd])
    };
    // The detection head's shape: 3×3, padding 1, on a map of a few pixels.
    let (cn, cc, chw, cco) = (2, 16, 5, 8);
    let cx = (values(cn * cc * chw * chw, 8, 1.5), [cn * cc, chw * chw]);
    let cw = (values(cco * cc * 9, 9, 0.3), [cco, cc * 9]);
    let cb = (values(cco, 10, 0.5), [1, cco]);
    let conv = |t: Vec<Tensor<2>>| {
        let x = t[0].clone().reshape([cn, cc, chw, chw]);
        let w = t[1].clone().reshape([cco, cc, 3, 3]);
        let b = t[2].clone().reshape([cco]);
        crate::ops::conv2d(x, w, Some(b), 1, 1).reshape([cn * cco, chw * chw])
    };
    type Op<'a> = (
        &'static str,
        Precision,
        Box<dyn Fn(Vec<Tensor<2>>) -> Tensor<2> + 'a>,
        Vec<(Vec<f32>, [usize; 2])>,
        f32,
    );
    let cases: Vec<Op> = vec![
        (
            "gelu",
            Precision::F32,
            Box::new(|t: Vec<Tensor<2>>| crate::ops::gelu(t[0].clone())),
            vec![(values(96 * 64, 5, 6.0), [96, 64])],
            1e-5,
        ),
        (
            "silu",
            Precision::F32,
            Box::new(|t: Vec<Tensor<2>>| crate::ops::silu(t[0].clone())),
            vec![(values(96 * 64, 5, 6.0), [96, 64])],
            1e-5,
        ),
        (
            "matmul",
            Precision::F32,
            Box::new(|t: Vec<Tensor<2>>| crate::ops::matmul(t[0].clone(), t[1].clone())),
            vec![x.clone(), w.clone()],
            1e-4,
        ),
        (
            "linear",
            Precision::F32,
            Box::new(linear),
            vec![x.clone(), w.clone(), b.clone()],
            1e-4,
        ),
        // bf16 products round their inputs identically everywhere, but a backend may also
        // round its output to bf16 (8 bits of mantissa) where flex keeps f32.
        (
            "linear",
            Precision::Bf16,
            Box::new(linear),
            vec![x.clone(), w.clone(), b.clone()],
            2e-2,
        ),
        (
            "attention",
            Precision::F32,
            Box::new(attention),
            vec![qkv.clone()],
            1e-4,
        ),
        (
            "attention",
            Precision::Bf16,
            Box::new(attention),
            vec![qkv],
            3e-2,
        ),
        (
            "conv2d",
            Precision::F32,
            Box::new(conv),
            vec![cx, cw, cb],
            1e-4,
        ),
        (
            "window attention",
            Precision::F32,
            Box::new(window),
            vec![wqkv, wbias],
            1e-4,
        ),
    ];
    let mut checks = Vec::new();
    let mut skipped = Vec::new();
    for (name, precision, f, inputs, tol) in cases {
        if precision == Precision::Bf16 && !bf16 {
            skipped.push(format!("{name} {precision}"));
            continue;
        }
        let _guard = autocast(precision);
        let want = run_op(f.as_ref(), &inputs, &flex);
        let got = run_op(f.as_ref(), &inputs, device);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let what = if i == 0 {
                "forward".to_string()
            } else {
                format!("grad of input {i}")
            };
            checks.push(Check::new(
                "ops",
                format!("{name} {precision} {what}"),
                max_rel_err(g, w),
                tol,
            ));
        }
    }
    (checks, skipped)
}

/// A tiny ViT (depth 2, width 32) with deterministic non-zero weights everywhere, biases and
/// norms included, so that every gradient is non-trivial.
fn tiny_base(device: &Device) -> Result<(ModelConfig, VisionTransformer)> {
    let args = serde_json::json!({
        "img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
        "mlp_ratio": 2.0, "num_classes": 5
    });
    let args = args.as_object().cloned().unwrap_or_default();
    let cfg = ModelConfig::from_preset("vit_tiny_patch16_224", &args)?;
    let mut salt = 10;
    let mut src = |_: &str, shape: &[usize], init: Init| {
        salt += 1;
        let base = if init == Init::ONES { 1.0 } else { 0.0 };
        values(shape.iter().product(), salt, 0.2)
            .into_iter()
            .map(|v| base + v)
            .collect()
    };
    let vit = cfg.arch.vit().expect("a ViT preset");
    let model = VisionTransformer::new(vit, &mut src, device);
    Ok((cfg, model))
}

/// The gradients of the block tensors that every block has (attention and MLP weights, norms).
fn block_grads(blocks: &[Block], grads: &Gradients) -> Vec<Vec<Vec<f32>>> {
    let g = |p: &Param<Tensor<1>>| p.val().grad(grads).map(to_vec);
    let g2 = |p: &Param<Tensor<2>>| p.val().grad(grads).map(to_vec);
    blocks
        .iter()
        .map(|b| {
            [
                g(&b.norm1.weight),
                g2(&b.attn.qkv.weight),
                b.attn.proj.bias.as_ref().and_then(g),
                g(&b.norm2.bias),
                g2(&b.mlp.fc1.weight),
                g2(&b.mlp.fc2.weight),
            ]
            .into_iter()
            // A missing gradient is a failure of its own: it can never match a sum.
            .map(|t| t.unwrap_or_else(|| vec![f32::NAN]))
            .collect()
        })
        .collect()
}

fn count_param_tensors<M: Module>(m: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
            self.0 += 1;
        }
    }
    let mut c = Count(0);
    m.visit(&mut c);
    c.0
}

/// Grown model: loss and shared-block gradients on `device`, from the blocks run in a map
/// that uses block 1 three times; and what one optimizer step does with them.
struct SharingRun {
    loss_grown: f32,
    loss_unshared: f32,
    shared: Vec<Vec<Vec<f32>>>,
    copies: Vec<Vec<Vec<f32>>>,
    param_tensors: usize,
    grad_tensors: usize,
    step_before: Vec<f32>,
    step_after: Vec<f32>,
}

const SHARING_MAP: [usize; 5] = [0, 1, 1, 0, 1];
const SGD_LR: f64 = 0.5;

fn sharing_run(device: &Device) -> Result<SharingRun> {
    let ad = device.clone().autodiff();
    let (cfg, base) = tiny_base(&ad)?;
    let opts = ExpandOptions {
        depth: SHARING_MAP.len(),
        depths: Vec::new(),
        map: MapStrategy::Explicit(SHARING_MAP.to_vec()),
        adapter: Some(AdapterSpec::default()),
        unshared_norms: false,
        init: InitMode::Paper,
        no_share: false,
        lora: None,
        seed: 7,
    };
    let grown: GrownVit = match expand(base, &cfg, &opts)? {
        (_, Network::Grown(g)) => g,
        _ => unreachable!("expand without no_share grows"),
    };
    let plain = grown.unshared(&ad);
    let x = Tensor::<4>::from_data(
        TensorData::new(values(2 * 3 * 16 * 16, 20, 1.0), [2, 3, 16, 16]),
        &ad,
    );
    let w = Tensor::<2>::from_data(TensorData::new(values(10, 21, 1.0), [2, 5]), &ad);
    let loss_g = (grown.forward(x.clone()) * w.clone()).sum();
    let loss_p = (plain.forward(x) * w).sum();
    let (loss_grown, loss_unshared) = (to_vec(loss_g.clone())[0], to_vec(loss_p.clone())[0]);
    let grads_g = loss_g.backward();
    let grads_p = loss_p.backward();
    let shared = block_grads(&grown.blocks, &grads_g);
    let copies = block_grads(&plain.blocks, &grads_p);
    let params = GradientsParams::from_grads(grads_g, &grown);
    let grad_tensors = params.len();
    let param_tensors = count_param_tensors(&grown);
    let step_before = to_vec(grown.blocks[1].attn.qkv.weight.val());
    let stepped = SgdConfig::new().init().step(SGD_LR, grown, params);
    let step_after = to_vec(stepped.blocks[1].attn.qkv.weight.val());
    Ok(SharingRun {
        loss_grown,
        loss_unshared,
        shared,
        copies,
        param_tensors,
        grad_tensors,
        step_before,
        step_after,
    })
}

/// Sharing is real on `device`: the grown model equals its unshared copy, a shared tensor's
/// gradient is the sum of its copies' gradients, every parameter gets one gradient, one SGD
/// step moves a shared tensor once by the summed gradient, and all of it matches the CPU.
pub fn sharing(device: &Device) -> Result<Vec<Check>> {
    let run = sharing_run(device)?;
    let mut checks = vec![Check::new(
        "sharing",
        "grown loss == unshared copies' loss",
        (run.loss_grown - run.loss_unshared).abs() / run.loss_unshared.abs().max(1.0),
        1e-4,
    )];
    for (j, shared_j) in run.shared.iter().enumerate() {
        for (t, g) in shared_j.iter().enumerate() {
            let mut sum = vec![0.0f32; g.len()];
            for (i, _) in SHARING_MAP.iter().enumerate().filter(|(_, &m)| m == j) {
                for (s, c) in sum.iter_mut().zip(&run.copies[i][t]) {
                    *s += c;
                }
            }
            let scale = sum.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // A vanished gradient would make the sum trivially equal.
            let err = if scale > 1e-6 {
                max_abs_err(g, &sum) / scale.max(1.0)
            } else {
                f32::INFINITY
            };
            checks.push(Check::new(
                "sharing",
                format!("block {j} tensor {t}: gradient == sum over its positions"),
                err,
                1e-4,
            ));
        }
    }
    checks.push(Check::new(
        "sharing",
        format!(
            "one gradient per parameter tensor ({} of {})",
            run.grad_tensors, run.param_tensors
        ),
        run.grad_tensors.abs_diff(run.param_tensors) as f32,
        0.0,
    ));
    let expected: Vec<f32> = run
        .step_before
        .iter()
        .zip(&run.shared[1][1])
        .map(|(w, g)| w - SGD_LR as f32 * g)
        .collect();
    checks.push(Check::new(
        "sharing",
        "one SGD step moves a shared tensor once by the summed gradient",
        max_abs_err(&run.step_after, &expected),
        1e-5,
    ));
    if *device != Device::flex() {
        let cpu = sharing_run(&Device::flex())?;
        let flat = |r: &SharingRun| r.shared.concat().concat();
        checks.push(Check::new(
            "sharing",
            "shared gradients == the CPU's",
            max_rel_err(&flat(&run), &flat(&cpu)),
            1e-4,
        ));
    }
    Ok(checks)
}
