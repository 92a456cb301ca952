//! Training: the loop, the optimizer with parameter groups, the schedule, evaluation,
//! checkpoints and exact resume.

pub mod coco_ap;
pub mod config;
pub mod det_infer;
pub mod detection;
pub mod eval;
pub mod iou;
pub mod lm;
pub mod optim;
pub mod run_dir;
pub mod schedule;
pub mod seg_infer;
pub mod segmentation;
mod task;
mod text;
pub mod trainer;
mod vision;

pub use eval::{evaluate, EvalResult};
pub use trainer::{train, Hooks, Outcome, TrainConfig};
