//! Running a study: the base first, then each wanted arm's model (grown from the base or
//! initialised from scratch) trained by the one recipe; finished runs are reused, so a stopped
//! study continues where it was.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::arms::{Arm, StudyConfig, ARMS, BASE_SEED, HEADLINE_ARMS};
use super::report::{collect, write_report, ArmResult};
use crate::checkpoint::model_dir::{build_network, load_model, save_model, ModelConfig};
use crate::error::{Error, Result};
use crate::growth::expand::{expand, expand_swin};
use crate::growth::options::{ExpandOptions, InitMode};
use crate::growth::plan::{AdapterSpec, MapStrategy};
use crate::model::weights::RandomInit;
use crate::network::Network;
use crate::train::config::TrainConfig;
use crate::train::optim::TrainOnly;
use crate::train::trainer::{train, Hooks, Outcome};

/// Runs (or continues) a study in `dir`; returns the results and writes RESULTS.md and
/// results.png there. `hooks.progress` shows progress; setting `hooks.interrupt` (Ctrl-C in
/// the CLI) checkpoints the running arm and returns an error that says to run the same command
/// again.
pub fn run_study(cfg: &StudyConfig, dir: &Path, hooks: &Hooks) -> Result<Vec<ArmResult>> {
    start(cfg, dir)?;
    let study = Runner { cfg, dir, hooks };
    // 1. The base: depth L, pretrained for E_base epochs.
    let l = cfg.base_depth;
    let base_run = study.run_arm(
        "base",
        study.init_model("base-init", l, 1000)?,
        Schedule {
            epochs: cfg.base_epochs,
            seed: BASE_SEED,
            data_seed: None,
            train_only: TrainOnly::All,
            lr: cfg.lr,
        },
    )?;
    let base_dir = base_run.join("model");
    for arm in ARMS.iter().filter(|a| study.wants(a.name)) {
        for s in study.seeds_of(arm) {
            let model = study.model_for(arm, s, &base_dir)?;
            // An arm that starts from the base carves the base's validation split; with its
            // own seed's carve, most of its validation images would be the base's training
            // images.
            let from_base = !arm.name.starts_with("scratch");
            let schedule = Schedule {
                epochs: cfg.epochs * arm.epochs_factor,
                seed: s,
                data_seed: from_base.then_some(BASE_SEED),
                train_only: if arm.name == "adapters-only" {
                    TrainOnly::Adapters
                } else {
                    TrainOnly::All
                },
                lr: cfg.lr / arm.lr_divisor as f64,
            };
            study.run_arm(&run_name(arm, s), model, schedule)?;
        }
    }
    let results = study.collect_all(base_run)?;
    write_report(cfg, dir, &results)?;
    Ok(results)
}

/// Refuses a directory that holds a study with other settings and an `--only` that names no
/// arm; then records the settings.
fn start(cfg: &StudyConfig, dir: &Path) -> Result<()> {
    // The base always runs (every other arm starts from it or is compared with it).
    let arms: Vec<&str> = std::iter::once("base")
        .chain(ARMS.iter().map(|a| a.name))
        .collect();
    super::check_only(&cfg.only, &arms)?;
    super::record_settings(dir, &cfg.settings())
}

/// The run directory's name of one seed of an arm.
fn run_name(arm: &Arm, seed: u64) -> String {
    format!("{}-s{seed}", arm.name)
}

/// How one run trains, beyond the study's recipe.
struct Schedule {
    epochs: usize,
    seed: u64,
    /// The seed of the validation carve, where it is not the run's own.
    data_seed: Option<u64>,
    train_only: TrainOnly,
    lr: f64,
}

/// One study: its settings, its directory and the caller's hooks.
struct Runner<'a> {
    cfg: &'a StudyConfig,
    dir: &'a Path,
    hooks: &'a Hooks,
}

