//! Models by hub id, as the field names them: `org/name`, `org/name@revision`, timm's
//! `hf-hub:org/name`, and `org/name:FILE.gguf` for one file of a repository. A local path
//! always wins when it exists. Otherwise the id is looked up in the Hugging Face cache, in the
//! layout `huggingface_hub` writes (`models--org--name/refs/REV` holds a commit, whose files are
//! in `snapshots/COMMIT/`), so whatever Python already downloaded is used offline; what is not
//! there is downloaded (`checkpoint::download`) unless `HF_HUB_OFFLINE` forbids it.

use std::collections::HashMap;
use std::sync::Mutex;

use std::path::{Path, PathBuf};

use super::hub_id::is_commit;
pub use super::hub_id::HubId;
use crate::error::{Error, Result};

/// The Hugging Face cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`, as `huggingface_hub` finds it.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = var("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    let home = var("HOME")?;
    Some(PathBuf::from(home).join(".cache/huggingface/hub"))
}

/// Ids resolved in this process: a command asks more than once (what kind of model, then
/// its files), and a download happens once.
static RESOLVED: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// What a model argument names: the path itself when it exists or is not a hub id, else the
/// hub id's snapshot (or file) in the local cache, downloaded first if it is not there.
pub fn resolve(spec: &Path) -> Result<PathBuf> {
    if spec.exists() {
        return Ok(spec.to_path_buf());
    }
    let Some(id) = spec.to_str().and_then(HubId::parse) else {
        return Ok(spec.to_path_buf());
    };
    let mut memo = RESOLVED.lock().unwrap_or_else(|e| e.into_inner());
    let memo = memo.get_or_insert_with(HashMap::new);
    if let Some(path) = memo.get(&id.to_string()) {
        return Ok(path.clone());
    }
    let cache = cache_dir().ok_or_else(|| Error::Hub {
        id: id.to_string(),
        msg: "not a local path, and no Hugging Face cache (set HF_HUB_CACHE or HOME)".into(),
    })?;
    let path = match cached(&id, &cache) {
        Ok(path) => path,
        Err(e) if super::download::offline() => return Err(offline(e)),
        Err(_) => {
            super::download::download(&id, &cache)?;
            cached(&id, &cache)?
        }
    };
    memo.insert(id.to_string(), path.clone());
    Ok(path)
}

/// The cache's answer, with the reason the hub was not asked.
fn offline(e: Error) -> Error {
    match e {
        Error::Hub { id, msg } => Error::Hub {
            id,
            msg: format!("{msg}; HF_HUB_OFFLINE is set, so nothing is downloaded"),
        },
        e => e,
    }
}

/// The snapshot (or file) of `id` in `cache`.
pub fn cached(id: &HubId, cache: &Path) -> Result<PathBuf> {
    let err = |msg: String| Error::Hub {
        id: id.to_string(),
        msg,
    };
    let repo = cache.join(id.folder());
    if !repo.is_dir() {
        return Err(err(format!(
            "not a local path, and not in the Hugging Face cache ({})",
            repo.display()
        )));
    }
    let commit = if is_commit(&id.revision) {
        id.revision.clone()
    } else {
        let refs = repo.join("refs").join(&id.revision);
        let text = std::fs::read_to_string(&refs).map_err(|_| {
            err(format!(
                "revision '{}' is not in the cache ({} is missing)",
                id.revision,
                refs.display()
            ))
        })?;
        text.trim().to_string()
    };
    let snapshot = repo.join("snapshots").join(&commit);
    if !is_commit(&commit) || !snapshot.is_dir() {
        return Err(err(format!(
            "the cache names commit '{commit}' for '{}', but has no snapshot {}",
            id.revision,
            snapshot.display()
        )));
    }
    match &id.file {
        None if complete(&snapshot) => Ok(snapshot),
        None => Err(err(format!(
            "the cached snapshot {} lacks config.json or the weights",
            snapshot.display()
        ))),
        Some(f) => {
            let path = snapshot.join(f);
            path.is_file().then_some(path).ok_or_else(|| {
                err(format!(
                    "{f} is not in the cached snapshot {}",
                    snapshot.display()
                ))
            })
        }
    }
}

/// Whether a snapshot holds a model: its config and its weights (one file, or an index; a
/// download that broke off has them only once it finished).
fn complete(snapshot: &Path) -> bool {
    let has = |f: &str| snapshot.join(f).is_file();
    has("config.json") && (has("model.safetensors") || has("model.safetensors.index.json"))
}
