//! The convolutional parts of a dense head, in torch's layouts and mmsegmentation's names:
//! `Conv2d`, `BatchNorm2d` (running statistics kept, eps 1e-5), `ConvModule` (conv without bias
//! → BatchNorm → ReLU, keys `conv.*` and `bn.*`), `ConvTranspose2d`, and bilinear resizing with
//! `align_corners=False`.

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::module::{batch_norm, conv_transpose2d, interpolate};
use burn::tensor::ops::{ConvTransposeOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::weights::{param, Init, TensorSink, WeightSource};

/// What a training forward carries: the BatchNorm batch statistics it met, in the order it met
/// them, and the dropout before each classifier.
pub struct TrainState {
    /// (the BatchNorm's key, its batch mean and unbiased variance)
    pub stats: Vec<(String, [Tensor<1>; 2])>,
    pub dropout: f64,
    /// Draws the dropout masks: seeded per step, so that a resumed run draws what an
    /// uninterrupted one did.
    pub rng: StdRng,
}

impl TrainState {
    pub fn new(dropout: f64, seed: u64) -> Self {
        Self {
            stats: Vec::new(),
            dropout,
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

/// `None` in inference.
pub type Train<'a> = Option<&'a mut TrainState>;

/// torch's `BatchNorm2d` epsilon, which mmsegmentation keeps.
pub const BN_EPS: f64 = 1e-5;

/// `nn.Conv2d` with square kernel `k`, padding `pad` and stride 1 (or [`Conv2d::strided`]).
#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[out, in, k, k]`
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub pad: usize,
    pub stride: usize,
}

impl Conv2d {
    /// torch's default initialisation (`kaiming_uniform_(a=sqrt(5))`, bias alike).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        cin: usize,
        cout: usize,
        k: usize,
        pad: usize,
        bias: bool,
        device: &Device,
    ) -> Self {
        let init = Init::torch_default(cin * k * k);
        let inits = (init, bias.then_some(init));
        Self::with_init(src, key, [cin, cout, k, pad], inits, device)
    }

    /// `dims`: in, out, kernel, padding; `inits`: the weight's and the bias's (none: no bias),
    /// for heads whose reference initialises them its own way.
    pub fn with_init(
        src: &mut dyn WeightSource,
        key: &str,
        [cin, cout, k, pad]: [usize; 4],
        (weight, bias): (Init, Option<Init>),
        device: &Device,
    ) -> Self {
        let shape = [cout, cin, k, k];
        let w = src.tensor(&format!("{key}.weight"), &shape, weight);
        let bias = bias.map(|init| {
            let b = src.tensor(&format!("{key}.bias"), &[cout], init);
            param(b, [cout], device)
        });
        Self {
            weight: param(w, shape, device),
            bias,
            pad,
            stride: 1,
        }
    }

    pub fn strided(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        crate::ops::conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            self.stride,
            self.pad,
        )
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        out.push(format!("{key}.weight"), self.weight.val());
        if let Some(b) = &self.bias {
            out.push(format!("{key}.bias"), b.val());
        }
    }

    pub fn num_params(&self) -> usize {
        self.weight.num_params() + self.bias.as_ref().map_or(0, Param::num_params)
    }
}

/// `nn.BatchNorm2d`. The running statistics are saved with the weights and never trained.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: Param<Tensor<1>>,
    pub running_var: Param<Tensor<1>>,
    /// Its key, under which a training forward reports its batch statistics.
    #[module(skip)]
    pub key: String,
}

impl BatchNorm2d {
    pub fn new(src: &mut dyn WeightSource, key: &str, c: usize, device: &Device) -> Self {
        let mut get = |name: &str, init| {
            param(
                src.tensor(&format!("{key}.{name}"), &[c], init),
                [c],
                device,
            )
        };
        Self {
            weight: get("weight", Init::ONES),
            bias: get("bias", Init::ZEROS),
            running_mean: get("running_mean", Init::ZEROS).set_require_grad(false),
            running_var: get("running_var", Init::ONES).set_require_grad(false),
            key: key.to_string(),
        }
    }

    /// Normalised by the running statistics, or in training by the batch's own (whose mean
    /// and unbiased variance `train` records, for the running statistics to follow).
    pub fn forward(&self, x: Tensor<4>, train: &mut Train) -> Tensor<4> {
        if let Some(state) = train {
            return self.forward_batch(x, state);
        }
        batch_norm(
            x,
            self.weight.val(),
            self.bias.val(),
            self.running_mean.val(),
            self.running_var.val(),
            BN_EPS,
        )
    }

