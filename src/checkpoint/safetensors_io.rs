//! Reading and writing `.safetensors` files with errors that name the file and the problem.
//! Float tensors of any width are read as f32, the dtype scalenet computes in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, TensorView};
use safetensors::SafeTensors;

use super::atomic::atomic_write;
use crate::error::{Error, Result};
use crate::model::weights::NamedTensor;

/// One tensor read from a file: its original dtype, shape and f32 values.
#[derive(Clone, Debug)]
pub struct LoadedTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// All tensors of one file, by name.
#[derive(Debug)]
pub struct TensorFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, LoadedTensor>,
}

impl TensorFile {
    /// Reads and validates a whole file. Non-float tensors are an error.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &bytes)
    }

    /// Validates and converts the bytes of a safetensors file; `path` is for messages.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            msg: describe(&e, bytes.len()),
        })?;
        if let Some(key) = duplicate_key(bytes) {
            return Err(Error::Safetensors {
                path: path.to_path_buf(),
                msg: format!("the header names tensor '{key}' twice"),
            });
        }
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if is_stale_buffer(&name) {
                continue;
            }
            let values = to_f32(&view).ok_or_else(|| Error::BadDtype {
                path: path.to_path_buf(),
                key: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            tensors.insert(
                name,
                LoadedTensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// Removes and returns one tensor, or says which file lacks it.
    pub fn take(&mut self, key: &str) -> Result<LoadedTensor> {
        self.tensors.remove(key).ok_or_else(|| Error::Keys {
            path: self.path.clone(),
            missing: vec![key.to_string()],
            unexpected: vec![],
        })
    }
}

/// A name that the header (already parsed and checked by `SafeTensors::deserialize`) holds
/// twice. The JSON map keeps one of them silently, and two readers may keep different ones.
fn duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct FirstRepeat;
    impl<'de> Visitor<'de> for FirstRepeat {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            // The whole map is read: serde_json fails a visitor that stops early.
            let (mut seen, mut repeat) = (std::collections::HashSet::new(), None);
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) && repeat.is_none() {
                    repeat = Some(key);
                }
            }
            Ok(repeat)
        }
    }
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(n).ok()?)?)?;
    serde_json::Deserializer::from_slice(header)
        .deserialize_map(FirstRepeat)
        .ok()
        .flatten()
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    let pairs2 = || data.chunks_exact(2).map(|c| [c[0], c[1]]);
    Some(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => pairs2()
            .map(|b| half::f16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::BF16 => pairs2()
            .map(|b| half::bf16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        _ => return None,
    })
}

fn describe(e: &SafeTensorError, file_len: usize) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => format!("file is too short ({file_len} bytes) to hold a header"),
        SafeTensorError::InvalidHeaderLength => {
            "header length points past the end of the file (truncated or not safetensors)".into()
        }
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization
        | SafeTensorError::JsonError(_) => "header is not valid safetensors JSON".into(),
        SafeTensorError::HeaderTooLarge => "header is larger than 100 MB".into(),
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "tensor data does not match the header's offsets ({file_len} bytes in the file; truncated?)"
        ),
        SafeTensorError::InvalidOffset(name) => format!("offsets of tensor '{name}' point outside the data"),
        SafeTensorError::TensorInvalidInfo => "a tensor's dtype, shape and offsets disagree".into(),
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        other => other.to_string(),
    }
}

/// Reads `path` and hands tensor `key` to `f`; errors name the file and the key.
fn with_tensor<T>(
    path: &Path,
    key: &str,
    f: impl FnOnce(&TensorView<'_>) -> Result<T>,
) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        msg: describe(&e, bytes.len()),
    })?;
    let view = st.tensor(key).map_err(|_| Error::Keys {
        path: path.to_path_buf(),
        missing: vec![key.to_string()],
        unexpected: vec![],
    })?;
    f(&view)
}

/// Buffers that timm computes and no longer saves (Swin's `relative_position_index`, an int64
/// table, and `attn_mask`), found in checkpoints written by older timm versions. scalenet computes
/// them too, so they are skipped on reading, as timm's `checkpoint_filter_fn` skips them.
fn is_stale_buffer(name: &str) -> bool {
    name.ends_with(".relative_position_index") || name.ends_with(".attn_mask")
}

/// Reads the float tensor `key` of a safetensors file that may also hold other dtypes (a
/// fixture's `io.safetensors` holds integer ids beside f32 logits).
pub fn read_float_tensor(path: &Path, key: &str) -> Result<LoadedTensor> {
    with_tensor(path, key, |view| {
        let values = to_f32(view).ok_or_else(|| Error::BadDtype {
            path: path.to_path_buf(),
            key: key.to_string(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        Ok(LoadedTensor {
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            values,
        })
    })
}

/// Reads the integer tensor `key` (i64 or i32, as token ids come) of a safetensors file.
pub fn read_int_tensor(path: &Path, key: &str) -> Result<(Vec<usize>, Vec<i64>)> {
    with_tensor(path, key, |view| read_ids(path, key, view))
}

fn read_ids(path: &Path, key: &str, view: &TensorView<'_>) -> Result<(Vec<usize>, Vec<i64>)> {
    let data = view.data();
    let values = match view.dtype() {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("chunk of 4")) as i64)
            .collect(),
        other => {
            return Err(Error::BadInput {
                path: path.to_path_buf(),
                msg: format!(
                    "tensor '{key}' has dtype {other:?}; expected token ids as i64 or i32"
                ),
            })
        }
    };
    Ok((view.shape().to_vec(), values))
}

/// Writes f32 tensors to `path` atomically (temporary file, then rename).
pub fn write_tensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    let bytes = serialize(tensors).map_err(|msg| Error::Safetensors {
        path: path.to_path_buf(),
        msg,
    })?;
    atomic_write(path, &bytes)
}

/// Serialises f32 tensors with torch's metadata (`{"format": "pt"}`), as `save_file` does.
pub fn serialize(tensors: &[NamedTensor]) -> std::result::Result<Vec<u8>, String> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let b = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name.clone(), t.shape.clone(), b)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("tensor '{name}': {e}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let metadata = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    safetensors::tensor::serialize(views, &metadata).map_err(|e| e.to_string())
}

#[cfg(test)]
mod duplicate_tests {
    #[test]
    fn a_repeated_name_is_found() {
        // The repeat is not the last entry: the rest of the map must still be read.
        let h = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(h);
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(super::duplicate_key(&bytes), Some("a".to_string()));
    }
}
