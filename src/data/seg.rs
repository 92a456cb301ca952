//! Segmentation data: images with a class index per pixel. `--data fmnist-scenes` (Debian's
//! Fashion-MNIST garments) and `fmnist-scenes-mini` (the built-in subset) draw scenes
//! (`scenes.rs`); splits are train / validation / test, the test split read only by `eval`.

use std::path::PathBuf;

use super::scenes::{scene_classes, SceneConfig, SceneSplit};
use super::{DataError, Dataset, Split};

/// The label that no loss and no metric counts (mmsegmentation's default).
pub const IGNORE_INDEX: u8 = 255;

/// One sample: 8-bit pixels `[c, h, w]` and a class index per pixel `[h, w]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SegSample {
    pub pixels: Vec<u8>,
    pub shape: [usize; 3],
    pub mask: Vec<u8>,
}

/// The samples of one split.
#[derive(Clone, Debug)]
pub enum SegSplit {
    Scenes(SceneSplit),
}

impl SegSplit {
    pub fn len(&self) -> usize {
        match self {
            SegSplit::Scenes(s) => s.len(),
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
10000 train, 1000 val, 1000 test, 96×96), fmnist-scenes-mini (from the built-in subset: 1000/200/200)";

/// How many scenes each split of `fmnist-scenes` holds: (train, val, test).
pub const SCENE_COUNTS: [usize; 3] = [10_000, 1_000, 1_000];
const MINI_SCENE_COUNTS: [usize; 3] = [1_000, 200, 200];

/// The share of the training garments held out for validation scenes.
const VAL_GARMENTS: f64 = 0.1;

impl SegDataset {
    pub fn open(spec: &str) -> Result<Self, DataError> {
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
}
