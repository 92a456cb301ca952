//! Mixed precision, the way `torch.autocast` does it: while a [`Precision::Bf16`] scope is
//! active, matrix products (every `Linear`, attention) take bf16 inputs; parameters stay f32
//! (the master weights the optimizer updates), and everything else — LayerNorm, softmax inside
//! attention where the backend keeps it in f32, GELU, residual sums, the loss — runs in f32
//! because each product's output is cast back. Gradients flow through the casts, so they arrive
//! at the f32 parameters in f32.
//!
//! The scope is per thread, like autocast: the training loop and `bench` open it around the
//! model's forward pass.

use std::cell::Cell;

use burn::tensor::{DType, Tensor};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// bf16 matrix products with f32 master weights and f32 elementwise/reductions.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision '{other}' (use f32 or bf16)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

thread_local! {
    static ACTIVE: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Restores the previous precision when dropped.
pub struct Autocast(Precision);

impl Drop for Autocast {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}

/// Runs matrix products in `precision` on this thread until the guard is dropped.
#[must_use = "the precision applies only while the guard lives"]
pub fn autocast(precision: Precision) -> Autocast {
    Autocast(ACTIVE.with(|a| a.replace(precision)))
}

/// The precision active on this thread.
pub fn active() -> Precision {
    ACTIVE.with(Cell::get)
}

/// The dtype matrix products take now, if not f32.
pub fn matmul_dtype() -> Option<DType> {
    match active() {
        Precision::F32 => None,
        Precision::Bf16 => Some(DType::BF16),
    }
}

/// `x` in the active matmul dtype (unchanged in f32).
pub fn lower<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match matmul_dtype() {
        Some(dtype) if x.dtype() != dtype => x.cast(dtype),
        _ => x,
    }
}

/// `x` back in f32 after a lowered product.
pub fn raise<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}
