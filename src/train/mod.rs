//! Training: the loop, the optimizer with parameter groups, the schedule, evaluation,
//! checkpoints and exact resume.

pub mod eval;
pub mod lm;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use eval::{evaluate, EvalResult};
pub use trainer::{train, Hooks, Outcome, TrainConfig};
