//! A Llama decoder layer (`LlamaDecoderLayer`): RMSNorm, rotary embeddings in the rotate-half
//! layout, grouped-query attention with a causal mask and a KV cache, and a SwiGLU MLP, as a
//! pre-norm block.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::LlamaConfig;
use crate::model::layers::Linear;
use crate::model::prenorm::{BlockNorm, PreNormBlock};
use crate::model::weights::{vector, Init, TensorSink, WeightSource};

/// `weight ⊙ x / sqrt(mean(x²) + eps)` over the last dimension (Llama's `RMSNorm`).
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
    /// `key`'s norm over the model's width, with its eps.
    pub fn new(src: &mut dyn WeightSource, key: &str, cfg: &LlamaConfig, device: &Device) -> Self {
        Self::of_width(src, key, cfg.hidden_size, cfg.rms_norm_eps, device)
    }

    fn of_width(
        src: &mut dyn WeightSource,
        key: &str,
        d: usize,
        eps: f64,
        device: &Device,
    ) -> Self {
        let weight = vector(src, &format!("{key}.weight"), d, Init::ONES, device);
        Self { weight, eps }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let ms = x.clone().powi_scalar(2).mean_dim(2);
        x * (ms + self.eps).sqrt().recip() * self.weight.val().unsqueeze::<3>()
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        out.push(format!("{key}.weight"), self.weight.val());
    }

    pub fn num_params(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// The cos/sin tables of one forward: `[tokens, head_dim]` each, for positions
/// `start..start + tokens`, in transformers' layout (`cat(freqs, freqs)`).
#[derive(Clone, Debug)]
pub struct Rotary {
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
}

impl Rotary {
    pub fn new(inv_freq: &[f32], start: usize, tokens: usize, device: &Device) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(tokens * 2 * half);
        let mut sin = Vec::with_capacity(tokens * 2 * half);
        for t in start..start + tokens {
            // The angle is rounded to f32 as transformers computes it, then cos/sin taken.
            let row: Vec<f32> = inv_freq.iter().map(|f| t as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| (*a as f64).cos() as f32));
                sin.extend(row.iter().map(|a| (*a as f64).sin() as f32));
            }
        }
        let shape = [tokens, 2 * half];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// `x * cos + rotate_half(x) * sin` on `[batch, heads, tokens, head_dim]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let hd = x.dims()[3];
        let half = hd / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone().unsqueeze::<4>() + rotated * self.sin.clone().unsqueeze::<4>()
    }
}

/// Keys and values of the tokens seen so far, one slot per block position.
#[derive(Debug, Default)]
pub struct KvCache {
    pub(super) slots: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Tokens already in the cache.
    pub len: usize,
}

impl KvCache {
    pub fn new(positions: usize) -> Self {
        Self {
            slots: (0..positions).map(|_| None).collect(),
            len: 0,
        }
    }
}

/// Grouped-query self-attention with rotary embeddings (`self_attn`).
#[derive(Module, Debug)]
pub struct LlamaAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// What one attention call needs besides its input: the rotary tables, the causal mask
/// (`[tokens, keys]`, additive; none for a single new token), and (while generating) this
/// position's cache slot. Tables and mask are built once per forward and shared by positions.
pub struct AttnContext<'a> {
    pub rotary: &'a Rotary,
    pub mask: Option<&'a Tensor<2>>,
    pub cache: Option<&'a mut Option<(Tensor<4>, Tensor<4>)>>,
}

/// A bias-free projection with transformers' Llama init (normal, std 0.02).
fn projection(
    src: &mut dyn WeightSource,
    key: &str,
    i: usize,
    o: usize,
    device: &Device,
) -> Linear {
    Linear::new(
        src,
        key,
        i,
        o,
        false,
        (Init::Normal(0.02), Init::ZEROS),
        device,
    )
}

impl LlamaAttention {
    pub fn new(src: &mut dyn WeightSource, key: &str, cfg: &LlamaConfig, device: &Device) -> Self {
        let d = cfg.hidden_size;
        let q = cfg.num_attention_heads * cfg.head_dim;
        let kv = cfg.kv_dim();
        Self {
            q_proj: projection(src, &format!("{key}.q_proj"), d, q, device),
            k_proj: projection(src, &format!("{key}.k_proj"), d, kv, device),
            v_proj: projection(src, &format!("{key}.v_proj"), d, kv, device),
            o_proj: projection(src, &format!("{key}.o_proj"), q, d, device),
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        }
    }

