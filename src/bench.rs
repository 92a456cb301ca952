//! Throughput of training steps (forward + backward + AdamW) and of inference on random data,
//! after warm-up, with the process's peak memory.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::model::weights::to_vec;
use crate::network::Network;
use crate::train::optim::{AdamW, AdamWConfig};

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub batch_size: usize,
    pub steps: usize,
    pub train_img_per_s: f64,
    pub infer_img_per_s: f64,
    /// Peak resident memory after the inference phase, MiB.
    pub infer_peak_rss_mib: f64,
    /// Peak resident memory after the training phase (includes inference's), MiB.
    pub train_peak_rss_mib: f64,
    /// On a GPU: the most device memory in use after any inference step, MiB, as the driver
    /// counts it (context and allocator cache included; see `device::cuda::memory_used_mib`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infer_gpu_used_mib: Option<f64>,
    /// On a GPU: the same after any training step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_gpu_used_mib: Option<f64>,
    pub device: String,
    pub precision: String,
    /// Why this precision (`--precision auto` says what it measured).
    pub precision_reason: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The high-water mark of resident memory (Linux `VmHWM`), MiB; 0 where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Keeps the largest value of the GPU's memory in use seen so far.
struct GpuPeak(Option<usize>, Option<f64>);

impl GpuPeak {
    fn sample(&mut self) {
        if let Some(used) = self.0.and_then(crate::device::cuda::memory_used_mib) {
            self.1 = Some(self.1.map_or(used, |p| p.max(used)));
        }
    }
}

/// `make(device)` builds the network on the given device (plain for inference, autodiff for
/// training); `gpu` is the CUDA device index whose memory to watch, if any.
pub fn run(
    make: &dyn Fn(&Device) -> crate::error::Result<Network>,
    device: &Device,
    gpu: Option<usize>,
    batch_size: usize,
    steps: usize,
    warmup: usize,
) -> crate::error::Result<BenchResult> {
    let mut infer_gpu = GpuPeak(gpu, None);
    let mut train_gpu = GpuPeak(gpu, None);
    let net = make(device)?;
    let cfg = net.config().clone();
    let shape = [batch_size, cfg.in_chans, cfg.img_size[0], cfg.img_size[1]];
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let mut infer = Vec::new();
    for i in 0..warmup + steps {
        let t = Instant::now();
        let y = net.forward(x.clone());
        let _ = to_vec(y.slice([0..1, 0..1]));
        infer_gpu.sample();
        if i >= warmup {
            infer.push(batch_size as f64 / t.elapsed().as_secs_f64());
        }
    }
    drop(net);
    let infer_peak = peak_rss_mib();

    let ad = device.clone().autodiff();
    let mut net = make(&ad)?;
    let k = cfg.num_classes.max(1);
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &ad);
    let y = Tensor::<2>::random([batch_size, k], Distribution::Uniform(0.0, 1.0), &ad);
    let y = y.clone() / y.sum_dim(1);
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut train = Vec::new();
    for i in 0..warmup + steps {
        let t = Instant::now();
        let logits = net.forward_train(x.clone(), &mut None);
        let loss = (y.clone() * log_softmax(logits, 1)).sum_dim(1).mean().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = opt.step(1e-4, net, grads, 1.0);
        // Wait for the step to finish before stopping the clock.
        let _ = to_vec(net.config_probe());
        train_gpu.sample();
        if i >= warmup {
            train.push(batch_size as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(BenchResult {
        batch_size,
        steps,
        train_img_per_s: median(train),
        infer_img_per_s: median(infer),
        infer_peak_rss_mib: infer_peak,
        train_peak_rss_mib: peak_rss_mib(),
        infer_gpu_used_mib: infer_gpu.1,
        train_gpu_used_mib: train_gpu.1,
        device: format!("{device:?}"),
        precision: crate::ops::precision::active().to_string(),
        precision_reason: String::new(),
    })
}
