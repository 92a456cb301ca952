//! Running the dense-prediction studies (`scalenet reproduce --family seg|det`): for each arm
//! and seed a UperNet (or RetinaNet) around the classification study's backbone, trained by one
//! recipe, then evaluated once on the whole validation and test splits (`final.json`). Finished
//! runs are reused, so a stopped study continues where it was.

use std::path::{Path, PathBuf};

use super::seg_arms::{run_name, SegArm, SegStudyConfig, SEG_ARMS};
use super::seg_report::{DetFinal, RunFacts, SegFinal};
use crate::checkpoint::det_dir::{detector_around, load_detector, save_detector, DetInit};
use crate::checkpoint::seg_dir::{load_segmentor, save_segmentor, segmentor_around, SegInit};
use crate::data::det::DetDataset;
use crate::data::seg::SegDataset;
use crate::detect::DetSpec;
use crate::error::{Error, Result};
use crate::segment::HeadKind;
use crate::train::config::TrainConfig;
use crate::train::det_infer::evaluate_detection;
use crate::train::run_dir::write_json;
use crate::train::schedule::Decay;
use crate::train::trainer::{train, Hooks, Outcome};

/// Runs (or continues) a segmentation study in `dir` and writes its report there.
pub fn run_seg_study(cfg: &SegStudyConfig, dir: &Path, hooks: &Hooks) -> Result<()> {
    let study = SegRunner { cfg, dir, hooks };
    study.start()?;
    let arms: Vec<&SegArm> = SEG_ARMS.iter().filter(|a| study.wants(a.name)).collect();
    // Seed 0 of every arm first: the picture forms early.
    for arm in &arms {
        study.run_arm(arm, 0)?;
    }
    for arm in &arms {
        for s in 1..arm.seeds(cfg) {
            study.run_arm(arm, s)?;
        }
    }
    super::seg_report::write_seg_report(cfg, dir)
}

struct SegRunner<'a> {
    cfg: &'a SegStudyConfig,
    dir: &'a Path,
    hooks: &'a Hooks,
}