    /// `[batch, tokens, dim]` → `[batch, tokens, dim]`, causal over the cache and the new tokens.
    pub fn forward(&self, x: Tensor<3>, ctx: AttnContext<'_>) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let q = ctx.rotary.apply(heads(self.q_proj.forward(x.clone()), h));
        let mut k = ctx.rotary.apply(heads(self.k_proj.forward(x.clone()), kvh));
        let mut v = heads(self.v_proj.forward(x), kvh);
        if let Some(slot) = ctx.cache {
            if let Some((pk, pv)) = slot.take() {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        // On flex the fused kernel reads the key/value heads in place for every query head
        // they serve, masks by position instead of by a mask tensor, and writes the heads
        // merged; it keeps no scores for the backward.
        let out = if q.device() == Device::flex() {
            crate::ops::causal_attention(q, k, v)
        } else {
            attend_composed(q, k, v, ctx.mask)
        };
        self.o_proj.forward(out)
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        for (name, l) in [
            ("q_proj", &self.q_proj),
            ("k_proj", &self.k_proj),
            ("v_proj", &self.v_proj),
            ("o_proj", &self.o_proj),
        ] {
            l.export(&format!("{key}.{name}"), out);
        }
    }

    pub fn num_params(&self) -> usize {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj]
            .iter()
            .map(|l| l.num_params())
            .sum()
    }
}

/// The attention core composed from tensor ops, for backends without the fused kernel: `q
/// [b, heads, t, hd]`, `k` and `v [b, kv_heads, s, hd]`, the additive causal `mask [t, s]`
/// (none for one new token) → `[b, t, heads·hd]`.
fn attend_composed(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<&Tensor<2>>,
) -> Tensor<3> {
    let [b, h, t, hd] = q.dims();
    let [_, kvh, tk, _] = k.dims();
    // Each key/value head serves num_heads / num_kv_heads query heads (transformers'
    // `repeat_kv`: query head i reads kv head i / n_rep).
    let repeat = |y: Tensor<4>| {
        if h == kvh {
            return y;
        }
        y.unsqueeze_dim::<5>(2)
            .expand([b, kvh, h / kvh, tk, hd])
            .reshape([b, h, tk, hd])
    };
    let (k, v) = (repeat(k), repeat(v));
    let scale = (hd as f64).powf(-0.5);
    let mut scores = crate::ops::matmul(q, k.swap_dims(2, 3)) * scale;
    if let Some(mask) = mask {
        debug_assert_eq!(mask.dims(), [t, tk], "the mask of this forward");
        scores = scores + mask.clone().unsqueeze::<4>();
    }
    let out = crate::ops::matmul(softmax(scores, 3), v);
    out.swap_dims(1, 2).reshape([b, t, h * hd])
}

/// `[tokens, keys]`: 0 where query `start + i` may see key j (j ≤ start + i), −∞ elsewhere.
pub(super) fn causal_mask(start: usize, tokens: usize, keys: usize, device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..tokens)
        .flat_map(|i| {
            (0..keys).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [tokens, keys]), device)
}

/// `down_proj(silu(gate_proj(x)) ⊙ up_proj(x))` (`mlp`).
#[derive(Module, Debug)]
pub struct SwiGlu {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl SwiGlu {
    pub fn new(src: &mut dyn WeightSource, key: &str, cfg: &LlamaConfig, device: &Device) -> Self {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Self {
            gate_proj: projection(src, &format!("{key}.gate_proj"), d, f, device),
            up_proj: projection(src, &format!("{key}.up_proj"), d, f, device),
            down_proj: projection(src, &format!("{key}.down_proj"), f, d, device),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = crate::ops::silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.gate_proj.export(&format!("{key}.gate_proj"), out);
        self.up_proj.export(&format!("{key}.up_proj"), out);
        self.down_proj.export(&format!("{key}.down_proj"), out);
    }

    pub fn num_params(&self) -> usize {
        self.gate_proj.num_params() + self.up_proj.num_params() + self.down_proj.num_params()
    }
}

/// One decoder layer (`model.layers.{i}`).
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: LlamaAttention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: SwiGlu,
}

impl DecoderLayer {
    pub fn new(src: &mut dyn WeightSource, key: &str, cfg: &LlamaConfig, device: &Device) -> Self {
        let norm = |src: &mut dyn WeightSource, name: &str| {
            RmsNorm::new(src, &format!("{key}.{name}"), cfg, device)
        };
        Self {
            input_layernorm: norm(src, "input_layernorm"),
            self_attn: LlamaAttention::new(src, &format!("{key}.self_attn"), cfg, device),
            post_attention_layernorm: norm(src, "post_attention_layernorm"),
            mlp: SwiGlu::new(src, &format!("{key}.mlp"), cfg, device),
        }
    }

