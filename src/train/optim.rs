//! AdamW over a module's parameters, with what a ViT recipe needs and burn's optimizers do not
//! give in one place: weight decay only on matrices (timm excludes norms, biases, pos_embed,
//! class/dist tokens and gates, which are exactly the parameters that are not 2-D here),
//! frozen parameter groups, clipping by the global gradient norm, an EMA of the weights, and
//! state keyed by parameter path so it can be saved and resumed.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::model::weights::to_vec;
use crate::model::weights::NamedTensor;
use crate::ops::AdamWStep;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        }
    }
}

/// Moments of one parameter, flattened.
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Updates taken so far (for bias correction).
    pub step: u64,
    state: HashMap<String, Moments>,
}

/// Which parameters train, by path (`Grown.positions.3.attn_adapter.down.weight`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainOnly {
    All,
    /// The per-position parameters of a grown model: adapters, own norms, gates.
    Adapters,
    /// Per-position parameters and the classifier head.
    AdaptersHead,
    /// The blocks a growth added (LLaMA-Pro trains its copies alone), as the model's
    /// `config.json` names them (`scalenet_new_layers`).
    New,
}

impl TrainOnly {
    /// Whether the parameter at `path` trains; `new_layers` are the added blocks' indices.
    pub fn trains(&self, path: &str, new_layers: &[usize]) -> bool {
        match self {
            TrainOnly::All => true,
            TrainOnly::New => new_layers.iter().any(|i| {
                path.contains(&format!(".blocks.{i}.")) || path.contains(&format!(".layers.{i}."))
            }),
            TrainOnly::Adapters => path.contains(".positions."),
            TrainOnly::AdaptersHead => {
                path.contains(".positions.")
                    || path.contains(".head.head")
                    || path.contains(".ends.fc")
            }
        }
    }
}

/// Tracks the dotted path of the parameter being visited.
#[derive(Default)]
struct PathTracker(Vec<String>);

impl PathTracker {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn path(&self, leaf: Option<&str>) -> String {
        let mut p = self.0.join(".");
        if let Some(l) = leaf {
            p.push('.');
            p.push_str(l);
        }
        p
    }
}

/// All float parameters with their path, id and flattened values.
pub fn named_params<M: Module>(module: &M) -> Vec<(String, ParamId, usize)> {
    struct V(PathTracker, Vec<(String, ParamId, usize)>);
    impl ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.1.push((self.0.path(None), p.id, D));
        }
    }
    let mut v = V(PathTracker::default(), Vec::new());
    module.visit(&mut v);
    v.1
}

/// The added blocks `--train-only new` trains, from a model's `config.json` object; none for
/// the other groups. A model that names none is refused: it did not come from a growth.
pub fn added_layers(
    group: TrainOnly,
    config: &serde_json::Map<String, serde_json::Value>,
    model: &std::path::Path,
) -> crate::error::Result<Vec<usize>> {
    if group != TrainOnly::New {
        return Ok(Vec::new());
    }
    let key = crate::growth::plan::NEW_LAYERS_KEY;
    let layers = crate::growth::plan::recorded_new_layers(config);
    if layers.is_empty() {
        return Err(crate::error::Error::BadConfig {
            path: model.join("config.json"),
            msg: format!(
                "--train-only new: no added blocks are named ('{key}'); grow the model with --no-share, e.g. expand --method llama-pro"
            ),
        });
    }
    Ok(layers)
}

/// Sets `require_grad` from a group, so frozen parameters cost no backward work.
pub fn freeze<M: Module>(module: M, group: TrainOnly, new_layers: &[usize]) -> M {
    struct F<'a>(PathTracker, TrainOnly, &'a [usize]);
    impl ModuleMapper for F<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let trains = self.1.trains(&self.0.path(None), self.2);
            p.set_require_grad(trains)
        }
    }
    module.map(&mut F(PathTracker::default(), group, new_layers))
}

/// Global L2 norm of all gradients.
pub fn grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    struct N<'a>(&'a GradientsParams, Vec<Tensor<1>>);
    impl ModuleVisitor for N<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(p.id) {
                self.1.push((g.clone() * g).sum());
            }
        }
    }
    let mut n = N(grads, Vec::new());
    module.visit(&mut n);
    if n.1.is_empty() {
        return 0.0;
    }
    let total: f64 = to_vec(Tensor::cat(n.1, 0)).iter().map(|&v| v as f64).sum();
    total.sqrt()
}

