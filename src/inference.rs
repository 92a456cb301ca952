//! Batched inference over an input tensor held on the host, so that a large N fits in memory.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::safetensors_io::TensorFile;
use crate::error::{Error, Result};
use crate::model::arch::ImageArch;
use crate::model::weights::to_vec;

/// Images on the host: `[n, c, h, w]`, row-major f32, already normalised.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    pub shape: [usize; 4],
    pub values: Vec<f32>,
}

impl ImageBatch {
    /// Reads the tensor `input` from a safetensors file and checks it against the model.
    pub fn read(path: &Path, arch: &ImageArch) -> Result<Self> {
        let (in_chans, img_size) = (arch.in_chans(), arch.img_size());
        let mut file = TensorFile::read(path)?;
        let names: Vec<String> = file.tensors.keys().cloned().collect();
        let t = file.take("input").map_err(|_| Error::BadInput {
            path: path.to_path_buf(),
            msg: format!("no tensor named 'input' (found: {})", names.join(", ")),
        })?;
        let bad = |msg: String| Error::BadInput {
            path: path.to_path_buf(),
            msg,
        };
        let &[n, c, h, w] = t.shape.as_slice() else {
            return Err(bad(format!(
                "'input' has shape {:?}; expected [N, C, H, W] = [N, {}, {}, {}]",
                t.shape, in_chans, img_size[0], img_size[1]
            )));
        };
        if c != in_chans {
            return Err(bad(format!(
                "'input' has {c} channels, but the model takes {} (shape {:?})",
                in_chans, t.shape
            )));
        }
        if [h, w] != img_size {
            return Err(bad(format!(
                "'input' images are {h}x{w}, but the model takes {}x{} (shape {:?})",
                img_size[0], img_size[1], t.shape
            )));
        }
        if t.values.iter().any(|v| !v.is_finite()) {
            return Err(bad("'input' contains NaN or infinite values".into()));
        }
        Ok(Self {
            shape: [n, c, h, w],
            values: t.values,
        })
    }

    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

/// Runs `forward` over `images` in chunks of `batch_size`; returns `[n, out]` row-major.
pub fn run_batched(
    images: &ImageBatch,
    batch_size: usize,
    device: &Device,
    mut forward: impl FnMut(Tensor<4>) -> Tensor<2>,
    mut progress: impl FnMut(usize),
) -> (Vec<f32>, usize) {
    let [n, c, h, w] = images.shape;
    let per = c * h * w;
    let mut out = Vec::new();
    let mut width = 0;
    let batch_size = batch_size.max(1);
    let mut start = 0;
    while start < n {
        let end = (start + batch_size).min(n);
        let chunk = images.values[start * per..end * per].to_vec();
        let x = Tensor::<4>::from_data(TensorData::new(chunk, [end - start, c, h, w]), device);
        let y = forward(x);
        width = y.dims()[1];
        out.extend(to_vec(y));
        progress(end);
        start = end;
    }
    (out, width)
}
