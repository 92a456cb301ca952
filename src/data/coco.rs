//! COCO's instances format (`instances_*.json` beside an image folder), as detection tools
//! write it: `images` (id, file_name, width, height), `categories` (id, name) and
//! `annotations` (image_id, category_id, bbox `[x, y, w, h]` in pixels, area, iscrowd).
//! Everything a detector or `coco_ap` would trip over later is refused here, with the file and
//! the annotation named: a box outside its image or of no size, an unknown image or category,
//! an image file that is not there, JSON that is not this format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::DataError;

/// One image of the set.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoImage {
    pub id: u64,
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
}

/// One annotated box, `[x, y, w, h]` in pixels; `area` is the annotation's (the segment's, for
/// COCO), `w·h` where it has none.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoBox {
    pub image: u64,
    pub category: u64,
    pub bbox: [f64; 4],
    pub area: f64,
    pub crowd: bool,
}

/// A COCO instances file and the folder its images are in.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoSet {
    pub images: Vec<CocoImage>,
    /// (id, name), in the file's order.
    pub categories: Vec<(u64, String)>,
    pub boxes: Vec<CocoBox>,
}

#[derive(Deserialize)]
struct RawImage {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
struct RawCategory {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct RawAnnotation {
    #[serde(default)]
    id: Option<u64>,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct RawFile {
    images: Vec<RawImage>,
    categories: Vec<RawCategory>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
}

/// Reads `json` and checks it against itself and against `image_dir`.
pub fn read_coco(json: &Path, image_dir: &Path) -> Result<CocoSet, DataError> {
    let bad = |msg: String| DataError::BadFile {
        path: json.to_path_buf(),
        msg,
    };
    let text = std::fs::read(json).map_err(|cause| DataError::Io {
        path: json.to_path_buf(),
        cause,
    })?;
    let raw: RawFile =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not COCO instances JSON ({e})")))?;
    let mut images = Vec::with_capacity(raw.images.len());
    let mut sizes = HashMap::new();
    for im in raw.images {
        let path = image_dir.join(&im.file_name);
        if !path.is_file() {
            return Err(DataError::Missing {
                path,
                hint: format!(" (image {} of {})", im.id, json.display()),
            });
        }
        if sizes.insert(im.id, (im.width, im.height)).is_some() {
            return Err(bad(format!("image id {} appears twice", im.id)));
        }
        images.push(CocoImage {
            id: im.id,
            path,
            width: im.width,
            height: im.height,
        });
    }
    let categories: Vec<(u64, String)> =
        raw.categories.into_iter().map(|c| (c.id, c.name)).collect();
    let mut boxes = Vec::with_capacity(raw.annotations.len());
    for (i, a) in raw.annotations.into_iter().enumerate() {
        let which = a.id.map_or(format!("annotation {i}"), |id| {
            format!("annotation id {id}")
        });
        let Some(&(w, h)) = sizes.get(&a.image_id) else {
            return Err(bad(format!(
                "{which}: image_id {} is not in images",
                a.image_id
            )));
        };
        if !categories.iter().any(|(id, _)| *id == a.category_id) {
            return Err(bad(format!(
                "{which}: category_id {} is not in categories",
                a.category_id
            )));
        }
        let [x, y, bw, bh] = a.bbox;
        if !a.bbox.iter().all(|v| v.is_finite()) || bw <= 0.0 || bh <= 0.0 {
            return Err(bad(format!(
                "{which}: bbox {:?} has no size (w and h must be > 0)",
                a.bbox
            )));
        }
        // Half a pixel of slack: tools round boxes that touch the border.
        if x < -0.5 || y < -0.5 || x + bw > w as f64 + 0.5 || y + bh > h as f64 + 0.5 {
            return Err(bad(format!(
                "{which}: bbox {:?} lies outside its {w}×{h} image {}",
                a.bbox, a.image_id
            )));
        }
        boxes.push(CocoBox {
            image: a.image_id,
            category: a.category_id,
            bbox: a.bbox,
            area: a.area.unwrap_or(bw * bh),
            crowd: a.iscrowd != 0,
        });
    }
    Ok(CocoSet {
        images,
        categories,
        boxes,
    })
}
