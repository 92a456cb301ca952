//! Throughput of training steps (forward + backward + AdamW) and of inference on random data,
//! after warm-up, with the process's peak memory.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::model::weights::to_vec;
use crate::network::{LanguageModel, Network};
use crate::train::optim::{AdamW, AdamWConfig};

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub batch_size: usize,
    pub steps: usize,
    pub train_img_per_s: f64,
    pub infer_img_per_s: f64,
    #[serde(flatten)]
    pub run: BenchRun,
}

/// What a benchmark used and where it ran, the same for image and language models (flattened
/// into their JSON).
#[derive(Clone, Debug, Serialize)]
pub struct BenchRun {
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
    /// The CPU the numbers came from (also for GPU runs: it feeds the device).
    pub cpu: crate::ops::auto_precision::CpuInfo,
    /// What ran the large f32 matrix products (our kernel or a `--blas` library).
    pub f32_gemm: String,
    /// Why (`--blas auto` says what it found and measured).
    pub blas_reason: String,
}

impl BenchRun {
    /// The process's peaks and the active settings, after both phases ran on `device`.
    fn now(infer_peak_rss_mib: f64, gpu: (&GpuPeak, &GpuPeak), device: &Device) -> Self {
        Self {
            infer_peak_rss_mib,
            train_peak_rss_mib: peak_rss_mib(),
            infer_gpu_used_mib: gpu.0 .1,
            train_gpu_used_mib: gpu.1 .1,
            device: format!("{device:?}"),
            precision: crate::ops::precision::active().to_string(),
            precision_reason: String::new(),
            cpu: crate::ops::auto_precision::cpu_info(),
            f32_gemm: crate::ops::blas::f32_kernel(),
            blas_reason: String::new(),
        }
    }
}

/// Runs `step` `warmup + steps` times; the median of `items` per second over the timed ones.
fn timed(warmup: usize, steps: usize, items: usize, mut step: impl FnMut()) -> f64 {
    let mut rates = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        step();
        if i >= warmup {
            rates.push(items as f64 / t.elapsed().as_secs_f64());
        }
    }
    median(rates)
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
    let cfg = net.arch();
    let [h, w] = cfg.img_size();
    let shape = [batch_size, cfg.in_chans(), h, w];
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let infer = timed(warmup, steps, batch_size, || {
        let y = net.forward(x.clone());
        let _ = to_vec(y.slice([0..1, 0..1]));
        infer_gpu.sample();
    });
    drop(net);
    let infer_peak = peak_rss_mib();

    let ad = device.clone().autodiff();
    let net = make(&ad)?;
    let k = cfg.num_classes().max(1);
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &ad);
    let y = Tensor::<2>::random([batch_size, k], Distribution::Uniform(0.0, 1.0), &ad);
    let y = y.clone() / y.sum_dim(1);
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut slot = Some(net);
    let train = timed(warmup, steps, batch_size, || {
        let net = slot.take().expect("the network between steps");
        let logits = net.forward_train(x.clone(), &mut None);
        let loss = (y.clone() * log_softmax(logits, 1)).sum_dim(1).mean().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let net = opt.step(1e-4, net, grads, 1.0);
        // Wait for the step to finish before stopping the clock.
        let _ = to_vec(net.config_probe());
        train_gpu.sample();
        slot = Some(net);
    });
    Ok(BenchResult {
        batch_size,
        steps,
        train_img_per_s: train,
        infer_img_per_s: infer,
        run: BenchRun::now(infer_peak, (&infer_gpu, &train_gpu), device),
    })
}

/// Throughput of a language model: training steps (causal LM loss + AdamW) and a forward over
/// whole sequences, in tokens/s, and generation one token at a time through the KV cache.
#[derive(Clone, Debug, Serialize)]
pub struct LmBenchResult {
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: usize,
    pub train_tokens_per_s: f64,
    pub infer_tokens_per_s: f64,
    /// Batch 1, after a prompt of `seq_len / 2` tokens.
    pub decode_tokens_per_s: f64,
    /// Inference here is the forward and the decoding.
    #[serde(flatten)]
    pub run: BenchRun,
}