/// Adds `more` into `acc` (gradient accumulation).
pub fn accumulate<M: Module>(module: &M, acc: &mut GradientsParams, mut more: GradientsParams) {
    struct A<'a>(&'a mut GradientsParams, &'a mut GradientsParams);
    impl ModuleVisitor for A<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.1.remove::<D>(p.id) {
                let sum = match self.0.remove::<D>(p.id) {
                    Some(a) => a + g,
                    None => g,
                };
                self.0.register::<D>(p.id, sum);
            }
        }
    }
    module.visit(&mut A(acc, &mut more));
}

impl AdamW {
    pub fn new(cfg: AdamWConfig) -> Self {
        Self {
            cfg,
            step: 0,
            state: HashMap::new(),
        }
    }

    /// One update with learning rate `lr`; gradients are multiplied by `grad_scale` first
    /// (clipping, accumulation averaging).
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        grads: GradientsParams,
        grad_scale: f64,
    ) -> M {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.cfg.beta1.powi(t);
        let bc2 = 1.0 - self.cfg.beta2.powi(t);
        let mut mapper = Update {
            opt: self,
            grads,
            lr,
            bc1,
            bc2,
            grad_scale,
            path: PathTracker::default(),
        };
        module.map(&mut mapper)
    }

    /// Optimizer state as named tensors (`adamw.m.{path}`, `adamw.v.{path}`), for checkpoints.
    pub fn export(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        let mut keys: Vec<&String> = self.state.keys().collect();
        keys.sort();
        for k in keys {
            let s = &self.state[k];
            for (name, t) in [("m", &s.m), ("v", &s.v)] {
                let values = to_vec(t.clone());
                out.push(NamedTensor {
                    name: format!("adamw.{name}.{k}"),
                    shape: vec![values.len()],
                    values,
                });
            }
        }
        out
    }

    /// Restores state written by `export`.
    pub fn import(&mut self, tensors: Vec<NamedTensor>, device: &burn::tensor::Device) {
        let mut ms: HashMap<String, Tensor<1>> = HashMap::new();
        let mut vs: HashMap<String, Tensor<1>> = HashMap::new();
        for t in tensors {
            let n = t.values.len();
            let tensor = Tensor::<1>::from_data(TensorData::new(t.values, [n]), device);
            if let Some(k) = t.name.strip_prefix("adamw.m.") {
                ms.insert(k.to_string(), tensor);
            } else if let Some(k) = t.name.strip_prefix("adamw.v.") {
                vs.insert(k.to_string(), tensor);
            }
        }
        for (k, m) in ms {
            if let Some(v) = vs.remove(&k) {
                self.state.insert(k, Moments { m, v });
            }
        }
    }
}

struct Update<'a> {
    opt: &'a mut AdamW,
    grads: GradientsParams,
    lr: f64,
    bc1: f64,
    bc2: f64,
    grad_scale: f64,
    path: PathTracker,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let key = self.path.path(None);
        let cfg = self.opt.cfg;
        let require_grad = tensor.is_require_grad();
        let w = tensor.inner();
        let shape = w.shape();
        let n = shape.num_elements();
        let device = w.device();
        // Taken out of the state (not cloned) so that the fused update can write in place.
        let Moments { m, v } = self.opt.state.remove(&key).unwrap_or_else(|| Moments {
            m: Tensor::zeros([n], &device),
            v: Tensor::zeros([n], &device),
        });
        let step = AdamWStep {
            lr: self.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            // Decoupled weight decay on matrices only (timm's no-decay rule: ndim <= 1 and
            // the pos_embed / token tensors, which are the 3-D ones here).
            decay: if D == 2 { cfg.weight_decay } else { 0.0 },
            bc1: self.bc1,
            bc2: self.bc2,
            grad_scale: self.grad_scale,
        };
        let (flat, g) = (w.reshape([n]), grad.reshape([n]));
        let (new, m, v) = if device == Device::flex() {
            crate::ops::adamw(flat, g, m, v, step)
        } else {
            update_composed(flat, g, m, v, step)
        };
        self.opt.state.insert(key, Moments { m, v });
        let mut new: Tensor<D> = Tensor::from_inner(new.reshape(shape));
        if require_grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// The AdamW update from tensor ops, for backends without the fused kernel: `(w, m, v)` after
