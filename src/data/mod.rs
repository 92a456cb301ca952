//! Datasets: where images come from (IDX, CIFAR binary, ImageFolder, the embedded Fashion-MNIST
//! subset), how splits are carved, and how samples become model inputs (`transform`, `loader`).

pub mod cifar;
pub mod coco;
pub mod corpus;
pub mod det;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod scenes;
pub mod seg;
pub mod seg_augment;
pub mod seg_folder;
pub mod seg_sample;
pub mod text;
pub mod tokenizer;
pub mod transform;
pub mod voc;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Where Debian's `dataset-fashion-mnist` installs the data.
pub const FMNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub const FMNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Failures while reading data. Each names the file or folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: not found{hint}", path.display())]
    Missing { path: PathBuf, hint: String },
    #[error("{}: {msg}", path.display())]
    BadFile { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Empty { path: PathBuf, msg: String },
    #[error("{}: corrupt or unreadable image ({msg})", path.display())]
    BadImage { path: PathBuf, msg: String },
    #[error("--data {spec}: {msg}")]
    Spec { spec: String, msg: String },
}

/// Images held in memory as 8-bit pixels, `[c, h, w]` each.
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub shape: [usize; 3],
    pub pixels: Vec<u8>,
    pub labels: Vec<usize>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One decoded sample: 8-bit pixels `[c, h, w]` and its label.
#[derive(Clone, Debug)]
pub struct RawImage {
    pub pixels: Vec<u8>,
    pub shape: [usize; 3],
    pub label: usize,
}

#[derive(Clone, Debug)]
enum Source {
    Memory(Arc<ImageSet>),
    Files(Arc<folder::FolderSplit>),
}

/// A view of some items of a source.
#[derive(Clone, Debug)]
pub struct Split {
    source: Source,
    indices: Vec<usize>,
}

impl Split {
    fn all(source: Source) -> Self {
        let n = match &source {
            Source::Memory(s) => s.len(),
            Source::Files(f) => f.files.len(),
        };
        Self {
            source,
            indices: (0..n).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn label(&self, i: usize) -> usize {
        let k = self.indices[i];
        match &self.source {
            Source::Memory(s) => s.labels[k],
            Source::Files(f) => f.labels[k],
        }
    }

    /// Whether images are small enough to be held in memory (the pad-and-crop recipe).
    pub fn is_small(&self) -> bool {
        matches!(self.source, Source::Memory(_))
    }

    pub fn get(&self, i: usize) -> Result<RawImage, DataError> {
        let k = self.indices[i];
        match &self.source {
            Source::Memory(s) => {
                let per: usize = s.shape.iter().product();
                Ok(RawImage {
                    pixels: s.pixels[k * per..(k + 1) * per].to_vec(),
                    shape: s.shape,
                    label: s.labels[k],
                })
            }
            Source::Files(f) => {
                let (pixels, h, w) = folder::decode(&f.files[k])?;
                Ok(RawImage {
                    pixels,
                    shape: [3, h, w],
                    label: f.labels[k],
                })
            }
        }
    }

    /// The images and this split's indices into them, when they are held in memory.
    pub fn memory_parts(&self) -> Option<(Arc<ImageSet>, Vec<usize>)> {
        match &self.source {
            Source::Memory(s) => Some((s.clone(), self.indices.clone())),
            Source::Files(_) => None,
        }
    }

    /// The first `n` items after a seeded shuffle (a class-mixed subset).
    pub fn subset(&self, n: usize, seed: u64) -> Split {
        let mut idx = self.indices.clone();
        idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        idx.truncate(n);
        Split {
            source: self.source.clone(),
            indices: idx,
        }
    }

    /// Carves `fraction` of the items off (seeded) as a validation split: (rest, val).
    pub fn carve(&self, fraction: f64, seed: u64) -> (Split, Split) {
        let mut idx = self.indices.clone();
        idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_f0a1));
        let n_val = ((idx.len() as f64) * fraction).round() as usize;
        let val = idx.split_off(idx.len() - n_val);
        (
            Split {
                source: self.source.clone(),
                indices: idx,
            },
            Split {
                source: self.source.clone(),
                indices: val,
            },
        )
    }
}

/// A dataset as `--data` names it: a training split, an optional test split, class names.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub spec: String,
    pub train: Split,
    pub test: Option<Split>,
    pub classes: Vec<String>,
}

const MINI_TRAIN_IMAGES: &[u8] =
    include_bytes!("../../data/fashion-mnist-subset/train-images-idx3-ubyte.gz");
