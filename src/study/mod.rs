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
pub use seg_report::{write_seg_report, SegFinal};
pub use seg_run::run_seg_study;

use std::path::Path;

use crate::error::{Error, Result};

/// Refuses an `--only` that names none of `arms`.
fn check_only(only: &[String], arms: &[&str]) -> Result<()> {
    match only.iter().find(|o| !arms.contains(&o.as_str())) {
        Some(bad) => Err(Error::InvalidModel(format!(
            "--only {bad}: no such arm (arms: {})",
            arms.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Refuses a `dir` whose `study.json` holds other settings (or another kind of study); then
/// records `settings` there.
fn record_settings<T>(dir: &Path, settings: &T) -> Result<()>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq,
{
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("study.json");
    if path.exists() {
        let same = crate::train::run_dir::read_json::<T>(&path).is_ok_and(|old| &old == settings);
        if !same {
            return Err(Error::Refused {
                path,
                msg: "holds a study with other settings; choose another --out".into(),
            });
        }
    }
    crate::train::run_dir::write_json(&path, settings)
}