/// the step. `ops/adamw.rs` computes the same, operation by operation.
fn update_composed(
    w: Tensor<1>,
    g: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    s: AdamWStep,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let g = g * s.grad_scale;
    let m = m * s.beta1 + g.clone() * (1.0 - s.beta1);
    let v = v * s.beta2 + g.clone() * g * (1.0 - s.beta2);
    let update = (m.clone() / s.bc1) / ((v.clone() / s.bc2).sqrt() + s.eps);
    let w = w * (1.0 - s.lr * s.decay) - update * s.lr;
    (w, m, v)
}

/// Exponential moving average of weights, kept as flattened host-side tensors by path.
pub struct Ema {
    pub decay: f64,
    values: HashMap<String, Tensor<1>>,
}

impl Ema {
    pub fn new<M: Module>(decay: f64, module: &M) -> Self {
        Self {
            decay,
            values: snapshot(module),
        }
    }

    pub fn update<M: Module>(&mut self, module: &M) {
        for (k, cur) in snapshot(module) {
            let e = self.values.remove(&k).unwrap_or_else(|| cur.clone());
            self.values
                .insert(k, e * self.decay + cur * (1.0 - self.decay));
        }
    }

    /// `module` with the averaged weights put in.
    pub fn apply<M: Module>(&self, module: M) -> M {
        struct Put<'a>(&'a HashMap<String, Tensor<1>>, PathTracker);
        impl ModuleMapper for Put<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.1.enter(name);
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.1.exit();
            }
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let (id, t, mapper) = p.consume();
                let t = match self.0.get(&self.1.path(None)) {
                    Some(e) => e.clone().reshape(t.shape()),
                    None => t,
                };
                Param::from_mapped_value(id, t, mapper)
            }
        }
        module.map(&mut Put(&self.values, PathTracker::default()))
    }

    pub fn export(&self) -> Vec<NamedTensor> {
        let mut keys: Vec<&String> = self.values.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let values = to_vec(self.values[k].clone());
                NamedTensor {
                    name: format!("ema.{k}"),
                    shape: vec![values.len()],
                    values,
                }
            })
            .collect()
    }

    pub fn import(&mut self, tensors: &[NamedTensor], device: &burn::tensor::Device) {
        for t in tensors {
            if let Some(k) = t.name.strip_prefix("ema.") {
                let n = t.values.len();
                self.values.insert(
                    k.to_string(),
                    Tensor::from_data(TensorData::new(t.values.clone(), [n]), device),
                );
            }
        }
    }
}

fn snapshot<M: Module>(module: &M) -> HashMap<String, Tensor<1>> {
    struct S(PathTracker, HashMap<String, Tensor<1>>);
    impl ModuleVisitor for S {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            let n = t.shape().num_elements();
            let t = t.inner();
            self.1.insert(self.0.path(None), t.reshape([n]));
        }
    }
    let mut s = S(PathTracker::default(), HashMap::new());
    module.visit(&mut s);
    s.1
}

#[cfg(test)]
mod fused_tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use crate::model::weights::to_vec;
    use crate::ops::AdamWStep;

    /// The fused update on flex gives the composed update's bits, over several steps, with and
    /// without decay, gradient scaling and the moments' bias corrections.
    #[test]
    fn fused_update_is_the_composed_update_to_the_bit() {
        let device = Device::flex();
        let n = 40_000; // more than one task's chunk
        let data = |salt: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.0 - 1.0) * scale)
                .collect()
        };
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [n]), &device);
        let mut fused = (t(data(1, 0.5)), t(vec![0.0; n]), t(vec![0.0; n]));
        let mut composed = fused.clone();
        for step in 1..=4 {
            let s = AdamWStep {
                lr: 1e-3 * step as f64,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                decay: if step % 2 == 0 { 0.05 } else { 0.0 },
                bc1: 1.0 - 0.9f64.powi(step),
                bc2: 1.0 - 0.999f64.powi(step),
                grad_scale: 0.7,
            };
            let g = data(step as usize + 10, 3.0);
            let (w, m, v) = fused;
            fused = crate::ops::adamw(w, t(g.clone()), m, v, s);
            let (w, m, v) = composed;
            composed = super::update_composed(w, t(g), m, v, s);
            let bits = |x: &Tensor<1>| -> Vec<u32> {
                to_vec(x.clone()).iter().map(|v| v.to_bits()).collect()
            };
            assert_eq!(bits(&fused.0), bits(&composed.0), "weights, step {step}");
            assert_eq!(
                bits(&fused.1),
                bits(&composed.1),
                "first moment, step {step}"
            );
            assert_eq!(
                bits(&fused.2),
                bits(&composed.2),
                "second moment, step {step}"
            );
        }
    }
}