/// As [`run`], for a language model; `gpu` is the CUDA device index whose memory to watch.
pub fn run_lm(
    make: &dyn Fn(&Device) -> crate::error::Result<LanguageModel>,
    device: &Device,
    gpu: Option<usize>,
    batch_size: usize,
    seq_len: usize,
    steps: usize,
    warmup: usize,
) -> crate::error::Result<LmBenchResult> {
    use burn::tensor::{Int, TensorData};
    let mut infer_gpu = GpuPeak(gpu, None);
    let mut train_gpu = GpuPeak(gpu, None);
    let net = make(device)?;
    let vocab = net.config().vocab_size;
    let ids = |b: usize, t: usize, d: &Device| {
        let v: Vec<i64> = (0..b * t)
            .map(|i| ((i * 7919 + 13) % vocab) as i64)
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(v, [b, t]), d)
    };
    let x = ids(batch_size, seq_len, device);
    let tokens = batch_size * seq_len;
    let infer = timed(warmup, steps, tokens, || {
        let y = net.forward(x.clone(), None);
        let _ = to_vec(y.slice([0..1, 0..1, 0..1]));
        infer_gpu.sample();
    });
    let prompt = ids(1, (seq_len / 2).max(1), device);
    let mut cache = net.new_cache();
    let _ = to_vec(
        net.forward(prompt, Some(&mut cache))
            .slice([0..1, 0..1, 0..1]),
    );
    let one = ids(1, 1, device);
    let decode = timed(warmup, steps, 1, || {
        let y = net.forward(one.clone(), Some(&mut cache));
        let _ = to_vec(y.slice([0..1, 0..1, 0..1]));
        infer_gpu.sample();
    });
    drop(net);
    let infer_peak = peak_rss_mib();

    let ad = device.clone().autodiff();
    let x = ids(batch_size, seq_len, &ad);
    let y = ids(batch_size, seq_len, &ad);
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut slot = Some(make(&ad)?);
    let train = timed(warmup, steps, tokens, || {
        let net = slot.take().expect("the model between steps");
        let loss = crate::train::lm::causal_lm_loss(net.forward(x.clone(), None), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let net = opt.step(1e-4, net, grads, 1.0);
        let _ = to_vec(net.probe());
        train_gpu.sample();
        slot = Some(net);
    });
    Ok(LmBenchResult {
        batch_size,
        seq_len,
        steps,
        train_tokens_per_s: train,
        infer_tokens_per_s: infer,
        decode_tokens_per_s: decode,
        run: BenchRun::now(infer_peak, (&infer_gpu, &train_gpu), device),
    })
}

/// The shape of a dense model's benchmark: `infer` timed on a random batch of `shape` in
/// eval mode, then `loss` (of a model on the autodiff device and a batch) timed with its
/// backward and an AdamW step; `after` sees the model after each step (BatchNorm's running
/// statistics), `probe` reads a small tensor so that pending work finishes.
struct DenseBench<'a, M> {
    make: &'a dyn Fn(&Device) -> crate::error::Result<M>,
    shape: [usize; 4],
    gpu: Option<usize>,
    steps: usize,
    warmup: usize,
}

impl<M: burn::module::Module> DenseBench<'_, M> {
    fn run(
        &self,
        device: &Device,
        infer: impl Fn(&M, Tensor<4>),
        mut loss: impl FnMut(&M, Tensor<4>, u64) -> (Tensor<1>, Box<dyn FnOnce(M) -> M>),
        probe: impl Fn(&M) -> Tensor<1>,
    ) -> crate::error::Result<BenchResult> {
        let (mut infer_gpu, mut train_gpu) = (GpuPeak(self.gpu, None), GpuPeak(self.gpu, None));
        let batch_size = self.shape[0];
        let net = (self.make)(device)?;
        let x = Tensor::<4>::random(self.shape, Distribution::Normal(0.0, 1.0), device);
        let infer_rate = timed(self.warmup, self.steps, batch_size, || {
            infer(&net, x.clone());
            infer_gpu.sample();
        });
        drop(net);
        let infer_peak = peak_rss_mib();
        let ad = device.clone().autodiff();
        let x = Tensor::<4>::random(self.shape, Distribution::Normal(0.0, 1.0), &ad);
        let mut opt = AdamW::new(AdamWConfig::default());
        let mut slot = Some((self.make)(&ad)?);
        let mut step = 0;
        let train = timed(self.warmup, self.steps, batch_size, || {
            let mut net = slot.take().expect("the model between steps");
            let (l, after) = loss(&net, x.clone(), step);
            let grads = GradientsParams::from_grads(l.backward(), &net);
            net = after(opt.step(1e-4, net, grads, 1.0));
            let _ = to_vec(probe(&net));
            train_gpu.sample();
            slot = Some(net);
            step += 1;
        });
        Ok(BenchResult {
            batch_size,
            steps: self.steps,
            train_img_per_s: train,
            infer_img_per_s: infer_rate,
            run: BenchRun::now(infer_peak, (&infer_gpu, &train_gpu), device),
        })
    }
}

