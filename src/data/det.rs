//! Detection data: images with boxes and their classes. `--data fmnist-scenes` (and `-mini`)
//! are the segmentation scenes (`scenes.rs`), each visible garment an object of its
//! Fashion-MNIST class; `coco:DIR` reads COCO instances files, `voc:DIR` Pascal VOC folders. Splits are train / validation
//! / test, the test split read only by `eval`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::coco::{read_coco, CocoSet};
use super::scenes::SceneSplit;
use super::seg::{SegDataset, SegSplit};
use super::voc::{read_voc_split, VocImage};
use super::{folder, DataError, FMNIST_CLASSES};

/// One sample: 8-bit pixels `[c, h, w]`, boxes `(x1, y1, x2, y2)` in its pixels, and a class
/// index (0-based, no background) per box.
#[derive(Clone, Debug, PartialEq)]
pub struct DetSample {
    pub pixels: Vec<u8>,
    pub shape: [usize; 3],
    pub boxes: Vec<[f32; 4]>,
    pub labels: Vec<usize>,
    /// Each box's object area in pixels (COCO's `area`: a silhouette's, not the box's), which
    /// sorts objects into small, medium and large for the metric.
    pub areas: Vec<f32>,
    /// Boxes no training targets and no metric counts as hit or miss: COCO's crowd regions,
    /// VOC's difficult objects.
    pub ignore: Vec<bool>,
}

impl DetSample {
    /// An image with no boxes (what `predict` detects on).
    pub fn unlabelled(pixels: Vec<u8>, shape: [usize; 3]) -> Self {
        Self {
            pixels,
            shape,
            boxes: Vec::new(),
            labels: Vec::new(),
            areas: Vec::new(),
            ignore: Vec::new(),
        }
    }

    fn push(&mut self, bbox: [f32; 4], label: usize, area: f32, ignore: bool) {
        self.boxes.push(bbox);
        self.labels.push(label);
        self.areas.push(area);
        self.ignore.push(ignore);
    }
}

/// A COCO file indexed for reading image by image: each image's boxes, and each category id's
/// class index (the file's order).
#[derive(Debug)]
pub struct CocoIndex {
    pub set: CocoSet,
    per_image: Vec<Vec<usize>>,
    class_of: HashMap<u64, usize>,
}

impl CocoIndex {
    pub fn new(set: CocoSet) -> Self {
        let row: HashMap<u64, usize> = set
            .images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.id, i))
            .collect();
        let class_of = set
            .categories
            .iter()
            .enumerate()
            .map(|(k, c)| (c.0, k))
            .collect();
        let mut per_image = vec![Vec::new(); set.images.len()];
        for (b, bx) in set.boxes.iter().enumerate() {
            // read_coco checked every box's image.
            per_image[row[&bx.image]].push(b);
        }
        Self {
            set,
            per_image,
            class_of,
        }
    }

    fn get(&self, i: usize) -> Result<DetSample, DataError> {
        let (pixels, h, w) = folder::decode(&self.set.images[i].path)?;
        let boxes = self.per_image[i].iter().map(|&b| &self.set.boxes[b]);
        let mut sample = DetSample::unlabelled(pixels, [3, h, w]);
        for b in boxes {
            let [x, y, bw, bh] = b.bbox.map(|v| v as f32);
            let k = self.class_of[&b.category];
            sample.push([x, y, x + bw, y + bh], k, b.area as f32, b.crowd);
        }
        Ok(sample)
    }
}

/// The samples of one split.
#[derive(Clone, Debug)]
pub enum DetSplit {
    Scenes(SceneSplit),
    Coco(Arc<CocoIndex>),
    Voc(Arc<VocSplit>),
}

/// A VOC split's annotations and the dataset's class names (each object's `name`).
#[derive(Debug)]
pub struct VocSplit {
    pub images: Vec<VocImage>,
    pub classes: Vec<String>,
}

impl VocSplit {
    fn get(&self, i: usize) -> Result<DetSample, DataError> {
        let a = &self.images[i];
        let (pixels, h, w) = folder::decode(&a.image)?;
        if [h, w] != [a.height, a.width] {
            return Err(DataError::BadFile {
                path: a.image.clone(),
                msg: format!(
                    "is {w}×{h}, but its annotation says {}×{}",
                    a.width, a.height
                ),
            });
        }
        let mut sample = DetSample::unlabelled(pixels, [3, h, w]);
        for o in &a.objects {
            let k = self
                .classes
                .iter()
                .position(|c| *c == o.name)
                .expect("listed");
            let b = o.bbox;
            sample.push(b, k, (b[2] - b[0]) * (b[3] - b[1]), o.difficult);
        }
        Ok(sample)
    }
}

