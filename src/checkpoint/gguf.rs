//! GGUF files (llama.cpp's format), for the `llama` architecture: metadata, tensors
//! dequantised to f32 (F32, F16, BF16, Q8_0, Q4_0, Q4_1), and the embedded tokenizer.
//!
//! Every count, length and offset in a GGUF file is a stranger's claim; each is checked
//! against the bytes that remain before anything is allocated from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::model::llama::config::LlamaConfig;
use crate::model::weights::NamedTensor;

const MAGIC: &[u8; 4] = b"GGUF";

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetaValue::Float(v) => Some(*v),
            MetaValue::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The element types this reader dequantises (GGML's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Bf16,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::Bf16 => 30,
        }
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
        }
    }
}

/// GGML type names for messages, including the ones not supported.
fn type_name(id: u32) -> String {
    let names = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
        "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
        "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
    ];
    names
        .get(id as usize)
        .map_or_else(|| format!("type {id}"), |n| n.to_string())
}

/// Where one tensor lies in the file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// In torch order (GGUF lists the fastest-varying dimension first; this is reversed).
    pub shape: Vec<usize>,
    pub kind: GgmlType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

/// A parsed GGUF file, its bytes kept for dequantising tensors on demand.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated: needs {n} bytes at offset {}, the file has {}",
                    self.pos,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A count of items of at least `min_size` bytes each, checked against what remains.
    fn count(&mut self, what: &str, min_size: usize) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        if n > (self.remaining() / min_size.max(1)) as u64 {
            return Err(format!(
                "{what} claims {n} entries, more than the {} remaining bytes can hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.count("a string", 1)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("a string at offset {} is not UTF-8", self.pos - n))
    }

    fn value(&mut self, kind: u32, depth: usize) -> std::result::Result<MetaValue, String> {
        let int = |b: &[u8], signed: bool| -> i128 {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(b);
            if signed && b.last().is_some_and(|x| x & 0x80 != 0) {
                buf[b.len()..].fill(0xff);
            }
            i128::from_le_bytes(buf)
        };
        Ok(match kind {
            0 => MetaValue::Int(int(self.take(1)?, false)),
            1 => MetaValue::Int(int(self.take(1)?, true)),
            2 => MetaValue::Int(int(self.take(2)?, false)),
            3 => MetaValue::Int(int(self.take(2)?, true)),
            4 => MetaValue::Int(int(self.take(4)?, false)),
            5 => MetaValue::Int(int(self.take(4)?, true)),
            10 => MetaValue::Int(int(self.take(8)?, false)),
            11 => MetaValue::Int(int(self.take(8)?, true)),
            6 => MetaValue::Float(f32::from_le_bytes(self.take(4)?.try_into().expect("4")) as f64),
            12 => MetaValue::Float(f64::from_le_bytes(self.take(8)?.try_into().expect("8"))),
            7 => MetaValue::Bool(self.take(1)?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested deeper than 2".into());
                }
                let inner = self.u32()?;
                let n = self.count("an array", 1)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

impl GgufFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, bytes)
    }

    /// Parses the header and checks every tensor's byte range; `path` is for messages.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let err = |msg: String| Error::Gguf {
            path: path.to_path_buf(),
            msg,
        };
        let mut r = Reader {
            bytes: &bytes,
            pos: 0,
        };
        if r.take(4).map_err(err)? != MAGIC {
            return Err(err("does not start with the GGUF magic".into()));
        }
        let version = r.u32().map_err(err)?;
        if !(2..=3).contains(&version) {
            return Err(err(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = r
            .count("the tensor count", 8 + 4 + 8 + 4 + 8)
            .map_err(err)?;
        let n_meta = r.count("the metadata count", 8 + 4 + 1).map_err(err)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_meta {
            let key = r.string().map_err(err)?;
            let kind = r.u32().map_err(err)?;
            let value = r
                .value(kind, 0)
                .map_err(|m| err(format!("metadata '{key}': {m}")))?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(err(format!("metadata key '{key}' appears twice")));
            }
        }
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string().map_err(err)?;
            let n_dims = r.u32().map_err(err)? as usize;
            if n_dims == 0 || n_dims > 4 {
                return Err(err(format!(
                    "tensor '{name}' has {n_dims} dimensions (1 to 4 allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64().map_err(err)?);
            }
            let kind = r.u32().map_err(err)?;
            let offset = r.u64().map_err(err)?;
            raw.push((name, dims, kind, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two() && *a <= 1 << 16)
                .ok_or_else(|| err("general.alignment must be a power of two".into()))?
                as usize,
        };
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut names = std::collections::HashSet::new();
        for (name, dims, kind_id, offset) in raw {
            if !names.insert(name.clone()) {
                return Err(err(format!("tensor '{name}' is listed twice")));
            }
            let kind = GgmlType::from_id(kind_id).ok_or_else(|| {
                err(format!(
                    "tensor '{name}' has quantisation type {}, which scalenet cannot dequantise (F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are supported)",
                    type_name(kind_id)
                ))
            })?;
            // Nothing is allocated from these numbers here; the byte range is checked against
            // the file below, so a truncated file is named as such.
            let count = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    err(format!(
                        "tensor '{name}' has dimensions {dims:?} whose product overflows"
                    ))
                })?;
            let (per_block, block_bytes) = kind.block();
            if !(dims[0] as usize).is_multiple_of(per_block) {
                return Err(err(format!(
                    "tensor '{name}': a row of {} elements is not a whole number of {}-element {kind:?} blocks",
                    dims[0], per_block
                )));
            }
            let len = (count / per_block)
                .checked_mul(block_bytes)
                .ok_or_else(|| {
                    err(format!(
                        "tensor '{name}' has dimensions {dims:?} whose size overflows"
                    ))
                })?;
            let start = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(data_start))
                .filter(|s| s.checked_add(len).is_some_and(|e| e <= bytes.len()))
                .ok_or_else(|| {
                    err(format!(
                        "tensor '{name}' ({len} bytes at data offset {offset}) lies beyond the end of the file ({} bytes): truncated?",
                        bytes.len()
                    ))
                })?;
            tensors.push(TensorInfo {
                name,
                shape: dims.iter().rev().map(|&d| d as usize).collect(),
                kind,
                start,
                len,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            bytes,
        })
    }

    /// One tensor's values as f32, row-major in `info.shape`.
    pub fn dequantize(&self, info: &TensorInfo) -> Vec<f32> {
        dequantize(info.kind, &self.bytes[info.start..info.start + info.len])
    }

    fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        self.meta(key)
            .and_then(MetaValue::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| self.err(format!("metadata '{key}' is missing or not an integer")))
    }

    /// The model's config, as a Hugging Face `config.json` object for the Llama layout.
    pub fn llama_config_json(&self) -> Result<Map<String, Value>> {
        let arch = self
            .meta("general.architecture")
            .and_then(MetaValue::as_str)
            .unwrap_or("");
        if arch != "llama" {
            return Err(self.err(format!(
                "general.architecture is '{arch}'; scalenet reads the 'llama' architecture"
            )));
        }
        let heads = self.meta_usize("llama.attention.head_count")?;
        let d = self.meta_usize("llama.embedding_length")?;
        let vocab = match self.meta("llama.vocab_size").and_then(MetaValue::as_u64) {
            Some(v) => v as usize,
            None => match self.meta("tokenizer.ggml.tokens") {
                Some(MetaValue::Array(a)) => a.len(),
                _ => return Err(self.err("neither llama.vocab_size nor tokenizer.ggml.tokens")),
            },
        };
        let head_dim = self
            .meta("llama.attention.key_length")
            .or_else(|| self.meta("llama.rope.dimension_count"))
            .and_then(MetaValue::as_u64)
            .map_or(d / heads.max(1), |v| v as usize);
        let mut cfg = Map::new();
        cfg.insert("architectures".into(), json!(["LlamaForCausalLM"]));
        cfg.insert("model_type".into(), json!("llama"));
        cfg.insert("vocab_size".into(), json!(vocab));
        cfg.insert("hidden_size".into(), json!(d));
        cfg.insert(
            "intermediate_size".into(),
            json!(self.meta_usize("llama.feed_forward_length")?),
        );
        cfg.insert(
            "num_hidden_layers".into(),
            json!(self.meta_usize("llama.block_count")?),
        );
        cfg.insert("num_attention_heads".into(), json!(heads));
        cfg.insert(
            "num_key_value_heads".into(),
            json!(self
                .meta("llama.attention.head_count_kv")
                .and_then(MetaValue::as_u64)
                .map_or(heads, |v| v as usize)),
        );
        cfg.insert("head_dim".into(), json!(head_dim));
        cfg.insert("hidden_act".into(), json!("silu"));
        // f32 in the file; printed as the shortest decimal that reads back to that f32.
        let eps = self
            .meta("llama.attention.layer_norm_rms_epsilon")
            .and_then(MetaValue::as_f64)
            .unwrap_or(1e-5);
        cfg.insert("rms_norm_eps".into(), json!(shortest_f32(eps)));
        let theta = self
            .meta("llama.rope.freq_base")
            .and_then(MetaValue::as_f64)
            .unwrap_or(10000.0);
        cfg.insert("rope_theta".into(), json!(shortest_f32(theta)));
        cfg.insert(
            "max_position_embeddings".into(),
            json!(self
                .meta("llama.context_length")
                .and_then(MetaValue::as_u64)
                .unwrap_or(2048)),
        );
        match self
            .meta("llama.rope.scaling.type")
            .and_then(MetaValue::as_str)
        {
            None | Some("none") => {}
            Some("linear") => {
                let f = self
                    .meta("llama.rope.scaling.factor")
                    .and_then(MetaValue::as_f64)
                    .ok_or_else(|| {
                        self.err("linear rope scaling without llama.rope.scaling.factor")
                    })?;
                cfg.insert(
                    "rope_scaling".into(),
                    json!({"rope_type": "linear", "factor": f}),
                );
            }
            Some(other) => {
                return Err(self.err(format!(
                    "llama.rope.scaling.type '{other}' is not implemented"
                )))
            }
        }
        if let Some(freqs) = self.tensors.iter().find(|t| t.name == "rope_freqs.weight") {
            let factors = self.dequantize(freqs);
            let scaling = llama3_from_rope_factors(&factors, theta, head_dim).ok_or_else(|| {
                self.err("rope_freqs.weight holds rope factors that no llama3 rope_scaling (factor, low/high_freq_factor, original context) reproduces; convert the Hugging Face directory instead")
            })?;
            cfg.insert("rope_scaling".into(), scaling);
        }
        let tied = !self.tensors.iter().any(|t| t.name == "output.weight");
        cfg.insert("tie_word_embeddings".into(), json!(tied));
        for (gguf, hf) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(v) = self.meta(gguf).and_then(MetaValue::as_u64) {
                cfg.insert(hf.into(), json!(v));
            }
        }
        Ok(cfg)
    }

    /// Every tensor under its Hugging Face name, dequantised, with q/k rows put back in
    /// transformers' rotate-half order.
    pub fn llama_tensors(&self, cfg: &LlamaConfig) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::with_capacity(self.tensors.len());
        // Rope factors become `rope_scaling` in the config (see `llama_config_json`).
        for info in self
            .tensors
            .iter()
            .filter(|t| t.name != "rope_freqs.weight")
        {
            let Some(name) = hf_name(&info.name) else {
                return Err(self.err(format!(
                    "tensor '{}' has no place in a Llama model",
                    info.name
                )));
            };
            let mut values = self.dequantize(info);
            if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
                let heads = if name.ends_with("q_proj.weight") {
                    cfg.num_attention_heads
                } else {
                    cfg.num_key_value_heads
                };
                let rows = info.shape[0];
                if info.shape.len() != 2 || rows % heads != 0 || (rows / heads) % 2 != 0 {
                    return Err(self.err(format!(
                        "tensor '{}' has shape {:?}, which does not split into {heads} heads",
                        info.name, info.shape
                    )));
                }
                values = unpermute_rows(&values, heads, rows / heads, info.shape[1]);
            }
            out.push(NamedTensor {
                name,
                shape: info.shape.clone(),
                values,
            });
        }
        Ok(out)
    }

    /// The embedded tokenizer as a `tokenizer.json` document (GPT-2-style byte-level BPE).
    pub fn tokenizer_json(&self) -> Result<Value> {
        let model = self
            .meta("tokenizer.ggml.model")
            .and_then(MetaValue::as_str)
            .unwrap_or("");
        if model != "gpt2" {
            return Err(self.err(format!(
                "tokenizer.ggml.model '{model}' is not supported (byte-level BPE, 'gpt2', is); use the model's tokenizer.json"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            match self.meta(key) {
                Some(MetaValue::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| self.err(format!("'{key}' must be an array of strings"))),
                _ => Err(self.err(format!("'{key}' is missing"))),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match self.meta("tokenizer.ggml.token_type") {
            Some(MetaValue::Array(a)) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let mut vocab = Map::new();
        let mut added = Vec::new();
        for (id, tok) in tokens.iter().enumerate() {
            vocab.insert(tok.clone(), json!(id));
            // 3 = control, 4 = user-defined: matched whole, before BPE.
            let ty = types.get(id).copied().unwrap_or(1);
            if ty == 3 || ty == 4 {
                added.push(json!({
                    "id": id, "content": tok, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": ty == 4, "special": ty == 3,
                }));
            }
        }
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre = self
            .meta("tokenizer.ggml.pre")
            .and_then(MetaValue::as_str)
            .unwrap_or("default");
        // llama.cpp's pre-tokenizer names; SmolLM splits digits one by one before GPT-2's regex.
        let pre_tokenizer = match pre {
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level.clone()]}),
            "gpt-2" | "default" => byte_level.clone(),
            other => {
                return Err(self.err(format!(
                    "tokenizer.ggml.pre '{other}' is not supported (gpt-2, smollm); use the model's tokenizer.json"
                )))
            }
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": byte_level,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            }
        }))
    }
}

