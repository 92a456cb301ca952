//! ImageFolder: one sub-folder per class holding JPEG/PNG files (ImageNet's `train/`, `val/`).

use std::path::{Path, PathBuf};

use super::DataError;

/// Files and labels of one split, with class names in sorted folder order (as torchvision does).
#[derive(Clone, Debug)]
pub struct FolderSplit {
    pub files: Vec<PathBuf>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "JPG", "JPEG", "PNG"];

pub fn scan(root: &Path, classes: Option<&[String]>) -> Result<FolderSplit, DataError> {
    let rd = std::fs::read_dir(root).map_err(|e| DataError::Io {
        path: root.to_path_buf(),
        cause: e,
    })?;
    let mut found: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            msg: "has no class folders (expected ROOT/<class>/<image>.jpg)".into(),
        });
    }
    let classes: Vec<String> = match classes {
        Some(c) => {
            if let Some(extra) = found.iter().find(|f| !c.contains(f)) {
                return Err(DataError::BadFile {
                    path: root.join(extra),
                    msg: "is a class folder that the training split does not have".into(),
                });
            }
            c.to_vec()
        }
        None => found.clone(),
    };
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for name in &found {
        let dir = root.join(name);
        let label = classes
            .iter()
            .position(|c| c == name)
            .expect("checked above");
        let mut imgs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| DataError::Io {
                path: dir.clone(),
                cause: e,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e))
            })
            .collect();
        if imgs.is_empty() {
            return Err(DataError::Empty {
                path: dir,
                msg: "is a class folder with no .jpg/.jpeg/.png images".into(),
            });
        }
        imgs.sort();
        labels.extend(std::iter::repeat_n(label, imgs.len()));
        files.extend(imgs);
    }
    Ok(FolderSplit {
        files,
        labels,
        classes,
    })
}

/// Decodes an image file to 8-bit RGB, `[3, h, w]` channel-major.
pub fn decode(path: &Path) -> Result<(Vec<u8>, usize, usize), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        cause: e,
    })?;
    decode_bytes(path, &bytes)
}

/// Decodes the bytes of a JPEG or PNG file; `path` is for messages. A header may claim any
/// size: at most 16384 px a side and 256 MiB for the decoder, so that decoding, the RGB
/// conversion and our channel-major copy stay under 1 GiB (fuzzing saw 1 GiB from a few bytes
/// with the decoder's default 512 MiB).
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, usize, usize), DataError> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16384);
    limits.max_image_height = Some(16384);
    limits.max_alloc = Some(256 << 20);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    reader.limits(limits);
    let img = reader
        .with_guessed_format()
        .map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            cause: e,
        })?
        .decode()
        .map_err(|e| DataError::BadImage {
            path: path.to_path_buf(),
            // Decoders' messages may span lines; an error is one.
            msg: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.into_raw();
    let mut chw = vec![0u8; 3 * h * w];
    for (i, px) in raw.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = px[c];
        }
    }
    Ok((chw, h, w))
}
