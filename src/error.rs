//! Typed errors of the library. Every variant that concerns a file names it, so the
//! binary can print one line that tells the user which file is wrong and how.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while reading configs, checkpoints and inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file system refused an operation (missing file, permission, full disk).
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A JSON file could not be parsed.
    #[error("{}: not valid JSON: {cause}", path.display())]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },

    /// A configuration is well-formed JSON but says something impossible or unsupported.
    #[error("{}: {msg}", path.display())]
    BadConfig { path: PathBuf, msg: String },

    /// A model configuration (not tied to a file) is invalid, e.g. from `--model-arg`.
    #[error("invalid model configuration: {0}")]
    InvalidModel(String),

    /// `architecture` names no model family scalenet knows.
    #[error("unknown architecture '{name}'{hint}")]
    UnknownArchitecture { name: String, hint: String },

    /// A safetensors file is truncated, has a garbage header, or has offsets out of range.
    #[error("{}: not a valid safetensors file: {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },

    /// A GGUF file is truncated, lies about its sizes, or holds what scalenet cannot read.
    #[error("{}: not a readable GGUF file: {msg}", path.display())]
    Gguf { path: PathBuf, msg: String },

    /// A tokenizer could not be read, or contradicts its model.
    #[error("{}: tokenizer: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },

    /// A tensor has a dtype that cannot hold model weights or inputs.
    #[error("{}: tensor '{key}' has dtype {dtype}; expected a float (f32, f16, bf16 or f64)", path.display())]
    BadDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },

    /// A tensor has a different shape from the one the configuration implies.
    #[error("{}: tensor '{key}' has shape {got:?}, but the model expects {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// Tensors the model needs are absent and/or tensors the model does not know are present.
    #[error("{}: {}", path.display(), describe_keys(missing, unexpected))]
    Keys {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
    },

    /// An input tensor does not fit the model (channels, image size, rank).
    #[error("{}: {msg}", path.display())]
    BadInput { path: PathBuf, msg: String },

    /// Refused to overwrite something the user may want to keep.
    #[error("{}: {msg}", path.display())]
    Refused { path: PathBuf, msg: String },

    /// A dataset could not be read.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    /// `--device` names a device that this build or this machine cannot use.
    #[error("--device {name}: {msg}")]
    Device { name: String, msg: String },

    /// A computation failed inside the tensor backend.
    #[error("tensor backend: {0}")]
    Backend(String),

    /// A model named by hub id (`org/name`) that cannot be had.
    #[error("{id}: {msg}")]
    Hub { id: String, msg: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadConfig {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

fn describe_keys(missing: &[String], unexpected: &[String]) -> String {
    let list = |keys: &[String]| {
        const SHOWN: usize = 8;
        let mut s = keys
            .iter()
            .take(SHOWN)
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ");
        if keys.len() > SHOWN {
            s.push_str(&format!(" and {} more", keys.len() - SHOWN));
        }
        s
    };
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "missing {} tensor(s): {}",
            missing.len(),
            list(missing)
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "unexpected {} tensor(s): {}",
            unexpected.len(),
            list(unexpected)
        ));
    }
    parts.join("; ")
}
