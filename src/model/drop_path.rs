//! Stochastic depth ("drop path"): during training, a residual branch is dropped for a whole
//! sample with probability p and scaled by 1/(1-p) otherwise. The rate rises linearly with
//! block position, from 0 at the first to `rate` at the last, as in timm.

use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Masks for one training step. Seeded per step, so a resumed run draws the same masks.
pub struct DropPath {
    rng: StdRng,
    rate: f64,
    depth: usize,
}

impl DropPath {
    pub fn new(rate: f64, depth: usize, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            rate,
            depth,
        }
    }

    fn rate_at(&self, position: usize) -> f64 {
        if self.depth <= 1 {
            return self.rate;
        }
        self.rate * position as f64 / (self.depth - 1) as f64
    }

    /// Applies the mask of block `position` to a branch `[batch, tokens, dim]`.
    pub fn apply(&mut self, position: usize, x: Tensor<3>) -> Tensor<3> {
        let p = self.rate_at(position);
        if p <= 0.0 {
            return x;
        }
        let [b, _, _] = x.dims();
        let keep = 1.0 - p;
        let mask: Vec<f32> = (0..b)
            .map(|_| {
                if self.rng.random_bool(keep) {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::<3>::from_data(TensorData::new(mask, [b, 1, 1]), &x.device());
        x * mask
    }
}

/// Applies drop path when training with it, identity otherwise.
pub fn maybe(dp: &mut Option<&mut DropPath>, position: usize, x: Tensor<3>) -> Tensor<3> {
    match dp {
        Some(d) => d.apply(position, x),
        None => x,
    }
}
