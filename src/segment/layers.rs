//! The convolutional parts of a dense head, in torch's layouts and mmsegmentation's names:
//! `Conv2d`, `BatchNorm2d` (running statistics kept, eps 1e-5), `ConvModule` (conv without bias
//! → BatchNorm → ReLU, keys `conv.*` and `bn.*`), `ConvTranspose2d`, and bilinear resizing with
//! `align_corners=False`.

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::module::{batch_norm, conv2d, conv_transpose2d, interpolate};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use crate::model::weights::{param, Init, TensorSink, WeightSource};

/// torch's `BatchNorm2d` epsilon, which mmsegmentation keeps.
pub const BN_EPS: f64 = 1e-5;

/// `nn.Conv2d` with square kernel `k`, stride 1 and padding `pad`.
#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[out, in, k, k]`
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub pad: usize,
}

impl Conv2d {
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
        let fan_in = cin * k * k;
        let shape = [cout, cin, k, k];
        let w = src.tensor(
            &format!("{key}.weight"),
            &shape,
            Init::torch_default(fan_in),
        );
        let bias = bias.then(|| {
            let b = src.tensor(&format!("{key}.bias"), &[cout], Init::torch_default(fan_in));
            param(b, [cout], device)
        });
        Self {
            weight: param(w, shape, device),
            bias,
            pad,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let opts = ConvOptions::new([1, 1], [self.pad, self.pad], [1, 1], 1);
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            opts,
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
        }
    }

    /// Inference mode: normalised by the running statistics.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm(
            x,
            self.weight.val(),
            self.bias.val(),
            self.running_mean.val(),
            self.running_var.val(),
            BN_EPS,
        )
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
    #[allow(clippy::too_many_arguments)]
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

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
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
