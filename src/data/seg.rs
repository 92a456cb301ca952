//! Segmentation data: images with a class index per pixel. `--data fmnist-scenes` (Debian's
//! Fashion-MNIST garments) and `fmnist-scenes-mini` (the built-in subset) draw scenes
//! (`scenes.rs`); splits are train / validation / test, the test split read only by `eval`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::scenes::{scene_classes, SceneConfig, SceneSplit};
use super::seg_folder::SegFolder;
pub use super::seg_sample::{SegSample, IGNORE_INDEX};
use super::{DataError, Dataset, Split};

/// The samples of one split.
#[derive(Clone, Debug)]
pub enum SegSplit {
    Scenes(SceneSplit),
    /// A folder's samples `indices` (all of them, or a carved part).
    Folder(Arc<SegFolder>, Vec<usize>),
}

impl SegSplit {
    pub fn len(&self) -> usize {
        match self {
            SegSplit::Scenes(s) => s.len(),
            SegSplit::Folder(_, idx) => idx.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Result<SegSample, DataError> {
        match self {
            SegSplit::Scenes(s) => {
                let scene = s.scene(i);
                Ok(SegSample {
                    shape: [1, scene.size, scene.size],
                    pixels: scene.pixels,
                    mask: scene.mask,
                })
            }
            SegSplit::Folder(f, idx) => f.get(idx[i]),
        }
    }
}

/// A segmentation dataset as `--data` names it.
#[derive(Clone, Debug)]
pub struct SegDataset {
    pub spec: String,
    pub train: SegSplit,
    pub val: SegSplit,
    pub test: SegSplit,
    pub classes: Vec<String>,
}

/// Help text for a segmentation model's `--data`.
pub const SEG_DATA_HELP: &str = "fmnist-scenes (scenes of Debian's Fashion-MNIST garments: \
10000 train, 1000 val, 1000 test, 96×96), fmnist-scenes-mini (from the built-in subset: 1000/200/200), \
ade20k:DIR (ADEChallengeData2016: images/ and annotations/ {training,validation}, reduce_zero_label; \
validation is the test split), segfolder:DIR (DIR/classes.txt, DIR/images/{train,val,test}/ and \
DIR/masks/{train,val,test}/ with masks named as their images)";

/// How many scenes each split of `fmnist-scenes` holds: (train, val, test).
pub const SCENE_COUNTS: [usize; 3] = [10_000, 1_000, 1_000];
const MINI_SCENE_COUNTS: [usize; 3] = [1_000, 200, 200];

/// The share of the training garments held out for validation scenes.
const VAL_GARMENTS: f64 = 0.1;

impl SegDataset {
    pub fn open(spec: &str) -> Result<Self, DataError> {
        if let Some(dir) = spec.strip_prefix("ade20k:") {
            return Self::ade20k(spec, Path::new(dir));
        }
        if let Some(dir) = spec.strip_prefix("segfolder:") {
            return Self::folder(spec, Path::new(dir));
        }
        let (garments, counts) = match spec {
            "fmnist-scenes" => (Dataset::open("fmnist")?, SCENE_COUNTS),
            "fmnist-scenes-mini" => (Dataset::open("fmnist-mini")?, MINI_SCENE_COUNTS),
            _ => {
                return Err(DataError::Spec {
                    spec: spec.into(),
                    msg: format!("unknown segmentation dataset; use {SEG_DATA_HELP}"),
                })
            }
        };
        let cfg = SceneConfig::default();
        let (train_pool, val_pool) = garments.train.carve(VAL_GARMENTS, 0);
        let test_pool = garments.test.as_ref().ok_or_else(|| DataError::Missing {
            path: PathBuf::from(spec),
            hint: " (no test garments)".into(),
        })?;
        let split = |pool: &Split, count, tag| -> Result<SegSplit, DataError> {
            let (set, idx) = pool.memory_parts().ok_or_else(|| DataError::Spec {
                spec: spec.into(),
                msg: "scenes need garments held in memory".into(),
            })?;
            Ok(SegSplit::Scenes(SceneSplit::new(
                set,
                idx,
                count,
                tag,
                cfg.clone(),
            )))
        };
        Ok(Self {
            spec: spec.into(),
            train: split(&train_pool, counts[0], 0)?,
            val: split(&val_pool, counts[1], 1)?,
            test: split(test_pool, counts[2], 2)?,
            classes: scene_classes(),
        })
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// ADE20K's `ADEChallengeData2016` layout: 150 classes after `reduce_zero_label`; a
    /// seeded 5% of training is the validation split and the official validation set the test.
    fn ade20k(spec: &str, root: &Path) -> Result<Self, DataError> {
        let part = |s: &str| {
            SegFolder::scan(
                &root.join("images").join(s),
                &root.join("annotations").join(s),
                true,
                ADE_CLASSES,
            )
        };
        let train = Arc::new(part("training")?);
        let test = Arc::new(part("validation")?);
        let (train_idx, val_idx) = carve(train.len(), 0.05);
        Ok(Self {
            spec: spec.into(),
            train: SegSplit::Folder(train.clone(), train_idx),
            val: SegSplit::Folder(train, val_idx),
            test: SegSplit::Folder(test.clone(), (0..test.len()).collect()),
            classes: (0..ADE_CLASSES).map(|k| format!("class {k}")).collect(),
        })
    }

    /// `DIR/classes.txt` (one name a line, background first if there is one), `DIR/images/<split>`
    /// and `DIR/masks/<split>` for train and val, and test if present (else val serves).
    fn folder(spec: &str, root: &Path) -> Result<Self, DataError> {
        let names = root.join("classes.txt");
        let text = std::fs::read_to_string(&names).map_err(|cause| match cause.kind() {
            std::io::ErrorKind::NotFound => DataError::Missing {
                path: names.clone(),
                hint: " (one class name a line)".into(),
            },
            _ => DataError::Io {
                path: names.clone(),
                cause,
            },
        })?;
        let classes: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if classes.is_empty() || classes.len() > IGNORE_INDEX as usize {
            return Err(DataError::BadFile {
                path: names,
                msg: format!("lists {} classes; 1 to 255 are possible", classes.len()),
            });
        }
        let part = |s: &str| {
            SegFolder::scan(
                &root.join("images").join(s),
                &root.join("masks").join(s),
                false,
                classes.len(),
            )
            .map(Arc::new)
        };
        let all = |f: Arc<SegFolder>| SegSplit::Folder(f.clone(), (0..f.len()).collect());
        let train = part("train")?;
        let val = part("val")?;
        let test = if root.join("images/test").is_dir() {
            part("test")?
        } else {
            val.clone()
        };
        Ok(Self {
            spec: spec.into(),
            train: all(train),
            val: all(val),
            test: all(test),
            classes,
        })
    }
}

/// ADE20K's classes after `reduce_zero_label`.
pub const ADE_CLASSES: usize = 150;

/// A seeded shuffle of `0..n` cut into (the rest, `fraction` of it).
fn carve(n: usize, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(0x5e9));
    let k = ((n as f64 * fraction).round() as usize).clamp(usize::from(n > 1), n.saturating_sub(1));
    let val = idx.split_off(n - k);
    (idx, val)
}