/// As [`run`], for a segmentor (`config` sizes the input): inference is the eval-mode forward
/// (logits at the head's stride); a training step is the train-mode forward (BatchNorm on the
/// batch, dropout), mmsegmentation's loss on fixed random labels (the auxiliary head's
/// included), backward, AdamW and the running-statistics update, as `train` runs it.
pub fn run_seg(
    make: &dyn Fn(&Device) -> crate::error::Result<crate::segment::Segmentor>,
    config: &crate::checkpoint::seg_dir::SegModelConfig,
    device: &Device,
    gpu: Option<usize>,
    batch_size: usize,
    steps: usize,
    warmup: usize,
) -> crate::error::Result<BenchResult> {
    use crate::segment::layers::TrainState;
    use crate::segment::loss::{segmentation_loss, PixelLabels};
    let arch = &config.backbone.arch;
    let [h, w] = arch.img_size();
    let shape = [batch_size, arch.in_chans(), h, w];
    let k = config.spec.num_classes as u64;
    let labels: Vec<u8> = (0..(batch_size * h * w) as u64)
        .map(|i| (((i * 2654435761) >> 7) % k) as u8)
        .collect();
    let aux_weight = config.spec.aux.as_ref().map_or(0.0, |a| a.loss_weight);
    let bench = DenseBench {
        make,
        shape,
        gpu,
        steps,
        warmup,
    };
    let infer = |net: &crate::segment::Segmentor, x| {
        let (y, _) = net.forward(x);
        let _ = to_vec(y.slice([0..1, 0..1, 0..1, 0..1]));
    };
    let loss = |net: &crate::segment::Segmentor, x, step| {
        let mut state = TrainState::new(config.spec.dropout_ratio, step);
        let (logits, aux) = net.forward_train(x, &mut None, &mut Some(&mut state));
        let pixels = PixelLabels {
            values: &labels,
            shape: [batch_size, h, w],
            ignore_index: config.ignore_index as u8,
        };
        let l = segmentation_loss(logits, aux.map(|a| (a, aux_weight)), &pixels);
        let stats = state.stats;
        let after: Box<dyn FnOnce(crate::segment::Segmentor) -> crate::segment::Segmentor> =
            Box::new(move |mut net| {
                net.update_running(stats);
                net
            });
        (l, after)
    };
    bench.run(device, infer, loss, |net| net.backbone.config_probe())
}

/// As [`run`], for a detector: inference is the eval-mode forward with torchvision's
/// post-processing (scores, top-k, decoding, NMS); a training step is the forward, the loss on
/// fixed targets (three boxes an image), backward and AdamW, as `train` runs it.
pub fn run_det(
    make: &dyn Fn(&Device) -> crate::error::Result<crate::detect::Detector>,
    config: &crate::checkpoint::det_dir::DetModelConfig,
    device: &Device,
    gpu: Option<usize>,
    batch_size: usize,
    steps: usize,
    warmup: usize,
) -> crate::error::Result<BenchResult> {
    use crate::detect::loss::ImageTargets;
    use crate::detect::Detector;
    let arch = &config.backbone.arch;
    let [h, w] = arch.img_size();
    let shape = [batch_size, arch.in_chans(), h, w];
    let (hf, wf) = (h as f32, w as f32);
    let k = config.spec.num_classes;
    let targets: Vec<ImageTargets> = (0..batch_size)
        .map(|i| ImageTargets {
            boxes: (0..3)
                .map(|j| {
                    let f = (i + j) as f32 / (batch_size + 3) as f32;
                    [
                        f * wf * 0.5,
                        f * hf * 0.4,
                        wf * (0.5 + 0.4 * f),
                        hf * (0.6 + 0.3 * f),
                    ]
                })
                .collect(),
            labels: (0..3).map(|j| (i + j) % k).collect(),
        })
        .collect();
    let bench = DenseBench {
        make,
        shape,
        gpu,
        steps,
        warmup,
    };
    let infer = |net: &Detector, x| {
        let _ = net.detect(x);
    };
    let loss = |net: &Detector, x, _| {
        let (cls, boxes) = net.loss(net.forward_train(x, &mut None), &targets);
        let after: Box<dyn FnOnce(Detector) -> Detector> = Box::new(|net| net);
        (cls + boxes, after)
    };
    bench.run(device, infer, loss, |net| net.backbone.config_probe())
}