/// The llama3 `rope_scaling` that `convert_hf_to_gguf.py` turned into these per-frequency
/// factors (1 for high frequencies, `factor` for low ones, a smooth blend between), found among
/// the settings Llama 3.1-3.3 and their derivatives use; `None` if none reproduces them.
pub fn llama3_from_rope_factors(factors: &[f32], theta: f64, head_dim: usize) -> Option<Value> {
    let factor = factors.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if factors.len() != head_dim / 2 || !(factor.is_finite() && factor >= 1.0) {
        return None;
    }
    for old in [8192.0, 4096.0, 2048.0, 16384.0, 32768.0, 65536.0, 131072.0] {
        for (low, high) in [(1.0, 4.0), (1.0, 2.0), (1.0, 8.0), (2.0, 4.0), (2.0, 8.0)] {
            let fits = factors.iter().enumerate().all(|(i, &got)| {
                let f = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let want = if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                ((got as f64) - want).abs() <= 1e-4 * want
            });
            if fits {
                return Some(json!({
                    "rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": old as u64,
                }));
            }
        }
    }
    None
}

/// The shortest decimal that reads back as the same f32 (GGUF stores f32; configs hold decimals).
fn shortest_f32(v: f64) -> f64 {
    let s = format!("{}", v as f32);
    s.parse().unwrap_or(v)
}