    /// Composed from tensor ops so that autodiff gives the full BatchNorm backward.
    fn forward_batch(&self, x: Tensor<4>, state: &mut TrainState) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
        let centred = x - mean.clone();
        let var = centred
            .clone()
            .powi_scalar(2)
            .mean_dim(0)
            .mean_dim(2)
            .mean_dim(3);
        let count = (n * h * w) as f64;
        let unbiased = var.clone().detach() * (count / (count - 1.0).max(1.0));
        let stats = [mean.detach().reshape([c]), unbiased.reshape([c])];
        state.stats.push((self.key.clone(), stats));
        let y = centred / (var + BN_EPS).sqrt();
        y * self.weight.val().reshape([1, c, 1, 1]) + self.bias.val().reshape([1, c, 1, 1])
    }

    /// torch's running-statistics update after a training forward (momentum 0.1).
    pub fn update_running(&mut self, [mean, var]: [Tensor<1>; 2]) {
        const MOMENTUM: f64 = 0.1;
        let m = self.running_mean.val() * (1.0 - MOMENTUM) + mean * MOMENTUM;
        let v = self.running_var.val() * (1.0 - MOMENTUM) + var * MOMENTUM;
        self.running_mean = Param::from_tensor(m).set_require_grad(false);
        self.running_var = Param::from_tensor(v).set_require_grad(false);
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        out.push(format!("{key}.weight"), self.weight.val());
        out.push(format!("{key}.bias"), self.bias.val());
        out.push(format!("{key}.running_mean"), self.running_mean.val());
        out.push(format!("{key}.running_var"), self.running_var.val());
    }

    /// Trainable parameters (the running statistics are buffers).
    pub fn num_params(&self) -> usize {
        2 * self.weight.num_params()
    }
}

/// mmcv's `ConvModule` as mmsegmentation's heads use it: conv (no bias) → BatchNorm → ReLU.
#[derive(Module, Debug)]
pub struct ConvModule {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvModule {
    pub fn new(
        src: &mut dyn WeightSource,
        key: &str,
        cin: usize,
        cout: usize,
        k: usize,
        device: &Device,
    ) -> Self {
        Self {
            conv: Conv2d::new(
                src,
                &format!("{key}.conv"),
                cin,
                cout,
                k,
                k / 2,
                false,
                device,
            ),
            bn: BatchNorm2d::new(src, &format!("{key}.bn"), cout, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>, train: &mut Train) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x), train))
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.conv.export(&format!("{key}.conv"), out);
        self.bn.export(&format!("{key}.bn"), out);
    }

    pub fn num_params(&self) -> usize {
        self.conv.num_params() + self.bn.num_params()
    }
}

/// `nn.ConvTranspose2d(c, c, 2, 2)`: each pixel becomes a 2×2 block.
#[derive(Module, Debug)]
pub struct Upsample2x {
    /// `[in, out, 2, 2]`
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
}

impl Upsample2x {
    pub fn new(src: &mut dyn WeightSource, key: &str, c: usize, device: &Device) -> Self {
        // torch computes a transposed conv's fan-in from weight.size(1) · k · k.
        let init = Init::torch_default(c * 4);
        let shape = [c, c, 2, 2];
        Self {
            weight: param(
                src.tensor(&format!("{key}.weight"), &shape, init),
                shape,
                device,
            ),
            bias: param(src.tensor(&format!("{key}.bias"), &[c], init), [c], device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let opts = ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1);
        conv_transpose2d(x, self.weight.val(), Some(self.bias.val()), opts)
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        out.push(format!("{key}.weight"), self.weight.val());
        out.push(format!("{key}.bias"), self.bias.val());
    }

    pub fn num_params(&self) -> usize {
        self.weight.num_params() + self.bias.num_params()
    }
}

/// `Dropout2d`: whole channels zeroed with probability `p`, the rest scaled by 1/(1−p).
pub fn dropout2d(x: Tensor<4>, train: &mut Train) -> Tensor<4> {
    let Some(state) = train.as_mut().filter(|t| t.dropout > 0.0) else {
        return x;
    };
    let p = state.dropout;
    let [n, c, _, _] = x.dims();
    let keep: Vec<f32> = (0..n * c)
        .map(|_| {
            if state.rng.random::<f64>() < p {
                0.0
            } else {
                1.0 / (1.0 - p) as f32
            }
        })
        .collect();
    let device = x.device();
    x * Tensor::<4>::from_data(TensorData::new(keep, [n, c, 1, 1]), &device)
}

/// mmsegmentation's `resize(x, size, mode='bilinear', align_corners=False)`.
pub fn resize(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    let opts = InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(false)
        .with_output_size(size);
    interpolate(x, opts)
}
