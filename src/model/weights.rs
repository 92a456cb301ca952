//! Where parameter values come from when a model is built: a checkpoint or a fresh
//! initialisation. Modules ask for each tensor by its timm key and shape, so one construction
//! path serves both `load` and `init`, and the keys are spelled out in exactly one place.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// How a tensor is initialised when it does not come from a checkpoint (timm's `init_weights`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal(0, std) truncated to [-2, 2] (absolute bounds, as `timm.layers.trunc_normal_`).
    TruncNormal(f64),
    /// Normal(0, std).
    Normal(f64),
    /// Uniform(-bound, bound): torch's default for `nn.Linear` / `nn.Conv2d` weights and biases.
    Uniform(f64),
    Const(f32),
}

impl Init {
    pub const ZEROS: Init = Init::Const(0.0);
    pub const ONES: Init = Init::Const(1.0);

    /// torch's `kaiming_uniform_(a=sqrt(5))` on a weight with this fan-in: U(±1/sqrt(fan_in)).
    pub fn torch_default(fan_in: usize) -> Init {
        Init::Uniform(1.0 / (fan_in.max(1) as f64).sqrt())
    }
}

/// A supplier of parameter values, keyed by timm tensor name, in torch layout.
pub trait WeightSource {
    /// Returns the values of tensor `key`, row-major in the given (torch) shape.
    fn tensor(&mut self, key: &str, shape: &[usize], init: Init) -> Vec<f32>;
}

/// Any closure can serve tensors, e.g. to remap keys or override a few values.
impl<F: FnMut(&str, &[usize], Init) -> Vec<f32>> WeightSource for F {
    fn tensor(&mut self, key: &str, shape: &[usize], init: Init) -> Vec<f32> {
        self(key, shape, init)
    }
}

/// Draws every tensor fresh from its `Init`, in a deterministic order for a given seed.
pub struct RandomInit {
    rng: StdRng,
}

impl RandomInit {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl WeightSource for RandomInit {
    fn tensor(&mut self, _key: &str, shape: &[usize], init: Init) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let rng = &mut self.rng;
        match init {
            Init::Const(v) => vec![v; n],
            Init::Uniform(b) => (0..n).map(|_| rng.random_range(-b..=b) as f32).collect(),
            Init::Normal(std) => {
                let d = Normal::new(0.0, std).expect("std is finite and non-negative");
                (0..n).map(|_| d.sample(rng) as f32).collect()
            }
            Init::TruncNormal(std) => {
                let d = Normal::new(0.0, std).expect("std is finite and non-negative");
                (0..n)
                    .map(|_| loop {
                        let v: f64 = d.sample(rng);
                        if (-2.0..=2.0).contains(&v) {
                            break v as f32;
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Builds a parameter from torch-layout values.
pub fn param<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// The 1-D parameter `key` of `dim` values (a norm's weight or bias, a gate).
pub fn vector(
    src: &mut dyn WeightSource,
    key: &str,
    dim: usize,
    init: Init,
    device: &Device,
) -> Param<Tensor<1>> {
    param(src.tensor(key, &[dim], init), [dim], device)
}

/// Transposes a row-major `[rows, cols]` matrix.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// One tensor on its way to a checkpoint: timm name, torch shape, row-major values.
#[derive(Clone, Debug)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Collects tensors in torch layout for saving.
#[derive(Default, Debug)]
pub struct TensorSink {
    pub tensors: Vec<NamedTensor>,
}

impl TensorSink {
    /// The tensors by name (the values of one model, e.g. to rebuild it differently).
    pub fn into_map(self) -> std::collections::HashMap<String, Vec<f32>> {
        self.tensors
            .into_iter()
            .map(|t| (t.name, t.values))
            .collect()
    }

    pub fn push<const D: usize>(&mut self, name: impl Into<String>, tensor: Tensor<D>) {
        let shape = tensor.dims().to_vec();
        let values = to_vec(tensor);
        self.push_raw(name, shape, values);
    }

    pub fn push_raw(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) {
        self.tensors.push(NamedTensor {
            name: name.into(),
            shape,
            values,
        });
    }
}

/// Reads a tensor back to the host as f32, whatever its device.
pub fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 just above")
}
