//! Every parser that a stranger's bytes reach, from bytes, in one place: the fuzz targets in
//! `fuzz/` call these, and `tests/fuzz_regressions.rs` replays what the fuzzers found through
//! the same functions. The contract of each: a typed error or a valid value; never a panic, an
//! abort, or an allocation out of proportion to the input.

use std::path::Path;

use crate::checkpoint::model_dir::ModelConfig;

use crate::checkpoint::safetensors_io::TensorFile;
use crate::data::ImageSet;
use crate::error::Result;

/// A `model.safetensors` file.
pub fn safetensors(bytes: &[u8]) -> Result<usize> {
    Ok(TensorFile::parse(Path::new("fuzz.safetensors"), bytes)?
        .tensors
        .len())
}

/// A `config.json` (plain or grown, `scalenet` block included), read as a timm ViT config and
/// as a transformers Llama config; for a valid one, also the numbers that loading computes from
/// it before reading any weights.
pub fn config(bytes: &[u8]) -> Result<u128> {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(serde_json::Value::Object(raw)) = serde_json::from_str(&text) {
        if let Ok(c) = crate::model::llama::LlamaConfig::from_json(&raw) {
            let _ = (c.min_params(), c.inv_freq().len(), c.to_json());
        }
    }
    let cfg = ModelConfig::parse(Path::new("config.json"), &text)?;
    match &cfg.arch {
        crate::model::arch::ImageArch::Vit(v) => {
            let _ = (v.grid(), v.num_tokens(), v.head_dim(), v.mlp_hidden());
        }
        crate::model::arch::ImageArch::Swin(s) => {
            let _ = (s.stages(), s.num_features());
        }
    }
    Ok(cfg.arch.min_params())
}

/// An IDX pair: the first 4 bytes give the image file's length, the rest is split there.
pub fn idx(bytes: &[u8]) -> std::result::Result<ImageSet, crate::data::DataError> {
    let n = bytes
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let rest = bytes.get(4..).unwrap_or_default();
    let (images, labels) = rest.split_at(n.min(rest.len()));
    let raw = |p: &str, b: &[u8]| crate::data::idx::gunzip_if_gzip(Path::new(p), b.to_vec());
    crate::data::idx::parse(
        Path::new("images.idx"),
        &raw("images.idx", images)?,
        Path::new("labels.idx"),
        &raw("labels.idx", labels)?,
    )
}

/// A CIFAR batch file; the first byte picks CIFAR-10 (even) or CIFAR-100 (odd) records.
pub fn cifar(bytes: &[u8]) -> std::result::Result<ImageSet, crate::data::DataError> {
    let label_bytes = if bytes.first().is_some_and(|b| b % 2 == 1) {
        2
    } else {
        1
    };
    let mut set = ImageSet {
        shape: [3, 32, 32],
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    crate::data::cifar::append_records(
        Path::new("batch.bin"),
        bytes.get(1..).unwrap_or_default(),
        label_bytes,
        &mut set,
    )?;
    Ok(set)
}

/// A JPEG or PNG file as the data path decodes it.
pub fn image(bytes: &[u8]) -> std::result::Result<(usize, usize), crate::data::DataError> {
    let (_, h, w) = crate::data::folder::decode_bytes(Path::new("image"), bytes)?;
    Ok((h, w))
}

/// A GGUF file, as far as loading goes before building the model: header, metadata, the
/// Llama config, every tensor dequantised under its transformers name, and the tokenizer.
pub fn gguf(bytes: &[u8]) -> Result<usize> {
    let path = Path::new("fuzz.gguf");
    let file = crate::checkpoint::gguf::GgufFile::parse(path, bytes.to_vec())?;
    let raw = file.llama_config_json()?;
    let cfg = crate::model::llama::LlamaConfig::from_json(&raw).map_err(|msg| {
        crate::error::Error::Gguf {
            path: path.to_path_buf(),
            msg,
        }
    })?;
    let tensors = file.llama_tensors(&cfg)?;
    let tok = serde_json::to_vec(&file.tokenizer_json()?).expect("JSON serialises");
    let tok = crate::data::tokenizer::TextTokenizer::from_bytes(path, &tok)?;
    tok.check_fits(cfg.vocab_size)?;
    Ok(tensors.len())
}

/// A `tokenizer.json`, then a round trip of a fixed text through it.
pub fn tokenizer(bytes: &[u8]) -> Result<usize> {
    let tok =
        crate::data::tokenizer::TextTokenizer::from_bytes(Path::new("tokenizer.json"), bytes)?;
    let ids = tok.encode("The quick brown fox, 12345 — naïve café.")?;
    tok.decode(&ids)?;
    Ok(ids.len())
}