const MINI_TRAIN_LABELS: &[u8] =
    include_bytes!("../../data/fashion-mnist-subset/train-labels-idx1-ubyte.gz");
const MINI_TEST_IMAGES: &[u8] =
    include_bytes!("../../data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz");
const MINI_TEST_LABELS: &[u8] =
    include_bytes!("../../data/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz");

/// Help text for `--data`.
pub const DATA_HELP: &str = "fmnist (Debian's dataset-fashion-mnist), fmnist-mini (5k/1k subset built in), \
idx:DIR (MNIST-style IDX files), cifar10:DIR, cifar100:DIR, imagefolder:DIR (DIR/train/<class>/*.jpg, DIR/val/...); \
for language models text:PATH (a .txt or .jsonl file, or a directory of them)";

impl Dataset {
    /// Opens a dataset from a `--data` value.
    pub fn open(spec: &str) -> Result<Self, DataError> {
        let (kind, path) = match spec.split_once(':') {
            Some((k, p)) => (k, Some(PathBuf::from(p))),
            None => (spec, None),
        };
        let need_path = |p: Option<PathBuf>| {
            p.ok_or_else(|| DataError::Spec {
                spec: spec.into(),
                msg: format!("{kind} needs a path, as {kind}:DIR"),
            })
        };
        let fm_classes = || {
            FMNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        let memory = |train: ImageSet, test: ImageSet, classes| Dataset {
            spec: spec.into(),
            train: Split::all(Source::Memory(Arc::new(train))),
            test: Some(Split::all(Source::Memory(Arc::new(test)))),
            classes,
        };
        match kind {
            "text" => Err(DataError::Spec {
                spec: spec.into(),
                msg: "text trains and evaluates language models; this model is an image model"
                    .into(),
            }),
            "fmnist" | "fashion-mnist" | "idx" | "mnist" => {
                let dir = match (kind, path) {
                    ("fmnist" | "fashion-mnist", None) => PathBuf::from(FMNIST_DIR),
                    (_, p) => need_path(p)?,
                };
                if !dir.is_dir() {
                    let hint = if dir == Path::new(FMNIST_DIR) {
                        " (install Debian's package: apt-get install dataset-fashion-mnist; or use --data fmnist-mini, the built-in subset)".to_string()
                    } else {
                        String::new()
                    };
                    return Err(DataError::Missing { path: dir, hint });
                }
                let train = idx::read_split(&dir, "train")?;
                let test = idx::read_split(&dir, "t10k")?;
                let n = train
                    .labels
                    .iter()
                    .chain(&test.labels)
                    .max()
                    .map_or(0, |m| m + 1);
                let classes = if kind == "mnist" || n != 10 {
                    (0..n).map(|i| i.to_string()).collect()
                } else {
                    fm_classes()
                };
                Ok(memory(train, test, classes))
            }
            "fmnist-mini" => {
                let p = Path::new("<built-in fmnist-mini>");
                let un = |b: &[u8]| idx::decompress(p, b);
                let train = idx::parse(p, &un(MINI_TRAIN_IMAGES)?, p, &un(MINI_TRAIN_LABELS)?)?;
                let test = idx::parse(p, &un(MINI_TEST_IMAGES)?, p, &un(MINI_TEST_LABELS)?)?;
                Ok(memory(train, test, fm_classes()))
            }
            "cifar10" | "cifar100" => {
                let (train, test, classes) = cifar::read(&need_path(path)?, kind == "cifar100")?;
                Ok(memory(train, test, classes))
            }
            "imagefolder" => {
                let root = need_path(path)?;
                let train_dir = if root.join("train").is_dir() {
                    root.join("train")
                } else {
                    root.clone()
                };
                let train = folder::scan(&train_dir, None)?;
                let classes = train.classes.clone();
                let test = ["val", "test"]
                    .iter()
                    .map(|s| root.join(s))
                    .find(|p| p.is_dir() && train_dir != root)
                    .map(|p| folder::scan(&p, Some(&classes)))
                    .transpose()?;
                Ok(Dataset {
                    spec: spec.into(),
                    train: Split::all(Source::Files(Arc::new(train))),
                    test: test.map(|t| Split::all(Source::Files(Arc::new(t)))),
                    classes,
                })
            }
            _ => Err(DataError::Spec {
                spec: spec.into(),
                msg: format!("unknown dataset; use {DATA_HELP}"),
            }),
        }
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}
