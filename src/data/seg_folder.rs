//! Segmentation data in the folders users have: images (JPEG or PNG) beside single-channel PNG
//! masks of the same name, each pixel a class index. A palette PNG is read as its indices, not
//! its colours; a colour (RGB) mask is refused. ADE20K's `reduce_zero_label` (0 = "other"
//! becomes ignored, k becomes k − 1) is applied on reading when asked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::seg_sample::{SegSample, IGNORE_INDEX};
use super::{folder, DataError};

/// One split of a folder dataset: its image files and their masks, in name order.
#[derive(Clone, Debug)]
pub struct SegFolder {
    pub images: Vec<PathBuf>,
    pub masks: Vec<PathBuf>,
    pub reduce_zero_label: bool,
    pub num_classes: usize,
}

const IMAGE_EXTS: [&str; 3] = ["jpg", "jpeg", "png"];

fn stems(dir: &Path, exts: &[&str]) -> Result<BTreeMap<String, PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|cause| match cause.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: dir.into(),
            hint: String::new(),
        },
        _ => DataError::Io {
            path: dir.into(),
            cause,
        },
    })?;
    let mut out = BTreeMap::new();
    for e in entries {
        let p = e
            .map_err(|cause| DataError::Io {
                path: dir.into(),
                cause,
            })?
            .path();
        let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase());
        if ext.is_some_and(|e| exts.contains(&e.as_str())) {
            let stem = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            out.insert(stem, p);
        }
    }
    Ok(out)
}

impl SegFolder {
    /// Pairs each image in `images` with `masks/<same name>.png`; an image without a mask is
    /// an error that names it.
    pub fn scan(
        images: &Path,
        masks: &Path,
        reduce_zero_label: bool,
        num_classes: usize,
    ) -> Result<Self, DataError> {
        let imgs = stems(images, &IMAGE_EXTS)?;
        let anns = stems(masks, &["png"])?;
        if imgs.is_empty() {
            return Err(DataError::Empty {
                path: images.into(),
                msg: "no .jpg or .png images".into(),
            });
        }
        let mut out = Self {
            images: Vec::new(),
            masks: Vec::new(),
            reduce_zero_label,
            num_classes,
        };
        for (stem, img) in imgs {
            let Some(mask) = anns.get(&stem) else {
                return Err(DataError::Missing {
                    path: masks.join(format!("{stem}.png")),
                    hint: format!(" (the mask of {})", img.display()),
                });
            };
            out.images.push(img);
            out.masks.push(mask.clone());
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Sample `i`: the image as RGB, its mask checked against it and against the classes.
    pub fn get(&self, i: usize) -> Result<SegSample, DataError> {
        let (pixels, h, w) = folder::decode(&self.images[i])?;
        let path = &self.masks[i];
        let bytes = std::fs::read(path).map_err(|cause| DataError::Io {
            path: path.clone(),
            cause,
        })?;
        let (mut mask, mh, mw) = read_index_png(path, &bytes)?;
        let bad = |msg: String| DataError::BadFile {
            path: path.clone(),
            msg,
        };
        if [mh, mw] != [h, w] {
            return Err(bad(format!(
                "the mask is {mw}×{mh} but its image {} is {w}×{h}",
                self.images[i].display()
            )));
        }
        if self.reduce_zero_label {
            // mmsegmentation: 0 becomes 255 (ignored), k becomes k − 1, 255 stays ignored.
            mask.iter_mut().for_each(|l| {
                *l = if *l == 0 || *l == IGNORE_INDEX {
                    IGNORE_INDEX
                } else {
                    *l - 1
                }
            });
        }
        if let Some(&l) = mask
            .iter()
            .find(|&&l| l != IGNORE_INDEX && l as usize >= self.num_classes)
        {
            return Err(bad(format!(
                "holds class {l}, but there are {} classes (0..{}) and {IGNORE_INDEX} is ignored",
                self.num_classes,
                self.num_classes - 1
            )));
        }
        Ok(SegSample {
            pixels,
            shape: [3, h, w],
            mask,
        })
    }
}

/// An 8-bit greyscale or palette PNG as its indices: (values, height, width).
pub fn read_index_png(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, usize, usize), DataError> {
    let bad = |msg: String| DataError::BadFile {
        path: path.into(),
        msg,
    };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| bad(format!("not a readable PNG mask ({e})")))?;
    let info = reader.info();
    let (colour, depth, w, h) = (
        info.color_type,
        info.bit_depth,
        info.width as usize,
        info.height as usize,
    );
    match (colour, depth) {
        (png::ColorType::Grayscale | png::ColorType::Indexed, png::BitDepth::Eight) => {}
        (png::ColorType::Rgb | png::ColorType::Rgba, _) => {
            return Err(bad("is a colour (RGB) image where a mask of class indices is expected; convert its colours to indices (a greyscale or palette PNG)".into()))
        }
        _ => return Err(bad(format!("is a {colour:?} PNG of {depth:?} bits; a mask is an 8-bit greyscale or palette PNG"))),
    }
    if w.saturating_mul(h) > 1 << 28 {
        return Err(bad(format!("claims {w}×{h} pixels")));
    }
    let mut buf = vec![0u8; w * h];
    reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("truncated or corrupt PNG ({e})")))?;
    Ok((buf, h, w))
}
