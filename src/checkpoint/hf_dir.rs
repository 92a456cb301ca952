//! Hugging Face `transformers` model directories for Llama-family decoders: `config.json`
//! (`LlamaConfig` fields), `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, and `tokenizer.json`. A GGUF file loads through the same
//! door, converted on the way in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde_json::{Map, Value};

use super::gguf::GgufFile;
use super::model_dir::{save_dir, CheckpointSource, CONFIG_FILE, WEIGHTS_FILE};
use super::safetensors_io::{LoadedTensor, TensorFile};
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Error, Result};
use crate::growth::llama::GrownLlama;
use crate::growth::plan::GrowthSpec;
use crate::model::llama::config::LlamaConfig;
use crate::model::llama::Llama;
use crate::network::LanguageModel;

pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Files a transformers directory may carry beside the weights; copied along when we write one.
pub const COMPANION_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Whether `path` holds a language model (a transformers directory or a GGUF file) rather
/// than a timm directory.
pub fn is_language_model(path: &Path) -> bool {
    let Ok(path) = super::hub::resolve(path) else {
        return false;
    };
    let path = path.as_path();
    if path.is_file() {
        return is_gguf(path);
    }
    let Ok(text) = std::fs::read_to_string(path.join(CONFIG_FILE)) else {
        return false;
    };
    serde_json::from_str::<Value>(&text)
        .ok()
        .is_some_and(|v| v.get("model_type").is_some() && v.get("architecture").is_none())
}

pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// A language model as read: config (parsed and as JSON), weights, tokenizer.
pub struct LoadedLlama {
    pub config: LlamaConfig,
    /// `config.json` as read (or converted), so unknown fields survive a round trip.
    pub raw: Map<String, Value>,
    pub model: LanguageModel,
    pub tokenizer: Option<TextTokenizer>,
    /// `tokenizer.json`'s text, to write beside a saved model.
    pub tokenizer_json: Option<Vec<u8>>,
}

/// The parts of a model before it is built: what `load` and `convert` share.
pub struct LlamaParts {
    pub raw: Map<String, Value>,
    pub config: LlamaConfig,
    pub tensors: TensorFile,
    pub tokenizer_json: Option<(PathBuf, Vec<u8>)>,
}

/// Reads a transformers directory or a GGUF file, without building the model.
pub fn read_parts(path: &Path) -> Result<LlamaParts> {
    let path = &super::hub::resolve(path)?;
    if path.is_file() {
        return read_gguf(path);
    }
    if !path.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such model directory or GGUF file",
            ),
        ));
    }
    let config_path = path.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let raw = match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(Error::config(&config_path, "expected a JSON object")),
        Err(cause) => {
            return Err(Error::Json {
                path: config_path,
                cause,
            })
        }
    };
    let config = LlamaConfig::from_json(&raw).map_err(|m| Error::config(&config_path, m))?;
    let tensors = read_weights(path)?;
    let tok_path = path.join(TOKENIZER_FILE);
    let tokenizer_json = match std::fs::read(&tok_path) {
        Ok(b) => Some((tok_path, b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&tok_path, e)),
    };
    Ok(LlamaParts {
        raw,
        config,
        tensors,
        tokenizer_json,
    })
}

fn read_gguf(path: &Path) -> Result<LlamaParts> {
    let file = GgufFile::read(path)?;
    let raw = file.llama_config_json()?;
    let config = LlamaConfig::from_json(&raw).map_err(|m| Error::Gguf {
        path: path.to_path_buf(),
        msg: m,
    })?;
    let mut tensors = BTreeMap::new();
    for t in file.llama_tensors(&config)? {
        tensors.insert(
            t.name,
            LoadedTensor {
                dtype: safetensors::Dtype::F32,
                shape: t.shape,
                values: t.values,
            },
        );
    }
    let tok = serde_json::to_vec(&file.tokenizer_json()?).expect("JSON serialises");
    Ok(LlamaParts {
        raw,
        config,
        tensors: TensorFile {
            path: path.to_path_buf(),
            tensors,
        },
        tokenizer_json: Some((path.to_path_buf(), tok)),
    })
}

