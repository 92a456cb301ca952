//! A Llama-family `config.json` in Hugging Face's vocabulary (`LlamaConfig`), read with
//! transformers' defaults. Switches that change the computation and that this model does not
//! implement are refused by name rather than ignored: a model that loads runs as transformers
//! runs it.

use serde_json::{json, Map, Value};

use crate::model::limits::{MAX_PARAMS, MAX_POSITIONS};

/// How rotary frequencies are rescaled for long contexts (`rope_scaling`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (`"rope_type": "linear"`).
    Linear { factor: f64 },
    /// Llama 3.1/3.2's frequency-dependent rescaling (`"rope_type": "llama3"`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// The architecture of a Llama decoder (`LlamaForCausalLM`).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// One or several ids that end generation.
    pub eos_token_ids: Vec<u32>,
}

/// The model types that share the Llama layout and load through this model.
pub const MODEL_TYPES: &[&str] = &["llama"];

impl LlamaConfig {
    /// Reads the fields of a `config.json` object, with transformers' defaults for absent ones.
    /// The error is a message naming the offending field.
    pub fn from_json(raw: &Map<String, Value>) -> Result<Self, String> {
        if raw.contains_key("architecture") && !raw.contains_key("model_type") {
            return Err("is a timm image model (it names an 'architecture'); this command needs a language model (a transformers directory with model_type \"llama\", or a GGUF file)".into());
        }
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        if !MODEL_TYPES.contains(&model_type) {
            return Err(format!(
                "model_type '{model_type}' is not supported (scalenet runs the Llama layout: model_type \"llama\", e.g. Llama 2/3, TinyLlama, SmolLM)"
            ));
        }
        let usize_field = |name: &str, default: Option<usize>| -> Result<usize, String> {
            match raw.get(name) {
                None | Some(Value::Null) => default.ok_or_else(|| format!("'{name}' is missing")),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("'{name}' must be a non-negative integer, not {v}")),
            }
        };
        let float_field = |name: &str, default: f64| -> Result<f64, String> {
            match raw.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("'{name}' must be a finite number, not {v}")),
            }
        };
        let flag = |name: &str| raw.get(name).and_then(Value::as_bool).unwrap_or(false);
        for name in ["attention_bias", "mlp_bias"] {
            if flag(name) {
                return Err(format!(
                    "'{name}': true is not implemented (Llama layers have no biases)"
                ));
            }
        }
        if let Some(act) = raw.get("hidden_act").filter(|v| !v.is_null()) {
            if act.as_str() != Some("silu") {
                return Err(format!(
                    "'hidden_act' {act} is not implemented (only \"silu\")"
                ));
            }
        }
        if raw.get("sliding_window").is_some_and(|v| !v.is_null()) {
            return Err("'sliding_window' is not implemented (full causal attention only)".into());
        }
        let hidden_size = usize_field("hidden_size", Some(4096))?;
        let heads = usize_field("num_attention_heads", Some(32))?;
        let kv_heads = usize_field("num_key_value_heads", Some(heads))?;
        let head_dim = usize_field("head_dim", Some(hidden_size / heads.max(1)))?;
        // transformers 5 moves rope settings into `rope_parameters`.
        let rope = raw
            .get("rope_parameters")
            .or_else(|| raw.get("rope_scaling"))
            .filter(|v| !v.is_null());
        let rope_theta = match rope.and_then(|r| r.get("rope_theta")) {
            Some(t) => t
                .as_f64()
                .ok_or_else(|| format!("'rope_parameters.rope_theta' must be a number, not {t}"))?,
            None => float_field("rope_theta", 10000.0)?,
        };
        let cfg = Self {
            vocab_size: usize_field("vocab_size", Some(32000))?,
            hidden_size,
            intermediate_size: usize_field("intermediate_size", Some(11008))?,
            num_hidden_layers: usize_field("num_hidden_layers", Some(32))?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: float_field("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling: parse_rope_scaling(rope)?,
            max_position_embeddings: usize_field("max_position_embeddings", Some(2048))?,
            tie_word_embeddings: flag("tie_word_embeddings"),
            bos_token_id: raw
                .get("bos_token_id")
                .and_then(Value::as_u64)
                .map(|v| v as u32),
            eos_token_ids: match raw.get("eos_token_id") {
                Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as u32)
                    .collect(),
                _ => Vec::new(),
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A new model's `config.json` and config from `--model-arg`s (`scalenet init --arch llama`):
    /// transformers' field names and defaults, except that the sizes must be given, since
    /// transformers' defaults are a 7B model.
    pub fn for_init(args: &Map<String, Value>) -> Result<(Map<String, Value>, Self), String> {
        let sizes = [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        ];
        let missing: Vec<&str> = sizes
            .into_iter()
            .filter(|s| !args.contains_key(*s))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "a new Llama needs its sizes: give --model-arg {}=... (e.g. vocab_size=8192 hidden_size=256 intermediate_size=1024 num_hidden_layers=4 num_attention_heads=4)",
                missing.join("=... --model-arg ")
            ));
        }
        let mut raw = Map::new();
        raw.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
        raw.insert("model_type".into(), "llama".into());
        raw.insert("initializer_range".into(), 0.02.into());
        // `scalenet tokenizer train` puts <|endoftext|> at id 0.
        raw.insert("bos_token_id".into(), 0.into());
        raw.insert("eos_token_id".into(), 0.into());
        raw.extend(args.iter().map(|(k, v)| (k.clone(), v.clone())));
        let cfg = Self::from_json(&raw)?;
        Ok((raw, cfg))
    }

    /// Sizes that cannot build a model, or would build an absurd one.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("'{name}' must be positive"));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "'num_attention_heads' {} is not a multiple of 'num_key_value_heads' {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "'head_dim' {} must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 || self.rope_theta <= 0.0 {
            return Err("'rms_norm_eps' and 'rope_theta' must be positive".into());
        }
        if self.num_hidden_layers > MAX_POSITIONS {
            return Err(format!(
                "'num_hidden_layers' {} is more than the {} scalenet accepts",
                self.num_hidden_layers, MAX_POSITIONS
            ));
        }
        let n = self.min_params();
        if n > MAX_PARAMS {
            return Err(format!(
                "these sizes (vocab_size {}, hidden_size {}, intermediate_size {}, num_hidden_layers {}) imply at least {n} parameters, more than the {MAX_PARAMS} scalenet accepts",
                self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers
            ));
        }
        Ok(())
    }

    /// Parameters the config implies (saturating, so that lying sizes cannot overflow).
    pub fn min_params(&self) -> u128 {
        let [v, d, f, hd] = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.head_dim,
        ]
        .map(|x| x as u128);
        let (h, kv) = (
            self.num_attention_heads as u128,
            self.num_key_value_heads as u128,
        );
        let attn = d
            .saturating_mul(hd)
            .saturating_mul(h.saturating_mul(2).saturating_add(kv.saturating_mul(2)));
        let mlp = d.saturating_mul(f).saturating_mul(3);
        let layer = attn.saturating_add(mlp).saturating_add(2 * d);
        let embed = v.saturating_mul(d);
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed
            .saturating_add(head)
            .saturating_add(layer.saturating_mul(self.num_hidden_layers as u128))
            .saturating_add(d)
    }

    /// The fields this model interprets, as `config.json` spells them (for writing).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("architectures".into(), json!(["LlamaForCausalLM"]));
        out.insert("model_type".into(), json!("llama"));
        out.insert("vocab_size".into(), json!(self.vocab_size));
        out.insert("hidden_size".into(), json!(self.hidden_size));
        out.insert("intermediate_size".into(), json!(self.intermediate_size));
        out.insert("num_hidden_layers".into(), json!(self.num_hidden_layers));
        out.insert(
            "num_attention_heads".into(),
            json!(self.num_attention_heads),
        );
        out.insert(
            "num_key_value_heads".into(),
            json!(self.num_key_value_heads),
        );
        out.insert("head_dim".into(), json!(self.head_dim));
        out.insert("hidden_act".into(), json!("silu"));
        out.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        out.insert("rope_theta".into(), json!(self.rope_theta));
        out.insert(
            "rope_scaling".into(),
            match &self.rope_scaling {
                RopeScaling::None => Value::Null,
                RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                } => json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": *original_max_position_embeddings as u64,
                }),
            },
        );
        out.insert(
            "max_position_embeddings".into(),
            json!(self.max_position_embeddings),
        );
        out.insert(
            "tie_word_embeddings".into(),
            json!(self.tie_word_embeddings),
        );
        out.insert("attention_bias".into(), json!(false));
        out.insert("mlp_bias".into(), json!(false));
        if let Some(b) = self.bos_token_id {
            out.insert("bos_token_id".into(), json!(b));
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                out.insert("eos_token_id".into(), json!(one));
            }
            many => {
                out.insert("eos_token_id".into(), json!(many));
            }
        }
        out
    }

    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// transformers' `_compute_default_rope_parameters` / `_compute_llama3_parameters` /
    /// `_compute_linear_scaling_rope_parameters`: one inverse frequency per rotated pair,
    /// in f32 as transformers computes them.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base: Vec<f32> = (0..dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / dim as f32;
                (1.0 / (self.rope_theta.powf(exponent as f64))) as f32
            })
            .collect();
        match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let f = f as f64;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                        if medium {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            ((1.0 - smooth) * scaled / factor + smooth * scaled) as f32
                        } else {
                            scaled as f32
                        }
                    })
                    .collect()
            }
        }
    }
}

fn parse_rope_scaling(rope: Option<&Value>) -> Result<RopeScaling, String> {
    let Some(r) = rope else {
        return Ok(RopeScaling::None);
    };
    let kind = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |name: &str| -> Result<f64, String> {
        r.get(name)
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| {
                format!("'rope_scaling.{name}' must be a positive number for rope_type {kind}")
            })
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => {
            let s = RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            };
            if let RopeScaling::Llama3 {
                low_freq_factor: lo,
                high_freq_factor: hi,
                ..
            } = s
            {
                if hi <= lo {
                    return Err(
                        "'rope_scaling': high_freq_factor must exceed low_freq_factor".into(),
                    );
                }
            }
            Ok(s)
        }
        other => Err(format!(
            "'rope_scaling' of type '{other}' is not implemented (default, linear and llama3 are)"
        )),
    }
}