impl SegRunner<'_> {
    fn say(&self, s: String) {
        if self.hooks.progress {
            eprintln!("{s}");
        }
    }

    /// Refuses unknown arms, a backbone study that is not one, and a directory that holds
    /// another study; then records the settings.
    fn start(&self) -> Result<()> {
        let cfg = self.cfg;
        let arms: Vec<&str> = SEG_ARMS.iter().map(|a| a.name).collect();
        super::check_only(&cfg.only, &arms)?;
        let base = cfg.backbones.join("runs/base/model/config.json");
        if !base.exists() {
            return Err(Error::Refused {
                path: cfg.backbones.clone(),
                msg: "is not a finished classification study (no runs/base/model); \
                      --backbones takes a `scalenet reproduce` directory such as studies/converged"
                    .into(),
            });
        }
        super::record_settings(self.dir, &cfg.settings())
    }

    fn wants(&self, name: &str) -> bool {
        self.cfg.only.is_empty() || self.cfg.only.iter().any(|o| o == name)
    }

    /// The arm's model at seed `s`: fresh heads around its backbone (made once).
    fn model(&self, arm: &SegArm, s: u64, num_classes: usize) -> Result<PathBuf> {
        let out = self.dir.join("models").join(run_name(arm, s));
        if self.cfg.is_det() && !out.join("config.json").exists() {
            let mut opts = DetInit {
                spec: DetSpec {
                    num_classes,
                    fpn_channels: self.cfg.channels,
                    anchor_sizes: Vec::new(),
                    ..DetSpec::default()
                },
                img_size: Some(self.cfg.img_size),
                class_names: None,
                seed: 100 + s,
            };
            let backbone = arm.backbone_dir(&self.cfg.backbones, s);
            let device = burn::tensor::Device::flex();
            let (config, det) = detector_around(&backbone, &mut opts, &device)?;
            save_detector(&out, &config, &det)?;
        }
        if !out.join("config.json").exists() {
            let opts = SegInit {
                head: HeadKind::Upernet,
                num_classes,
                channels: self.cfg.channels,
                aux_channels: self.cfg.aux_channels,
                img_size: Some(self.cfg.img_size),
                seed: 100 + s,
            };
            let backbone = arm.backbone_dir(&self.cfg.backbones, s);
            let device = burn::tensor::Device::flex();
            let (config, seg) = segmentor_around(&backbone, &opts, &device)?;
            save_segmentor(&out, &config, &seg)?;
        }
        Ok(out)
    }

    fn run_arm(&self, arm: &SegArm, s: u64) -> Result<()> {
        let name = run_name(arm, s);
        let out = self.dir.join("runs").join(&name);
        let classes = match self.cfg.is_det() {
            true => DetDataset::open(&self.cfg.data)?.num_classes(),
            false => SegDataset::open(&self.cfg.data)?.num_classes(),
        };
        if out.join("final.json").exists() {
            self.say(format!("· {name}: done earlier, reusing"));
            return Ok(());
        }
        if !out.join("model").join("config.json").exists() {
            let model = self.model(arm, s, classes)?;
            let what = if self.cfg.is_det() {
                "RetinaNet"
            } else {
                "UperNet"
            };
            self.say(format!(
                "· {name}: {what} on {} for {} epochs",
                arm.backbone_dir(&self.cfg.backbones, s).display(),
                self.cfg.epochs
            ));
            let resume = out.join("run.json").exists();
            let hooks = Hooks {
                progress: self.hooks.progress,
                interrupt: self.hooks.interrupt.clone(),
                ..Hooks::default()
            };
            if let Outcome::Interrupted { .. } = train(self.recipe(model, s), &out, resume, &hooks)?
            {
                return Err(Error::Refused {
                    path: out,
                    msg: "interrupted; run the same command again to continue".into(),
                });
            }
        }
        if self.cfg.is_det() {
            self.final_det_eval(&out)?;
        } else {
            self.final_eval(&out, &SegDataset::open(&self.cfg.data)?)?;
        }
        // A long study's report is readable after every run, not only at its end.
        super::seg_report::write_seg_report(self.cfg, self.dir)
    }

    fn recipe(&self, model: PathBuf, seed: u64) -> TrainConfig {
        let c = self.cfg;
        TrainConfig {
            epochs: c.epochs,
            batch_size: c.batch_size,
            lr: c.lr,
            min_lr: 0.0,
            warmup_epochs: c.warmup_epochs,
            sched: match c.is_det() {
                true => Decay::default(),
                false => Decay::Poly(1.0),
            },
            weight_decay: c.weight_decay,
            smoothing: 0.0,
            train_subset: c.train_subset,
            test_subset: c.val_subset,
            seed,
            workers: c.workers,
            eval_batch_size: 16,
            device: c.device.clone(),
            precision: c.precision,
            ..TrainConfig::new(model, c.data.clone())
        }
    }

    /// A detector's final evaluation: COCO box AP on the whole validation and test splits.
    fn final_det_eval(&self, run: &Path) -> Result<()> {
        let device = crate::device::parse_device(&self.cfg.device)?;
        let data = DetDataset::open(&self.cfg.data)?;
        let (config, net) = load_detector(&run.join("model"), &device)?;
        let eval = |split: &crate::data::det::DetSplit| {
            let n = split.len();
            evaluate_detection(&net, &config, split, n, 16, &device, |_| {})
        };
        let (val, test) = (eval(&data.val)?, eval(&data.test)?);
        let pct = |v: f64| 100.0 * v;
        let fin = DetFinal {
            val_ap: pct(val.stats[0]),
            val_ap50: pct(val.stats[1]),
            test_ap: pct(test.stats[0]),
            test_ap50: pct(test.stats[1]),
            test_ap75: pct(test.stats[2]),
            test_class_ap: test
                .per_class
                .iter()
                .map(|&v| if v < 0.0 { v } else { pct(v) })
                .collect(),
            run: RunFacts::of_run(run, &net.backbone, net.head_params())?,
        };
        self.say(format!(
            "  test AP {:.2}% · AP50 {:.2}%",
            fin.test_ap, fin.test_ap50
        ));
        write_json(&run.join("final.json"), &fin)
    }

    /// Evaluates the run's final model on the whole validation and test splits, once.
    fn final_eval(&self, run: &Path, data: &SegDataset) -> Result<()> {
        let device = crate::device::parse_device(&self.cfg.device)?;
        let (config, net) = load_segmentor(&run.join("model"), &device)?;
        let eval = |split| {
            let split: &crate::data::seg::SegSplit = split;
            crate::train::seg_infer::evaluate_segmentation(
                &net,
                &config,
                split,
                split.len(),
                16,
                crate::train::seg_infer::SegMode::Whole,
                &device,
                |_| {},
            )
        };
        let (val, test) = (eval(&data.val)?, eval(&data.test)?);
        let fin = SegFinal {
            val_miou: 100.0 * val.miou,
            val_aacc: 100.0 * val.aacc,
            test_miou: 100.0 * test.miou,
            test_aacc: 100.0 * test.aacc,
            test_macc: 100.0 * test.macc,
            test_iou: test.iou.iter().map(|v| 100.0 * v).collect(),
            run: RunFacts::of_run(run, &net.backbone, net.head_params())?,
        };
        self.say(format!(
            "  test mIoU {:.2}% · aAcc {:.2}%",
            fin.test_miou, fin.test_aacc
        ));
        write_json(&run.join("final.json"), &fin)
    }
}
