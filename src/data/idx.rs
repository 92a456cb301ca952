//! The IDX format of MNIST and Fashion-MNIST (`*-images-idx3-ubyte[.gz]`, `*-labels-idx1-ubyte[.gz]`).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, ImageSet};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Reads `{prefix}-images-idx3-ubyte[.gz]` and `{prefix}-labels-idx1-ubyte[.gz]` from `dir`.
pub fn read_split(dir: &Path, prefix: &str) -> Result<ImageSet, DataError> {
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    parse(
        &images,
        &read_maybe_gz(&images)?,
        &labels,
        &read_maybe_gz(&labels)?,
    )
}

/// Parses IDX bytes (already decompressed). Paths are for messages.
pub fn parse(
    images_path: &Path,
    images: &[u8],
    labels_path: &Path,
    labels: &[u8],
) -> Result<ImageSet, DataError> {
    let bad = |p: &Path, msg: String| DataError::BadFile {
        path: p.to_path_buf(),
        msg,
    };
    let be = |b: &[u8], i: usize| {
        u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    };
    if images.len() < 16 || be(images, 0) != IMAGES_MAGIC {
        return Err(bad(
            images_path,
            "not an IDX image file (magic 0x00000803 expected)".into(),
        ));
    }
    if labels.len() < 8 || be(labels, 0) != LABELS_MAGIC {
        return Err(bad(
            labels_path,
            "not an IDX label file (magic 0x00000801 expected)".into(),
        ));
    }
    let (n, h, w) = (
        be(images, 1) as usize,
        be(images, 2) as usize,
        be(images, 3) as usize,
    );
    // The header's numbers are a stranger's: their product may not fit.
    let want = n
        .checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .and_then(|v| v.checked_add(16));
    if want != Some(images.len()) {
        let want = want.map_or("more than 2^64".into(), |b| b.to_string());
        return Err(bad(
            images_path,
            format!(
                "header says {n} images of {h}x{w} ({want} bytes) but the file has {} bytes",
                images.len()
            ),
        ));
    }
    let nl = be(labels, 1) as usize;
    if nl.checked_add(8) != Some(labels.len()) {
        return Err(bad(
            labels_path,
            format!(
                "header says {nl} labels but the file has {} bytes",
                labels.len()
            ),
        ));
    }
    if nl != n {
        return Err(bad(
            labels_path,
            format!("{nl} labels for {n} images in {}", images_path.display()),
        ));
    }
    Ok(ImageSet {
        shape: [1, h, w],
        pixels: images[16..].to_vec(),
        labels: labels[8..].iter().map(|&l| l as usize).collect(),
    })
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(DataError::Missing {
        path: dir.join(format!("{stem}.gz")),
        hint: String::new(),
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        cause: e,
    })?;
    gunzip_if_gzip(path, raw)
}

/// IDX files come raw or gzip'd: the gzip magic decides.
pub fn gunzip_if_gzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        decompress(path, &raw)
    } else {
        Ok(raw)
    }
}

/// Gunzips `raw`; `path` is for messages.
pub fn decompress(path: &Path, raw: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| DataError::BadFile {
            path: path.to_path_buf(),
            msg: format!("gzip data is corrupt or truncated: {e}"),
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(n: u32, h: u32, w: u32) -> (Vec<u8>, Vec<u8>) {
        let mut i = [0x803u32, n, h, w]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<_>>();
        i.extend((0..n * h * w).map(|v| v as u8));
        let mut l = [0x801u32, n]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<_>>();
        l.extend((0..n).map(|v| (v % 10) as u8));
        (i, l)
    }

    #[test]
    fn parses_and_rejects() {
        let p = Path::new("x");
        let (i, l) = idx(3, 2, 2);
        let s = parse(p, &i, p, &l).unwrap();
        assert_eq!((s.len(), s.shape), (3, [1, 2, 2]));
        assert_eq!(s.labels, vec![0, 1, 2]);
        let msg = parse(p, &i[..i.len() - 1], p, &l).unwrap_err().to_string();
        assert!(msg.contains("header says 3 images"), "{msg}");
        let mut bad = i.clone();
        bad[3] = 0x02;
        assert!(parse(p, &bad, p, &l)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let (_, l4) = idx(4, 2, 2);
        assert!(parse(p, &i, p, &l4)
            .unwrap_err()
            .to_string()
            .contains("4 labels for 3 images"));
    }
}