impl Runner<'_> {
    fn say(&self, s: String) {
        if self.hooks.progress {
            eprintln!("{s}");
        }
    }

    fn swin(&self) -> bool {
        self.cfg.family == "swin"
    }

    /// Whether this call runs `name`: the headline arms, or those `--only` names.
    fn wants(&self, name: &str) -> bool {
        if self.cfg.only.is_empty() {
            ARMS[..HEADLINE_ARMS].iter().any(|a| a.name == name)
        } else {
            self.cfg.only.iter().any(|o| o == name)
        }
    }

    fn seeds_of(&self, arm: &Arm) -> Vec<u64> {
        if arm.seeded {
            (0..self.cfg.seeds as u64).collect()
        } else {
            vec![0]
        }
    }

    /// The one recipe every run trains with.
    fn recipe(&self, model_dir: PathBuf, s: Schedule) -> TrainConfig {
        let cfg = self.cfg;
        TrainConfig {
            epochs: s.epochs,
            train_only: s.train_only,
            lr: s.lr,
            mixup: cfg.mixup,
            rand_augment: cfg.rand_augment,
            reprob: cfg.reprob,
            batch_size: cfg.batch_size,
            warmup_epochs: cfg.warmup_epochs,
            weight_decay: cfg.weight_decay,
            smoothing: cfg.smoothing,
            drop_path: cfg.drop_path,
            val_split: cfg.val_split,
            train_subset: cfg.train_subset,
            test_subset: cfg.test_subset,
            seed: s.seed,
            data_seed: s.data_seed,
            workers: cfg.workers,
            device: cfg.device.clone(),
            precision: cfg.precision,
            ..TrainConfig::new(model_dir, cfg.data.clone())
        }
    }

    /// The `model_args` of a study model of `depth` blocks (per stage for a Swin).
    fn model_args(&self, depth: usize) -> Value {
        let cfg = self.cfg;
        if self.swin() {
            json!({"img_size": cfg.img_size, "patch_size": cfg.patch_size, "in_chans": 1, "num_classes": 10,
                   "embed_dim": cfg.embed_dim, "depths": [depth, depth],
                   "num_heads": [cfg.num_heads, 2 * cfg.num_heads], "window_size": 7})
        } else {
            json!({"img_size": cfg.img_size, "patch_size": cfg.patch_size, "in_chans": 1, "num_classes": 10,
                   "embed_dim": cfg.embed_dim, "depth": depth, "num_heads": cfg.num_heads})
        }
    }

    /// A freshly initialised model under `models/name` (made once).
    fn init_model(&self, name: &str, depth: usize, seed: u64) -> Result<PathBuf> {
        let out = self.dir.join("models").join(name);
        if !out.join("config.json").exists() {
            let arch = if self.swin() {
                "swin_tiny_patch4_window7_224"
            } else {
                "deit_tiny_patch16_224"
            };
            let args = self.model_args(depth);
            let mc = ModelConfig::from_preset(arch, args.as_object().expect("object"))?;
            let device = burn::tensor::Device::flex();
            let m = build_network(&mc, &mut RandomInit::new(seed), &device);
            save_model(&out, &mc, &m)?;
        }
        Ok(out)
    }

    /// The base grown as `opts` say, under `models/name` (made once).
    fn grow(&self, base_dir: &Path, name: &str, opts: ExpandOptions) -> Result<PathBuf> {
        let out = self.dir.join("models").join(name);
        if !out.join("config.json").exists() {
            let base = load_model(base_dir, &burn::tensor::Device::flex())?;
            let (c, n) = match base.network {
                Network::Swin(m) => expand_swin(m, &base.config, &opts)?,
                Network::Plain(m) => expand(m, &base.config, &opts)?,
                _ => unreachable!("the study's base is a plain model"),
            };
            save_model(&out, &c, &n)?;
        }
        Ok(out)
    }

    /// Growth to 2L (per stage for a Swin) with the study's adapters.
    fn grow_opts(&self, init: InitMode, adapter: bool, no_share: bool, seed: u64) -> ExpandOptions {
        let l = self.cfg.base_depth;
        ExpandOptions {
            depth: 2 * l,
            depths: if self.swin() {
                vec![2 * l; 2]
            } else {
                Vec::new()
            },
            map: MapStrategy::Cyclic,
            adapter: adapter.then(|| AdapterSpec {
                rank: self.cfg.adapter_rank,
                scale: self.cfg.adapter_scale,
                ..AdapterSpec::default()
            }),
            unshared_norms: false,
            init,
            no_share,
            lora: None,
            seed,
        }
    }

    /// The model seed `s` of `arm` starts from.
    fn model_for(&self, arm: &Arm, s: u64, base_dir: &Path) -> Result<PathBuf> {
        let (l, d) = (self.cfg.base_depth, arm.depth(self.cfg.base_depth));
        let paper = |s: u64| self.grow_opts(InitMode::Paper, true, false, s);
        let at_depth = |o: ExpandOptions| ExpandOptions {
            depth: d,
            depths: if self.swin() { vec![d; 2] } else { Vec::new() },
            ..o
        };
        let ranked = |r: usize| {
            let mut o = paper(0);
            if let Some(a) = &mut o.adapter {
                a.rank = r;
            }
            o
        };
        let grow = |name: &str, opts| self.grow(base_dir, name, opts);
        match arm.name {
            "grown-1.5L" | "grown-3L" => grow(arm.name, at_depth(paper(s))),
            "adapters-only" | "grown-low-lr" => grow("grown-s0", paper(0)),
            "interleave" => grow(
                "interleave",
                ExpandOptions {
                    map: MapStrategy::Interleave,
                    ..paper(0)
                },
            ),
            "rank-8" => grow("rank-8", ranked(8)),
            "rank-64" => grow("rank-64", ranked(64)),
            "grown" => grow(&format!("grown-s{s}"), paper(s)),
            "grown-identity" => grow(
                &format!("grown-identity-s{s}"),
                self.grow_opts(InitMode::Identity, true, false, s),
            ),
            "stacked" => grow("stacked", self.grow_opts(InitMode::Paper, false, true, s)),
            "shared-only" => grow(
                "shared-only",
                self.grow_opts(InitMode::Paper, false, false, s),
            ),
            "base+E" | "base+E-low-lr" => Ok(base_dir.to_path_buf()),
            "scratch-E" | "scratch-3E" => {
                self.init_model(&format!("scratch-init-s{s}"), 2 * l, 2000 + s)
            }
            _ => self.init_model(&format!("scratch-init-{d}-s{s}"), d, 2000 + s),
        }
    }

    /// Trains one run unless it finished earlier; returns its directory.
    fn run_arm(&self, run: &str, model_dir: PathBuf, schedule: Schedule) -> Result<PathBuf> {
        let out = self.dir.join("runs").join(run);
        if out.join("model").join("config.json").exists() {
            self.say(format!("· {run}: done earlier, reusing"));
            return Ok(out);
        }
        self.say(format!("· {run}: {} epoch(s)", schedule.epochs));
        // A run killed before its first checkpoint (or while replacing one) has a run.json;
        // resuming it lets the trainer recover the checkpoint or start the arm over.
        let resume = out.join("run.json").exists();
        let hooks = Hooks {
            progress: self.hooks.progress,
            interrupt: self.hooks.interrupt.clone(),
            ..Hooks::default()
        };
        match train(self.recipe(model_dir, schedule), &out, resume, &hooks)? {
            Outcome::Finished { .. } => Ok(out),
            Outcome::Interrupted { .. } => Err(Error::Refused {
                path: out,
                msg: "interrupted; run the same command again to continue".into(),
            }),
        }
    }

    /// The results of the base and of every arm with finished runs: not only this call's
    /// `--only`, so that a study grown arm by arm reports all of it, and `--only base`
    /// rewrites the report without training.
    fn collect_all(&self, base_run: PathBuf) -> Result<Vec<ArmResult>> {
        let l = self.cfg.base_depth;
        let what = "base ViT of depth L, pretrained from scratch";
        let mut results = vec![collect("base", what, &[base_run], l, 0)?];
        let base_images = results[0].train_images;
        for arm in ARMS {
            let dirs: Vec<PathBuf> = self
                .seeds_of(arm)
                .into_iter()
                .map(|s| self.dir.join("runs").join(run_name(arm, s)))
                .filter(|d| d.join("model").join("config.json").exists())
                .collect();
            if dirs.is_empty() {
                continue;
            }
            // Arms that start from the base carry its pretraining on the plot's x axis.
            let offset = if arm.name.starts_with("scratch") {
                0
            } else {
                base_images
            };
            results.push(collect(arm.name, arm.what, &dirs, arm.depth(l), offset)?);
        }
        Ok(results)
    }
}