    pub fn forward(&self, x: Tensor<3>, ctx: AttnContext<'_>) -> Tensor<3> {
        let a = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), ctx);
        let x = x + a;
        let f = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + f
    }

    pub fn export(&self, key: &str, out: &mut TensorSink) {
        self.input_layernorm
            .export(&format!("{key}.input_layernorm"), out);
        self.self_attn.export(&format!("{key}.self_attn"), out);
        self.post_attention_layernorm
            .export(&format!("{key}.post_attention_layernorm"), out);
        self.mlp.export(&format!("{key}.mlp"), out);
    }

    pub fn num_params(&self) -> usize {
        self.input_layernorm.num_params()
            + self.self_attn.num_params()
            + self.post_attention_layernorm.num_params()
            + self.mlp.num_params()
    }
}

impl BlockNorm for RmsNorm {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        RmsNorm::forward(self, x)
    }

    fn fresh(&self, src: &mut dyn WeightSource, key: &str, device: &Device) -> Self {
        RmsNorm::of_width(src, key, self.weight.dims()[0], self.eps, device)
    }

    fn export(&self, key: &str, out: &mut TensorSink) {
        RmsNorm::export(self, key, out)
    }

    fn num_params(&self) -> usize {
        RmsNorm::num_params(self)
    }
}

impl PreNormBlock for DecoderLayer {
    type Norm = RmsNorm;
    type Ctx<'a> = AttnContext<'a>;

    fn norm1(&self) -> &RmsNorm {
        &self.input_layernorm
    }

    fn norm2(&self) -> &RmsNorm {
        &self.post_attention_layernorm
    }

    fn attn(&self, x: Tensor<3>, ctx: AttnContext<'_>) -> Tensor<3> {
        self.self_attn.forward(x, ctx)
    }

    fn mlp(&self, x: Tensor<3>) -> Tensor<3> {
        self.mlp.forward(x)
    }

    fn export(&self, key: &str, out: &mut TensorSink) {
        DecoderLayer::export(self, key, out)
    }

    fn num_params(&self) -> usize {
        DecoderLayer::num_params(self)
    }

    fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        vec![
            ("self_attn.q_proj", &mut a.q_proj),
            ("self_attn.k_proj", &mut a.k_proj),
            ("self_attn.v_proj", &mut a.v_proj),
            ("self_attn.o_proj", &mut a.o_proj),
            ("mlp.gate_proj", &mut m.gate_proj),
            ("mlp.up_proj", &mut m.up_proj),
            ("mlp.down_proj", &mut m.down_proj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use crate::model::weights::to_vec;

    /// The composed path that GPUs take computes what flex's fused kernel computes, forward and
    /// backward, for a prefill and for new tokens after a cache, with grouped heads.
    #[test]
    fn composed_attention_matches_the_fused_kernel() {
        let device = Device::flex().autodiff();
        let (b, h, kvh, hd) = (2, 4, 2, 8);
        for (t, s) in [(9, 9), (3, 7), (1, 5)] {
            let data = |n: usize, salt: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| (((i * 7919 + salt * 104_729) % 997) as f32 / 498.0 - 1.0) * 1.5)
                    .collect()
            };
            let input = |shape: [usize; 4], salt: usize| {
                let n = shape.iter().product();
                Tensor::<4>::from_data(TensorData::new(data(n, salt), shape), &device)
                    .require_grad()
            };
            let w = Tensor::<3>::from_data(
                TensorData::new(
                    (0..b * t * h * hd).map(|i| (i % 7) as f32 - 3.0).collect(),
                    [b, t, h * hd],
                ),
                &device,
            );
            let mask = (t > 1).then(|| super::causal_mask(s - t, t, s, &device));
            let run = |fused: bool| {
                let (q, k, v) = (
                    input([b, h, t, hd], 1),
                    input([b, kvh, s, hd], 2),
                    input([b, kvh, s, hd], 3),
                );
                let y = if fused {
                    crate::ops::causal_attention(q.clone(), k.clone(), v.clone())
                } else {
                    super::attend_composed(q.clone(), k.clone(), v.clone(), mask.as_ref())
                };
                let g = (y.clone() * w.clone()).sum().backward();
                let grads = [&q, &k, &v].map(|x| to_vec(x.grad(&g).unwrap()));
                (to_vec(y), grads)
            };
            let (y1, g1) = run(true);
            let (y2, g2) = run(false);
            let err = |a: &[f32], b: &[f32]| {
                assert_eq!(a.len(), b.len());
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
                    .fold(0.0f32, f32::max)
            };
            assert!(
                err(&y1, &y2) < 1e-5,
                "t {t} s {s}: forward {}",
                err(&y1, &y2)
            );
            for (i, (a, c)) in g1.iter().zip(&g2).enumerate() {
                assert!(err(a, c) < 1e-4, "t {t} s {s}: gradient {i} {}", err(a, c));
            }
        }
    }
}
