//! Pascal VOC detection folders: `Annotations/<id>.xml` (the image's file name and size, and
//! per object its class name, `difficult` flag and `bndbox` in pixels), `JPEGImages/`, and the
//! splits in `ImageSets/Main/{train,val,test}.txt` (one id per line; test falls back to val).
//! Every file is checked as it is read: one clear line per fault, naming file and object.

use std::path::{Path, PathBuf};

use xml::reader::{EventReader, XmlEvent};

use super::DataError;

/// One annotated object: `(x1, y1, x2, y2)` in pixels as the file gives them.
#[derive(Clone, Debug, PartialEq)]
pub struct VocObject {
    pub name: String,
    pub bbox: [f32; 4],
    /// VOC's hard cases: scored as neither hit nor miss, not trained on.
    pub difficult: bool,
}

/// One annotation file and the image it names.
#[derive(Clone, Debug, PartialEq)]
pub struct VocImage {
    pub image: PathBuf,
    pub width: usize,
    pub height: usize,
    pub objects: Vec<VocObject>,
}

/// The text of every element, keyed by its path (`annotation/object/bndbox/xmin`), in order.
fn elements(xml: &Path, bytes: &[u8]) -> Result<Vec<(String, String)>, DataError> {
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for ev in EventReader::new(bytes) {
        let ev = ev.map_err(|e| DataError::BadFile {
            path: xml.to_path_buf(),
            msg: format!("not well-formed XML ({e})"),
        })?;
        match ev {
            XmlEvent::StartElement { name, .. } => {
                stack.push(name.local_name);
                out.push((stack.join("/"), String::new()));
            }
            XmlEvent::EndElement { .. } => {
                stack.pop();
            }
            XmlEvent::Characters(t) => {
                if let Some(last) = out.last_mut().filter(|l| l.0 == stack.join("/")) {
                    last.1.push_str(t.trim());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Reads `xml`, its image looked for in `image_dir` under the file name it gives (or, where
/// that file is absent, the XML's own name with .jpg, .jpeg or .png).
pub fn read_voc_xml(xml: &Path, image_dir: &Path) -> Result<VocImage, DataError> {
    let bad = |msg: String| DataError::BadFile {
        path: xml.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(xml).map_err(|cause| DataError::Io {
        path: xml.to_path_buf(),
        cause,
    })?;
    let els = elements(xml, &bytes)?;
    let get = |key: &str| els.iter().find(|e| e.0 == key).map(|e| e.1.as_str());
    let num = |key: &str, v: Option<&str>| -> Result<f32, DataError> {
        let v = v.ok_or_else(|| bad(format!("no <{key}>")))?;
        v.parse::<f32>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| bad(format!("<{key}> is '{v}', not a number")))
    };
    let width = num("size/width", get("annotation/size/width"))? as usize;
    let height = num("size/height", get("annotation/size/height"))? as usize;
    let file = get("annotation/filename").ok_or_else(|| bad("no <filename>".into()))?;
    let image = find_image(xml, image_dir, file)?;
    let mut objects = Vec::new();
    let starts = els
        .iter()
        .enumerate()
        .filter(|(_, e)| e.0 == "annotation/object");
    let starts: Vec<usize> = starts.map(|(i, _)| i).collect();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(els.len());
        let field = |f: &str| {
            let key = format!("annotation/object/{f}");
            els[s..end]
                .iter()
                .find(|e| e.0 == key)
                .map(|e| e.1.as_str())
        };
        let name = field("name").filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| bad(format!("object {k} has no <name>")))?;
        let mut b = [0f32; 4];
        for (v, c) in b.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
            *v = num(&format!("object {k}'s {c}"), field(&format!("bndbox/{c}")))?;
        }
        let inside = |lo: f32, hi: f32, side: usize| 0.0 <= lo && lo < hi && hi <= side as f32;
        if !(inside(b[0], b[2], width) && inside(b[1], b[3], height)) {
            return Err(bad(format!(
                "object {k} ({name}) has box {b:?}, outside the {width}×{height} image or of no size"
            )));
        }
        objects.push(VocObject {
            name: name.to_string(),
            bbox: b,
            difficult: field("difficult") == Some("1"),
        });
    }
    Ok(VocImage {
        image,
        width,
        height,
        objects,
    })
}

fn find_image(xml: &Path, dir: &Path, file: &str) -> Result<PathBuf, DataError> {
    let named = dir.join(file);
    if named.is_file() {
        return Ok(named);
    }
    let stem = xml.file_stem().map(|s| s.to_string_lossy().to_string());
    for ext in ["jpg", "jpeg", "png"] {
        let p = dir.join(format!("{}.{ext}", stem.as_deref().unwrap_or("")));
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::Missing {
        path: named,
        hint: format!(" (the image {} names)", xml.display()),
    })
}

/// The annotations of `split` (`ImageSets/Main/{split}.txt`) in `dir`.
pub fn read_voc_split(dir: &Path, split: &str) -> Result<Vec<VocImage>, DataError> {
    let list = dir.join(format!("ImageSets/Main/{split}.txt"));
    let text = std::fs::read_to_string(&list).map_err(|cause| match cause.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: list.clone(),
            hint: " (a VOC folder lists each split's ids there)".into(),
        },
        _ => DataError::Io {
            path: list.clone(),
            cause,
        },
    })?;
    let images = dir.join("JPEGImages");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|id| read_voc_xml(&dir.join(format!("Annotations/{id}.xml")), &images))
        .collect()
}
