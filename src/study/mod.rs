//! The reproduction study (`scalenet reproduce`) and its small sibling (`scalenet demo`):
//! pretrain a base ViT of depth L, grow it to 2L, fine-tune for E epochs, and compare against
//! the baselines the paper's claim is about, all with one recipe.
//!
//! Every arm is an ordinary `train` run in its own directory under the study directory, so a
//! study that is stopped can be re-run and continues where it was: finished arms are reused.
//! `arms` says what a study is (its settings and arms), `run` runs it, `report` writes what it
//! found (RESULTS.md and its plots). The language-model study (`--family llama`) has its own
//! arms in `lm_arms`, its runner in `lm_run` (growth operators against continuing the base and training from
//! scratch, at equal tokens and FLOPs) and its report in `lm_report`. The segmentation study (`--family seg`) puts UperNet on a finished
//! classification study's backbones: `seg_arms`, `seg_run`, `seg_report`.

mod arms;
mod lm_arms;
mod lm_report;
mod lm_run;
mod report;
mod run;
mod seg_arms;
mod seg_report;
mod seg_run;

pub use arms::{Arm, StudyConfig, ARMS};
pub use lm_arms::{LmArm, LmStudyConfig, LM_ARMS};
pub use lm_report::write_lm_report;
pub use lm_run::run_lm_study;
pub use report::{machine, table, verdict, ArmResult};
pub use run::run_study;
pub use seg_arms::{SegArm, SegStudyConfig, SEG_ARMS};
pub use seg_report::write_seg_report;
pub use seg_run::{run_seg_study, SegFinal};
