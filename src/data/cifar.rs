//! CIFAR-10 and CIFAR-100 in their binary format (`cifar-10-batches-bin`, `cifar-100-binary`).

use std::path::{Path, PathBuf};

use super::{DataError, ImageSet};

const PIXELS: usize = 3 * 32 * 32;

/// Reads CIFAR-10 (`data_batch_{1..5}.bin` / `test_batch.bin`) or CIFAR-100 (`train.bin` /
/// `test.bin`, fine labels) from `dir` or its standard sub-folder. Returns (train, test, classes).
pub fn read(dir: &Path, hundred: bool) -> Result<(ImageSet, ImageSet, Vec<String>), DataError> {
    let sub = if hundred {
        "cifar-100-binary"
    } else {
        "cifar-10-batches-bin"
    };
    let root = if dir.join(sub).is_dir() {
        dir.join(sub)
    } else {
        dir.to_path_buf()
    };
    let (train_files, test_file): (Vec<String>, &str) = if hundred {
        (vec!["train.bin".into()], "test.bin")
    } else {
        (
            (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            "test_batch.bin",
        )
    };
    let label_bytes = if hundred { 2 } else { 1 };
    let mut train = ImageSet {
        shape: [3, 32, 32],
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for f in &train_files {
        append(&root.join(f), label_bytes, &mut train)?;
    }
    let mut test = ImageSet {
        shape: [3, 32, 32],
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    append(&root.join(test_file), label_bytes, &mut test)?;
    let names_file = root.join(if hundred {
        "fine_label_names.txt"
    } else {
        "batches.meta.txt"
    });
    let n_classes = if hundred { 100 } else { 10 };
    let classes = std::fs::read_to_string(&names_file)
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .ok()
        .filter(|c| c.len() == n_classes)
        .unwrap_or_else(|| (0..n_classes).map(|i| i.to_string()).collect());
    Ok((train, test, classes))
}

fn append(path: &PathBuf, label_bytes: usize, set: &mut ImageSet) -> Result<(), DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.clone(),
        cause: e,
    })?;
    append_records(path, &raw, label_bytes, set)
}

/// Appends the records of one CIFAR batch file (`label_bytes` 1 for CIFAR-10, 2 for
/// CIFAR-100); `path` is for messages.
pub fn append_records(
    path: &Path,
    raw: &[u8],
    label_bytes: usize,
    set: &mut ImageSet,
) -> Result<(), DataError> {
    let path = &path.to_path_buf();
    let rec = label_bytes + PIXELS;
    if raw.is_empty() || !raw.len().is_multiple_of(rec) {
        return Err(DataError::BadFile {
            path: path.clone(),
            msg: format!(
                "{} bytes is not a whole number of {rec}-byte CIFAR records",
                raw.len()
            ),
        });
    }
    for r in raw.chunks_exact(rec) {
        // CIFAR-100 records are (coarse, fine); we train on the fine label.
        set.labels.push(r[label_bytes - 1] as usize);
        set.pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok(())
}