/// llama.cpp's tensor names → transformers' (llama architecture).
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (i, tail) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let hf = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{i}.{hf}"))
}

/// Undoes `convert_hf_to_gguf.py`'s q/k permutation: within each head, GGUF interleaves the
/// two rotary halves (row 2i+j holds transformers' row j·hd/2 + i).
pub fn unpermute_rows(values: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_dim + 2 * i + j) * cols;
                let dst = (h * head_dim + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&values[src..src + cols]);
            }
        }
    }
    out
}

/// Dequantises `data` (a whole number of blocks of `kind`), per GGML's definitions.
pub fn dequantize(kind: GgmlType, data: &[u8]) -> Vec<f32> {
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    match kind {
        GgmlType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        GgmlType::F16 => data.chunks_exact(2).map(h).collect(),
        GgmlType::Bf16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        // d (f16), then 16 bytes: low nibbles are elements 0..16, high nibbles 16..32; x = (q - 8)·d.
        GgmlType::Q4_0 => data
            .chunks_exact(18)
            .flat_map(|b| {
                let d = h(&b[0..2]);
                let qs = &b[2..18];
                let lo = qs.iter().map(move |q| ((q & 0x0f) as i32 - 8) as f32 * d);
                let hi = qs.iter().map(move |q| ((q >> 4) as i32 - 8) as f32 * d);
                lo.chain(hi).collect::<Vec<_>>()
            })
            .collect(),
        // d, m (f16), then nibbles as Q4_0; x = q·d + m.
        GgmlType::Q4_1 => data
            .chunks_exact(20)
            .flat_map(|b| {
                let (d, m) = (h(&b[0..2]), h(&b[2..4]));
                let qs = &b[4..20];
                let lo = qs.iter().map(move |q| (q & 0x0f) as f32 * d + m);
                let hi = qs.iter().map(move |q| (q >> 4) as f32 * d + m);
                lo.chain(hi).collect::<Vec<_>>()
            })
            .collect(),
        // d (f16), then 32 signed bytes; x = q·d.
        GgmlType::Q8_0 => data
            .chunks_exact(34)
            .flat_map(|b| {
                let d = h(&b[0..2]);
                b[2..34]
                    .iter()
                    .map(move |&q| q as i8 as f32 * d)
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}