impl DetSplit {
    pub fn len(&self) -> usize {
        match self {
            DetSplit::Scenes(s) => s.len(),
            DetSplit::Coco(c) => c.set.images.len(),
            DetSplit::Voc(v) => v.images.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Result<DetSample, DataError> {
        match self {
            DetSplit::Scenes(s) => {
                let scene = s.scene(i);
                let mut sample = DetSample::unlabelled(scene.pixels, [1, scene.size, scene.size]);
                for o in &scene.objects {
                    let [x, y, w, h] = o.bbox.map(|v| v as f32);
                    let k = o.class as usize - 1;
                    sample.push([x, y, x + w, y + h], k, o.area as f32, false);
                }
                Ok(sample)
            }
            DetSplit::Coco(c) => c.get(i),
            DetSplit::Voc(v) => v.get(i),
        }
    }
}

/// A detection dataset as `--data` names it.
#[derive(Clone, Debug)]
pub struct DetDataset {
    pub spec: String,
    pub train: DetSplit,
    pub val: DetSplit,
    pub test: DetSplit,
    pub classes: Vec<String>,
}

/// Help text for a detector's `--data`.
pub const DET_DATA_HELP: &str = "fmnist-scenes (scenes of Debian's Fashion-MNIST garments, \
each visible garment a box: 10000 train, 1000 val, 1000 test, 96×96), fmnist-scenes-mini (from \
the built-in subset: 1000/200/200), coco:DIR (DIR/annotations/instances_train.json and \
instances_val.json with images in DIR/train/ and DIR/val/, or with \
COCO's 2017 names; val is also the test split), voc:DIR (Pascal VOC: Annotations/*.xml, \
JPEGImages/, ImageSets/Main/{train,val}.txt and optionally test.txt, else val is the test split; \
classes are the objects' names, sorted)";

impl DetDataset {
    pub fn open(spec: &str) -> Result<Self, DataError> {
        if let Some(dir) = spec.strip_prefix("coco:") {
            return Self::coco(spec, Path::new(dir));
        }
        if let Some(dir) = spec.strip_prefix("voc:") {
            return Self::voc(spec, Path::new(dir));
        }
        let seg = SegDataset::open(spec).map_err(|e| match e {
            DataError::Spec { spec, .. } => DataError::Spec {
                msg: format!("unknown detection dataset; use {DET_DATA_HELP}"),
                spec,
            },
            e => e,
        })?;
        let scenes = |s: SegSplit| match s {
            SegSplit::Scenes(s) => Ok(DetSplit::Scenes(s)),
            SegSplit::Folder(..) => Err(DataError::Spec {
                spec: spec.into(),
                msg: format!("has no boxes; use {DET_DATA_HELP}"),
            }),
        };
        Ok(Self {
            spec: spec.into(),
            train: scenes(seg.train)?,
            val: scenes(seg.val)?,
            test: scenes(seg.test)?,
            classes: FMNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn coco(spec: &str, dir: &Path) -> Result<Self, DataError> {
        let open = |split: &str| -> Result<CocoIndex, DataError> {
            let (json, images) = coco_split(dir, split)?;
            Ok(CocoIndex::new(read_coco(&json, &images)?))
        };
        let train = open("train")?;
        let val = Arc::new(open("val")?);
        if train.set.categories != val.set.categories {
            return Err(DataError::Spec {
                spec: spec.into(),
                msg: "the train and val files list different categories".into(),
            });
        }
        Ok(Self {
            spec: spec.into(),
            classes: train.set.categories.iter().map(|c| c.1.clone()).collect(),
            train: DetSplit::Coco(Arc::new(train)),
            test: DetSplit::Coco(val.clone()),
            val: DetSplit::Coco(val),
        })
    }

    fn voc(spec: &str, dir: &Path) -> Result<Self, DataError> {
        let train = read_voc_split(dir, "train")?;
        let val = read_voc_split(dir, "val")?;
        let test = match dir.join("ImageSets/Main/test.txt").is_file() {
            true => Some(read_voc_split(dir, "test")?),
            false => None,
        };
        let mut classes: Vec<String> = [&train, &val]
            .into_iter()
            .chain(test.as_ref())
            .flatten()
            .flat_map(|a| a.objects.iter().map(|o| o.name.clone()))
            .collect();
        classes.sort();
        classes.dedup();
        if classes.is_empty() {
            return Err(DataError::Spec {
                spec: spec.into(),
                msg: "no annotation holds an object".into(),
            });
        }
        let split = |images| {
            DetSplit::Voc(Arc::new(VocSplit {
                images,
                classes: classes.clone(),
            }))
        };
        let val = split(val);
        Ok(Self {
            spec: spec.into(),
            train: split(train),
            test: test.map_or_else(|| val.clone(), split),
            val,
            classes,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

/// A split's instances file and image folder: `instances_{split}.json` and `{split}/`, or
/// COCO's `instances_{split}2017.json` and `{split}2017/`.
fn coco_split(dir: &Path, split: &str) -> Result<(PathBuf, PathBuf), DataError> {
    for suffix in ["", "2017"] {
        let json = dir.join(format!("annotations/instances_{split}{suffix}.json"));
        if json.is_file() {
            return Ok((json, dir.join(format!("{split}{suffix}"))));
        }
    }
    Err(DataError::Missing {
        path: dir.join(format!("annotations/instances_{split}.json")),
        hint: " (nor COCO's instances_*2017.json)".into(),
    })
}