/// `model.safetensors`, or every shard named by `model.safetensors.index.json`, as one set.
fn read_weights(dir: &Path) -> Result<TensorFile> {
    let single = dir.join(WEIGHTS_FILE);
    let index_path = dir.join(INDEX_FILE);
    if !index_path.exists() {
        return TensorFile::read(&single);
    }
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let index: Value = serde_json::from_str(&text).map_err(|cause| Error::Json {
        path: index_path.clone(),
        cause,
    })?;
    let Some(map) = index.get("weight_map").and_then(Value::as_object) else {
        return Err(Error::config(&index_path, "no 'weight_map' object"));
    };
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, file) in map {
        let Some(file) = file
            .as_str()
            .filter(|f| !f.contains('/') && !f.contains(".."))
        else {
            return Err(Error::config(
                &index_path,
                format!("'{name}' maps to {file}, not a file name in this directory"),
            ));
        };
        shards
            .entry(file.to_string())
            .or_default()
            .push(name.clone());
    }
    let mut all = BTreeMap::new();
    for (file, names) in shards {
        let shard_path = dir.join(&file);
        if !shard_path.is_file() {
            return Err(Error::config(
                &index_path,
                format!(
                    "names shard '{file}' (for {} tensors, e.g. '{}'), which is missing",
                    names.len(),
                    names[0]
                ),
            ));
        }
        let shard = TensorFile::read(&shard_path)?;
        for name in &names {
            if !shard.tensors.contains_key(name) {
                return Err(Error::config(
                    &index_path,
                    format!("says '{name}' is in {file}, but it is not"),
                ));
            }
        }
        for (name, t) in shard.tensors {
            if all.insert(name.clone(), t).is_some() {
                return Err(Error::Safetensors {
                    path: shard_path,
                    msg: format!("tensor '{name}' is also in another shard"),
                });
            }
        }
    }
    Ok(TensorFile {
        path: index_path,
        tensors: all,
    })
}

/// Reads a Llama model (transformers directory or GGUF file) and builds it on `device`.
pub fn load_llama(path: &Path, device: &Device) -> Result<LoadedLlama> {
    let parts = read_parts(path)?;
    build(parts, device)
}

/// Builds a model from its parts, checking every key and shape, and the tokenizer against the
/// embeddings.
pub fn build(parts: LlamaParts, device: &Device) -> Result<LoadedLlama> {
    let LlamaParts {
        raw,
        config,
        mut tensors,
        tokenizer_json,
    } = parts;
    let config_path = tensors.path.clone();
    // Older checkpoints carry rotary buffers; they are computed, never read.
    tensors
        .tensors
        .retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    if config.tie_word_embeddings {
        // A tied model may still list the head (equal to the embeddings); transformers drops it.
        tensors.tensors.remove("lm_head.weight");
    }
    let held: u128 = tensors
        .tensors
        .values()
        .map(|t| t.values.len() as u128)
        .sum();
    let needed = config.min_params();
    if needed > held.saturating_mul(4).saturating_add(1 << 24) {
        return Err(Error::config(
            &config_path,
            format!("the config implies at least {needed} parameters, but the weights hold only {held} values: the config contradicts the weights"),
        ));
    }
    let growth = match raw.get("scalenet") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let spec: GrowthSpec = serde_json::from_value(v.clone())
                .map_err(|e| Error::config(&config_path, format!("'scalenet' section: {e}")))?;
            spec.validate(config.num_hidden_layers, config.hidden_size)
                .map_err(|m| {
                    Error::config(
                        &config_path,
                        m.replace("model_args depth", "num_hidden_layers"),
                    )
                })?;
            Some(spec)
        }
    };
    let mut src = CheckpointSource::new(tensors);
    let model = match &growth {
        None => LanguageModel::Plain(Llama::new(&config, &mut src, device)),
        Some(spec) => LanguageModel::Grown(GrownLlama::new(&config, spec, &mut src, device)),
    };
    src.finish()?;
    let tokenizer = match &tokenizer_json {
        Some((p, bytes)) => {
            let t = TextTokenizer::from_bytes(p, bytes)?;
            t.check_fits(config.vocab_size)?;
            Some(t)
        }
        None => None,
    };
    Ok(LoadedLlama {
        config,
        raw,
        model,
        tokenizer,
        tokenizer_json: tokenizer_json.map(|(_, b)| b),
    })
}

/// The `config.json` to write: what was read, with the fields this model owns brought up to
/// date (unknown fields such as `torch_dtype` survive).
pub fn config_json(
    raw: &Map<String, Value>,
    config: &LlamaConfig,
    growth: Option<&GrowthSpec>,
) -> Map<String, Value> {
    let mut out = raw.clone();
    // transformers 5 reads rope settings from either place; one source of truth is written.
    out.remove("rope_parameters");
    out.remove("scalenet");
    for (k, v) in config.to_json() {
        out.insert(k, v);
    }
    if let Some(g) = growth {
        out.insert(
            "scalenet".into(),
            serde_json::to_value(g).expect("GrowthSpec serialises"),
        );
    }
    out
}

/// Writes a transformers directory: config (with the `scalenet` block of a grown model),
/// weights (f32) and, when given, `tokenizer.json`.
pub fn save_llama(
    dir: &Path,
    raw: &Map<String, Value>,
    model: &LanguageModel,
    tokenizer_json: Option<&[u8]>,
) -> Result<()> {
    let config = config_json(raw, model.config(), model.growth());
    save_dir(dir, &config, &model.export().tensors)?;
    if let Some(t) = tokenizer_json {
        super::atomic::atomic_write(&dir.join(TOKENIZER_FILE), t)?;
    }
    Ok(())
}
