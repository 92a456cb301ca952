//! The reproduction study (`scalenet reproduce`) and its small sibling (`scalenet demo`):
//! pretrain a base ViT of depth L, grow it to 2L, fine-tune for E epochs, and compare against
//! the baselines the paper's claim is about, all with one recipe.
//!
//! Every arm is an ordinary `train` run in its own directory under the study directory, so a
//! study that is stopped can be re-run and continues where it was: finished arms are reused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::model_dir::build_network;
use crate::checkpoint::{load_model, save_model, ModelConfig};
use crate::error::{Error, Result};
use crate::growth::{expand, expand_swin, AdapterSpec, ExpandOptions, InitMode, MapStrategy};
use crate::model::RandomInit;
use crate::network::Network;
use crate::ops::precision::Precision;
use crate::plot::{mean_std, render, Chart, Dots, Series};
use crate::train::optim::TrainOnly;
use crate::train::trainer::{read_metrics, write_json, EpochMetrics};
use crate::train::{train, Hooks, Outcome, TrainConfig};
use crate::units::thousands;

/// Everything that sizes a study; saved as `study.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyConfig {
    /// `vit`, or `swin`: two stages of `base_depth` blocks each (heads h and 2h, window 7),
    /// every stage grown to 2L.
    #[serde(default = "vit_family")]
    pub family: String,
    pub data: String,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    pub val_split: f64,
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    /// L; the grown and from-scratch deep models have 2L positions.
    pub base_depth: usize,
    /// Epochs to pretrain the base.
    pub base_epochs: usize,
    /// E: epochs of fine-tuning after growth (scratch-long trains 3E).
    pub epochs: usize,
    /// Seeds for the arms the claim rests on (grown, identity, scratch 3E).
    pub seeds: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub smoothing: f64,
    pub drop_path: f64,
    /// Mixup alpha (0 = off).
    #[serde(default)]
    pub mixup: f64,
    /// RandAugment (ops per image, magnitude), as `train --rand-augment`.
    #[serde(default)]
    pub rand_augment: Option<(usize, f64)>,
    /// Random-erasing probability.
    #[serde(default)]
    pub reprob: f64,
    pub adapter_rank: usize,
    pub adapter_scale: f64,
    pub workers: usize,
    pub device: String,
    /// Arms to run (all when empty).
    pub only: Vec<String>,
    /// The arithmetic of the matrix products (resolved, never auto). Like `only`, not one of
    /// the settings: bf16 and f32 train to the same accuracy (PERFORMANCE.md), and a study may
    /// move to a CPU where the other one is faster. Each run's run.json says which it used.
    #[serde(default, skip_serializing)]
    pub precision: Precision,
}

fn vit_family() -> String {
    "vit".into()
}

impl StudyConfig {
    /// The settings behind the results, as study.json keeps them: which arms one call runs is
    /// not one of them (a study grows by `--only`).
    fn settings(&self) -> StudyConfig {
        StudyConfig {
            only: Vec::new(),
            precision: Precision::default(),
            ..self.clone()
        }
    }

    /// The committed study: full Fashion-MNIST, sized for about 90 minutes on 2 CPU cores.
    pub fn reproduce() -> Self {
        Self {
            family: vit_family(),
            data: "fmnist".into(),
            train_subset: None,
            test_subset: None,
            val_split: 0.1,
            img_size: 28,
            patch_size: 7,
            embed_dim: 72,
            num_heads: 3,
            base_depth: 3,
            base_epochs: 3,
            epochs: 1,
            seeds: 3,
            batch_size: 256,
            lr: 2e-3,
            warmup_epochs: 0.3,
            weight_decay: 0.05,
            smoothing: 0.1,
            drop_path: 0.0,
            mixup: 0.0,
            rand_augment: None,
            reprob: 0.0,
            adapter_rank: 32,
            adapter_scale: 0.1,
            workers: 2,
            device: "flex".into(),
            only: vec![],
            precision: Precision::F32,
        }
    }

    /// The demo: the built-in subset, a few minutes on 2 cores.
    pub fn demo() -> Self {
        Self {
            data: "fmnist-mini".into(),
            base_depth: 2,
            base_epochs: 6,
            epochs: 3,
            seeds: 1,
            batch_size: 128,
            warmup_epochs: 0.5,
            only: ["base", "grown", "scratch-3E"].map(String::from).to_vec(),
            ..Self::reproduce()
        }
    }
}

/// The base's seed, and so the seed of the validation carve of every arm grown from it.
const BASE_SEED: u64 = 0;

/// One arm: how its model is made and how long it trains.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arm {
    pub name: &'static str,
    pub what: &'static str,
    pub epochs_factor: usize,
    pub seeded: bool,
    /// Depth in halves of L: 4 is 2L (the headline's), 3 is 1.5L, 6 is 3L, 2 the base's.
    pub halves: usize,
    /// The study's learning rate is divided by this (1 but for the fine-tuning-rate arms).
    pub lr_divisor: usize,
}

impl Arm {
    pub fn depth(&self, l: usize) -> usize {
        self.halves * l / 2
    }
}

const fn arm(
    name: &'static str,
    what: &'static str,
    epochs_factor: usize,
    seeded: bool,
    halves: usize,
) -> Arm {
    Arm {
        name,
        what,
        epochs_factor,
        seeded,
        halves,
        lr_divisor: 1,
    }
}

/// Every arm a study can run. Without `--only`, a study runs the headline arms (the first
/// seven); the scaling and variant arms are chosen by name.
pub const ARMS: &[Arm] = &[
    arm(
        "grown",
        "base grown to 2L (ScaleNet: shared blocks + adapters, paper init), E epochs",
        1,
        true,
        4,
    ),
    arm(
        "grown-identity",
        "base grown to 2L with identity init (gates), E epochs",
        1,
        true,
        4,
    ),
    arm("scratch-3E", "2L from scratch, 3E epochs", 3, true, 4),
    arm("scratch-E", "2L from scratch, E epochs", 1, false, 4),
    arm(
        "stacked",
        "base stacked to 2L as independent copies (no sharing), E epochs",
        1,
        false,
        4,
    ),
    arm(
        "shared-only",
        "base grown to 2L, shared blocks without adapters, E epochs",
        1,
        false,
        4,
    ),
    arm(
        "base+E",
        "the base (depth L) trained E more epochs",
        1,
        false,
        2,
    ),
    // The scaling curve: the same base grown to 1.5L and 3L, and scratch models of those depths.
    arm(
        "grown-1.5L",
        "base grown to 1.5L (paper init), E epochs",
        1,
        false,
        3,
    ),
    arm(
        "grown-3L",
        "base grown to 3L (paper init), E epochs",
        1,
        false,
        6,
    ),
    arm(
        "scratch-1.5L-3E",
        "1.5L from scratch, 3E epochs",
        3,
        false,
        3,
    ),
    arm("scratch-3L-3E", "3L from scratch, 3E epochs", 3, false, 6),
    // What a user would try to spend less.
    arm(
        "adapters-only",
        "base grown to 2L, only adapters trained (shared blocks frozen), E epochs",
        1,
        false,
        4,
    ),
    arm(
        "interleave",
        "base grown to 2L with the interleave map (0,0,1,1,...), E epochs",
        1,
        false,
        4,
    ),
    arm(
        "rank-8",
        "base grown to 2L with adapter rank 8, E epochs",
        1,
        false,
        4,
    ),
    arm(
        "rank-64",
        "base grown to 2L with adapter rank 64, E epochs",
        1,
        false,
        4,
    ),
    // Both arms that start from the converged base dip during a warm-up to the from-scratch
    // rate; a user fine-tuning would take a lower one.
    Arm {
        lr_divisor: 4,
        ..arm(
            "grown-low-lr",
            "base grown to 2L (paper init), E epochs at a quarter of the learning rate",
            1,
            false,
            4,
        )
    },
    Arm {
        lr_divisor: 4,
        ..arm(
            "base+E-low-lr",
            "the base (depth L) trained E more epochs at a quarter of the learning rate",
            1,
            false,
            2,
        )
    },
];

/// The arms a study runs when `--only` is not given.
const HEADLINE_ARMS: usize = 7;
/// The scaling arms follow the headline ones in `ARMS`; the variants follow them.
const SCALING_ARMS: usize = 4;

/// Results of one arm over its seeds.
#[derive(Clone, Debug, Serialize)]
pub struct ArmResult {
    pub name: String,
    pub what: String,
    pub seeds: usize,
    pub test_top1: Vec<f64>,
    pub val_top1: Vec<f64>,
    pub params_total: usize,
    pub params_trainable: usize,
    pub depth: usize,
    pub epochs: usize,
    pub train_images: u64,
    pub wall_s: f64,
    pub img_per_s: f64,
    /// Mean test top-1 against cumulative training images (including the base's pretraining
    /// for arms that start from the base), per epoch.
    pub curve: Vec<(f64, f64)>,
    /// Images the base's pretraining added to `curve`'s x axis.
    pub offset: u64,
    /// The precision its runs trained in ("f32", "bf16", or both where seeds differ), from
    /// their run.json: a study may go on under another precision than it began with.
    pub precision: String,
    /// The CPUs its runs' epochs ran on, with the threads they trained with, from metrics.jsonl
    /// (empty for runs made before it recorded them): a study may go on on another machine.
    pub cpus: Vec<String>,
}

/// Runs (or continues) a study in `dir`; returns the results and writes RESULTS.md and
/// results.png there. `hooks.progress` shows progress; setting `hooks.interrupt` (Ctrl-C in
/// the CLI) checkpoints the running arm and returns an error that says to run the same command
/// again.
pub fn run_study(cfg: &StudyConfig, dir: &Path, hooks: &Hooks) -> Result<Vec<ArmResult>> {
    let progress = hooks.progress;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let study_json = dir.join("study.json");
    if study_json.exists() {
        let old: StudyConfig = crate::train::trainer::read_json(&study_json)?;
        if old.settings() != cfg.settings() {
            return Err(Error::Refused {
                path: study_json,
                msg: "holds a study with other settings; choose another --out".into(),
            });
        }
    }
    // The base always runs (every other arm starts from it or is compared with it).
    let known = |o: &str| o == "base" || ARMS.iter().any(|a| a.name == o);
    if let Some(bad) = cfg.only.iter().find(|o| !known(o)) {
        return Err(Error::InvalidModel(format!(
            "--only {bad}: no such arm (arms: {})",
            ARMS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
        )));
    }
    write_json(&study_json, &cfg.settings())?;
    let headline = |name: &str| ARMS[..HEADLINE_ARMS].iter().any(|a| a.name == name);
    let wants = |name: &str| {
        if cfg.only.is_empty() {
            headline(name)
        } else {
            cfg.only.iter().any(|o| o == name)
        }
    };
    // `data_seed`: an arm that starts from the base carves the base's validation split; with its
    // own seed's carve, most of its validation images would be the base's training images.
    let recipe = |model_dir: PathBuf,
                  epochs: usize,
                  seed: u64,
                  data_seed: Option<u64>,
                  train_only,
                  lr|
     -> TrainConfig {
        TrainConfig {
            epochs,
            train_only,
            lr,
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
            seed,
            data_seed,
            workers: cfg.workers,
            device: cfg.device.clone(),
            precision: cfg.precision,
            ..TrainConfig::new(model_dir, cfg.data.clone())
        }
    };
    let say = |s: String| {
        if progress {
            eprintln!("{s}");
        }
    };
    let models = dir.join("models");
    let swin = cfg.family == "swin";
    let arch = if swin {
        "swin_tiny_patch4_window7_224"
    } else {
        "deit_tiny_patch16_224"
    };
    let model_args = |depth: usize| {
        if swin {
            json!({"img_size": cfg.img_size, "patch_size": cfg.patch_size, "in_chans": 1, "num_classes": 10,
                   "embed_dim": cfg.embed_dim, "depths": [depth, depth],
                   "num_heads": [cfg.num_heads, 2 * cfg.num_heads], "window_size": 7})
        } else {
            json!({"img_size": cfg.img_size, "patch_size": cfg.patch_size, "in_chans": 1, "num_classes": 10,
                   "embed_dim": cfg.embed_dim, "depth": depth, "num_heads": cfg.num_heads})
        }
    };
    let init_model = |name: &str, depth: usize, seed: u64| -> Result<PathBuf> {
        let out = models.join(name);
        if !out.join("config.json").exists() {
            let mc =
                ModelConfig::from_preset(arch, model_args(depth).as_object().expect("object"))?;
            let device = burn::tensor::Device::flex();
            let m = build_network(&mc, &mut RandomInit::new(seed), &device);
            save_model(&out, &mc, &m)?;
        }
        Ok(out)
    };
    // Runs one training arm unless already finished.
    let run_arm = |run: &str,
                   model_dir: PathBuf,
                   epochs: usize,
                   seed: u64,
                   data_seed: Option<u64>,
                   train_only: TrainOnly,
                   lr: f64|
     -> Result<PathBuf> {
        let out = dir.join("runs").join(run);
        if out.join("model").join("config.json").exists() {
            say(format!("· {run}: done earlier, reusing"));
            return Ok(out);
        }
        say(format!("· {run}: {epochs} epoch(s)"));
        // A run killed before its first checkpoint (or while replacing one) has a run.json;
        // resuming it lets the trainer recover the checkpoint or start the arm over.
        let resume = out.join("run.json").exists();
        let hooks = Hooks {
            progress,
            interrupt: hooks.interrupt.clone(),
            ..Hooks::default()
        };
        match train(
            recipe(model_dir, epochs, seed, data_seed, train_only, lr),
            &out,
            resume,
            &hooks,
        )? {
            Outcome::Finished { .. } => Ok(out),
            Outcome::Interrupted { .. } => Err(Error::Refused {
                path: out,
                msg: "interrupted; run the same command again to continue".into(),
            }),
        }
    };

    // 1. The base: depth L, pretrained for E_base epochs.
    let l = cfg.base_depth;
    let base_run = run_arm(
        "base",
        init_model("base-init", l, 1000)?,
        cfg.base_epochs,
        BASE_SEED,
        None,
        TrainOnly::All,
        cfg.lr,
    )?;
    let base_dir = base_run.join("model");
    let grow = |name: &str, opts: ExpandOptions| -> Result<PathBuf> {
        let out = models.join(name);
        if !out.join("config.json").exists() {
            let base = load_model(&base_dir, &burn::tensor::Device::flex())?;
            let (c, n) = match base.network {
                Network::Swin(m) => expand_swin(m, &base.config, &opts)?,
                Network::Plain(m) => expand(m, &base.config, &opts)?,
                _ => unreachable!("the study's base is a plain model"),
            };
            save_model(&out, &c, &n)?;
        }
        Ok(out)
    };
    let grow_opts = |init: InitMode, adapter: bool, no_share: bool, seed: u64| ExpandOptions {
        depth: 2 * l,
        depths: if swin { vec![2 * l; 2] } else { Vec::new() },
        map: MapStrategy::Cyclic,
        adapter: adapter.then(|| AdapterSpec {
            rank: cfg.adapter_rank,
            scale: cfg.adapter_scale,
            ..AdapterSpec::default()
        }),
        unshared_norms: false,
        init,
        no_share,
        seed,
    };
    let e = cfg.epochs;
    let seeds_of = |arm: &Arm| -> Vec<u64> {
        if arm.seeded {
            (0..cfg.seeds as u64).collect()
        } else {
            vec![0]
        }
    };
    for arm in ARMS {
        if !wants(arm.name) {
            continue;
        }
        let d = arm.depth(l);
        let paper = |s: u64| grow_opts(InitMode::Paper, true, false, s);
        let at_depth = |o: ExpandOptions| ExpandOptions {
            depth: d,
            depths: if swin { vec![d; 2] } else { Vec::new() },
            ..o
        };
        let ranked = |r: usize| {
            let mut o = paper(0);
            if let Some(a) = &mut o.adapter {
                a.rank = r;
            }
            o
        };
        let train_only = if arm.name == "adapters-only" {
            TrainOnly::Adapters
        } else {
            TrainOnly::All
        };
        for s in seeds_of(arm) {
            let run = run_name(arm, s);
            let model = match arm.name {
                "grown-1.5L" | "grown-3L" => grow(arm.name, at_depth(paper(s)))?,
                "adapters-only" | "grown-low-lr" => grow("grown-s0", paper(0))?,
                "interleave" => grow(
                    "interleave",
                    ExpandOptions {
                        map: MapStrategy::Interleave,
                        ..paper(0)
                    },
                )?,
                "rank-8" => grow("rank-8", ranked(8))?,
                "rank-64" => grow("rank-64", ranked(64))?,
                "grown" => grow(
                    &format!("grown-s{s}"),
                    grow_opts(InitMode::Paper, true, false, s),
                )?,
                "grown-identity" => grow(
                    &format!("grown-identity-s{s}"),
                    grow_opts(InitMode::Identity, true, false, s),
                )?,
                "stacked" => grow("stacked", grow_opts(InitMode::Paper, false, true, s))?,
                "shared-only" => grow("shared-only", grow_opts(InitMode::Paper, false, false, s))?,
                "base+E" | "base+E-low-lr" => base_dir.clone(),
                "scratch-E" | "scratch-3E" => {
                    init_model(&format!("scratch-init-s{s}"), 2 * l, 2000 + s)?
                }
                _ => init_model(&format!("scratch-init-{d}-s{s}"), d, 2000 + s)?,
            };
            let lr = cfg.lr / arm.lr_divisor as f64;
            let from_base = !arm.name.starts_with("scratch");
            let data_seed = from_base.then_some(BASE_SEED);
            run_arm(
                &run,
                model,
                e * arm.epochs_factor,
                s,
                data_seed,
                train_only,
                lr,
            )?;
        }
    }

    // Collect.
    let mut results = vec![collect(
        "base",
        "base ViT of depth L, pretrained from scratch",
        &[base_run],
        l,
        0,
    )?];
    let base_images = results[0].train_images;
    // Every arm with finished runs is reported, not only this call's `--only`: a study grown
    // arm by arm reports all of it, and `--only base` rewrites the report without training.
    for arm in ARMS {
        let dirs: Vec<PathBuf> = seeds_of(arm)
            .into_iter()
            .map(|s| dir.join("runs").join(run_name(arm, s)))
            .filter(|d| d.join("model").join("config.json").exists())
            .collect();
        if dirs.is_empty() {
            continue;
        }
        let depth = arm.depth(l);
        // Arms that start from the base carry its pretraining on the plot's x axis.
        let offset = if arm.name.starts_with("scratch") {
            0
        } else {
            base_images
        };
        results.push(collect(arm.name, arm.what, &dirs, depth, offset)?);
    }
    write_report(cfg, dir, &results)?;
    Ok(results)
}

/// The run directory's name of one seed of an arm.
fn run_name(arm: &Arm, seed: u64) -> String {
    format!("{}-s{seed}", arm.name)
}

fn collect(
    name: &str,
    what: &str,
    dirs: &[PathBuf],
    depth: usize,
    offset: u64,
) -> Result<ArmResult> {
    let metrics: Vec<Vec<EpochMetrics>> = dirs
        .iter()
        .map(|d| read_metrics(d))
        .collect::<Result<_>>()?;
    let last = |m: &Vec<EpochMetrics>| {
        m.last()
            .cloned()
            .ok_or_else(|| Error::InvalidModel(format!("{name}: no metrics")))
    };
    let lasts: Vec<EpochMetrics> = metrics.iter().map(last).collect::<Result<_>>()?;
    let mut precisions: Vec<String> = dirs
        .iter()
        .map(|d| {
            crate::train::trainer::read_json::<TrainConfig>(&d.join("run.json"))
                .map(|c| c.precision.to_string())
        })
        .collect::<Result<_>>()?;
    precisions.sort();
    precisions.dedup();
    let mut cpus: Vec<String> = metrics
        .iter()
        .flatten()
        .filter_map(|m| {
            let cpu = m.cpu.as_deref()?;
            Some(m.threads.map_or(cpu.to_string(), |n| with_threads(cpu, n)))
        })
        .collect();
    cpus.sort();
    cpus.dedup();
    let loaded = load_model(&dirs[0].join("model"), &burn::tensor::Device::flex())?;
    let total = loaded.network.num_params();
    let trainable = match (&loaded.network, name) {
        (Network::Grown(g), "adapters-only") => g.param_counts().adjustments(),
        (Network::GrownSwin(g), "adapters-only") => g.param_counts().adjustments(),
        _ => total,
    };
    let epochs = metrics[0].len();
    let curve = (0..epochs)
        .map(|i| {
            let imgs = (offset + metrics[0][i].train_images) as f64;
            let accs: Vec<f64> = metrics
                .iter()
                .filter_map(|m| m.get(i).and_then(|x| x.test_top1))
                .collect();
            (imgs, 100.0 * mean_std(&accs).0)
        })
        .collect();
    let wall: Vec<f64> = metrics
        .iter()
        .map(|m| m.iter().map(|x| x.wall_s).sum())
        .collect();
    Ok(ArmResult {
        name: name.into(),
        what: what.into(),
        seeds: dirs.len(),
        test_top1: lasts.iter().filter_map(|m| m.test_top1).collect(),
        val_top1: lasts.iter().filter_map(|m| m.val_top1).collect(),
        params_total: total,
        params_trainable: trainable,
        depth,
        epochs,
        train_images: lasts[0].train_images,
        wall_s: mean_std(&wall).0,
        img_per_s: mean_std(
            &lasts
                .iter()
                .map(|m| m.img_per_s.unwrap_or(0.0))
                .collect::<Vec<_>>(),
        )
        .0,
        curve,
        offset,
        precision: precisions.join("/"),
        cpus,
    })
}

/// `variants.png`, when the study has variant arms: their validation top-1 (on which they are
/// read) next to the grown arm's and the base's, against the parameters each trains and per seed
/// with mean ± std. Returns whether it was written.
fn write_variants_plot(results: &[ArmResult], path: &Path) -> Result<bool> {
    let variants = &ARMS[HEADLINE_ARMS + SCALING_ARMS..];
    if !results
        .iter()
        .any(|r| variants.iter().any(|a| a.name == r.name))
    {
        return Ok(false);
    }
    let rows: Vec<&ArmResult> = ["base", "grown"]
        .into_iter()
        .chain(variants.iter().map(|a| a.name))
        .filter_map(|n| results.iter().find(|r| r.name == n))
        .collect();
    let val = |r: &ArmResult| -> Vec<f64> { r.val_top1.iter().map(|a| 100.0 * a).collect() };
    // Both panels list the arms in one order, so that an arm has one colour in both.
    let cost = Chart {
        title: "validation top-1 vs parameters trained".into(),
        x_label: "parameters trained (thousands)".into(),
        y_label: "top-1 %".into(),
        series: rows
            .iter()
            .map(|r| Series {
                name: r.name.clone(),
                points: vec![(r.params_trainable as f64 / 1000.0, mean_std(&val(r)).0)],
                markers: true,
                ..Series::default()
            })
            .collect(),
    };
    let finals = Dots {
        title: "final validation top-1".into(),
        x_label: "top-1 %".into(),
        rows: rows.iter().map(|r| (r.name.clone(), val(r))).collect(),
    };
    render(&[cost.into(), finals.into()], path)?;
    Ok(true)
}

/// `scaling.png`, when the study has grown or scratch arms at more than one depth: accuracy
/// against added parameters and against training images. Returns whether it was written.
fn write_scaling_plot(results: &[ArmResult], path: &Path) -> Result<bool> {
    let Some(base) = results.iter().find(|r| r.name == "base") else {
        return Ok(false);
    };
    let acc = |r: &ArmResult| 100.0 * mean_std(&r.test_top1).0;
    let pick = |names: [&str; 3]| -> Vec<&ArmResult> {
        names
            .iter()
            .filter_map(|n| results.iter().find(|r| r.name == *n))
            .collect()
    };
    let grown = pick(["grown-1.5L", "grown", "grown-3L"]);
    let scratch = pick(["scratch-1.5L-3E", "scratch-3E", "scratch-3L-3E"]);
    if grown.len() < 2 && scratch.len() < 2 {
        return Ok(false);
    }
    // Each depth has its colour; grown lines are solid, scratch lines dashed, and each point
    // says its depth, so that the panels read without the table.
    let blocks = |r: &ArmResult| format!("{} blocks", r.depth);
    // The right panel's colours stand for depths, clear of the left panel's grown (0),
    // scratch (1) and base (7) slots.
    let mut depths: Vec<usize> = std::iter::once(base)
        .chain(grown.iter().chain(&scratch).copied())
        .map(|r| r.depth)
        .collect();
    depths.sort_unstable();
    depths.dedup();
    let colour = |r: &ArmResult| depths.iter().position(|&d| d == r.depth).map(|k| 2 + k);
    let added = |r: &ArmResult| (r.params_total as f64 - base.params_total as f64) / 1e3;
    let by_params = |name: &str, arms: &[&ArmResult], dashed: bool, colour: usize| Series {
        name: name.into(),
        points: arms.iter().map(|r| (added(r), acc(r))).collect(),
        markers: true,
        labels: arms.iter().map(|r| blocks(r)).collect(),
        dashed,
        colour: Some(colour),
    };
    let curve = |r: &ArmResult, dashed: bool| Series {
        name: if r.name == "base" {
            format!("base ({})", blocks(r))
        } else {
            format!(
                "{} ({})",
                if dashed { "scratch" } else { "grown" },
                blocks(r)
            )
        },
        points: r.curve.iter().map(|&(x, y)| (x / 1e3, y)).collect(),
        markers: true,
        dashed,
        colour: colour(r),
        ..Series::default()
    };
    render(
        &[
            Chart {
                title: "test top-1 vs parameters added to the base".into(),
                x_label: "parameters added to the base (thousands)".into(),
                y_label: "top-1 %".into(),
                series: vec![
                    Series {
                        name: format!("base ({})", blocks(base)),
                        points: vec![(0.0, acc(base))],
                        markers: true,
                        colour: Some(7),
                        ..Series::default()
                    },
                    by_params("grown", &grown, false, 0),
                    by_params("from scratch", &scratch, true, 1),
                ],
            }
            .into(),
            Chart {
                title: "test top-1 vs training images, per epoch".into(),
                x_label: "training images, base's included (thousands)".into(),
                y_label: "top-1 %".into(),
                // Grown models' curves start after the base's images.
                series: std::iter::once(curve(base, true))
                    .chain(grown.iter().map(|r| curve(r, false)))
                    .chain(scratch.iter().map(|r| curve(r, true)))
                    .collect(),
            }
            .into(),
        ],
        path,
    )?;
    Ok(true)
}

/// The results table as Markdown.
pub fn table(results: &[ArmResult]) -> String {
    let mut s = String::from(
        "| arm | depth | seeds | test top-1 (%) | val top-1 (%) | params | trained params | train images (this arm) | wall (s, mean) | img/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let (m, sd) = mean_std(&r.test_top1);
        let (vm, _) = mean_std(&r.val_top1);
        let acc = if r.seeds > 1 {
            format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * sd)
        } else {
            format!("{:.2}", 100.0 * m)
        };
        s.push_str(&format!(
            "| {} | {} | {} | {acc} | {:.2} | {} | {} | {} | {} | {:.0} |\n",
            r.name,
            r.depth,
            r.seeds,
            100.0 * vm,
            thousands(r.params_total),
            thousands(r.params_trainable),
            thousands(r.train_images as usize),
            thousands(r.wall_s as usize),
            r.img_per_s
        ));
    }
    s
}

/// The CPU (with its family/model numbers: VMs report one generic name for several
/// generations) and the threads that trained, for reports.
pub fn machine() -> String {
    let cpu = crate::ops::auto_precision::cpu_info();
    with_threads(&cpu.model, cpu.threads)
}

/// "AMD EPYC …, 2 threads" (or "1 thread").
fn with_threads(cpu: &str, threads: usize) -> String {
    let unit = if threads == 1 { "thread" } else { "threads" };
    format!("{cpu}, {threads} {unit}")
}

/// "beats scratch-3E by 0.80 points", or, where the seeds' spread is as large as the
/// difference, "is level with scratch-3E (…)": a tenth of a point between single runs is not a
/// result. Beyond noise means the difference of the means exceeds twice its standard error.
pub fn verdict(ours: &[f64], theirs: &[f64], name: &str) -> String {
    let (m1, s1) = mean_std(ours);
    let (m2, s2) = mean_std(theirs);
    let diff = 100.0 * (m1 - m2);
    let word = if diff >= 0.0 { "beats" } else { "trails" };
    if ours.len() < 2 || theirs.len() < 2 {
        return format!(
            "{word} {name} by {:.2} points (one seed on a side: no spread to judge the difference by)",
            diff.abs()
        );
    }
    let se = 100.0 * (s1 * s1 / ours.len() as f64 + s2 * s2 / theirs.len() as f64).sqrt();
    if diff.abs() > 2.0 * se {
        format!(
            "{word} {name} by {:.2} points (twice the standard error of the difference is {:.2})",
            diff.abs(),
            2.0 * se
        )
    } else {
        format!(
            "is level with {name}: {:+.2} points, within twice the standard error of the difference ({:.2})",
            diff,
            2.0 * se
        )
    }
}

/// "89.85 ± 0.15% (3 seeds)", or "89.67% (1 seed)": a spread of one run is not a spread.
fn over_seeds(mean: f64, std: f64, seeds: usize) -> String {
    match seeds {
        1 => format!("{:.2}% (1 seed)", 100.0 * mean),
        n => format!("{:.2} ± {:.2}% ({n} seeds)", 100.0 * mean, 100.0 * std),
    }
}

fn write_report(cfg: &StudyConfig, dir: &Path, results: &[ArmResult]) -> Result<()> {
    // results.png keeps to the base and the headline arms, so that a reader can tell the lines
    // apart; the scaling arms have scaling.png and the variants variants.png.
    let headline =
        |r: &&ArmResult| r.name == "base" || ARMS[..HEADLINE_ARMS].iter().any(|a| a.name == r.name);
    let series = |with_base: bool| -> Vec<Series> {
        results
            .iter()
            .filter(headline)
            .map(|r| {
                // The base keeps its slot (and colour) in both panels but has no points in the first.
                if !with_base && r.name == "base" {
                    return Series {
                        name: r.name.clone(),
                        markers: true,
                        ..Series::default()
                    };
                }
                let shift = if with_base { 0.0 } else { r.offset as f64 };
                let points = r
                    .curve
                    .iter()
                    .map(|&(x, y)| ((x - shift) / 1000.0, y))
                    .collect();
                Series {
                    name: r.name.clone(),
                    points,
                    markers: true,
                    ..Series::default()
                }
            })
            .collect()
    };
    // The arms end within a point or two of each other, which the curves' axis cannot show:
    // the third panel is the last epoch's accuracies alone, per seed and mean ± std.
    let finals = Dots {
        title: "final test top-1".into(),
        x_label: "top-1 %".into(),
        rows: results
            .iter()
            .filter(headline)
            .map(|r| {
                (
                    r.name.clone(),
                    r.test_top1.iter().map(|a| 100.0 * a).collect(),
                )
            })
            .collect(),
    };
    render(
        &[
            Chart {
                title: "test top-1 vs images trained in the arm".into(),
                x_label: "images after the base (thousands)".into(),
                y_label: "top-1 %".into(),
                series: series(false),
            }
            .into(),
            Chart {
                title: "test top-1 vs all training images".into(),
                x_label: "images incl. the base's pretraining (thousands)".into(),
                y_label: "top-1 %".into(),
                series: series(true),
            }
            .into(),
            finals.into(),
        ],
        &dir.join("results.png"),
    )?;
    let get = |n: &str| results.iter().find(|r| r.name == n);
    let scaling = write_scaling_plot(results, &dir.join("scaling.png"))?;
    let variants = write_variants_plot(results, &dir.join("variants.png"))?;
    let mut md = String::from("# Results\n\n");
    if let (Some(g), Some(s)) = (get("grown"), get("scratch-3E")) {
        let base_imgs = get("base").map_or(0, |b| b.train_images);
        let (gm, gs) = mean_std(&g.test_top1);
        let (sm, ss) = mean_std(&s.test_top1);
        md.push_str(&format!(
            "**Headline.** Grown 2L after E = {} epoch(s): test top-1 {}. \
             From scratch 2L after 3E = {} epochs: {}. The grown model {}, \
             with {} parameters against scratch's {} ({:.0}%). \
             The grown arm trained on {:.2}x fewer images than scratch-3E ({} vs {}); counting the base's \
             pretraining as well, the grown model saw {:.2}x as many images as scratch-3E ({} vs {}).\n\n",
            g.epochs, over_seeds(gm, gs, g.seeds), s.epochs, over_seeds(sm, ss, s.seeds),
            verdict(&g.test_top1, &s.test_top1, "scratch-3E"),
            thousands(g.params_total),
            thousands(s.params_total),
            100.0 * g.params_total as f64 / s.params_total.max(1) as f64,
            s.train_images as f64 / g.train_images.max(1) as f64,
            thousands(g.train_images as usize),
            thousands(s.train_images as usize),
            (g.train_images + base_imgs) as f64 / s.train_images.max(1) as f64,
            thousands((g.train_images + base_imgs) as usize),
            thousands(s.train_images as usize),
        ));
    }
    md.push_str(&table(results));
    // Wall times compare only on one CPU, and a study may go on on another machine: each arm
    // names the CPUs its runs recorded, numbered once below.
    let mut cpus: Vec<&str> = Vec::new();
    for c in results.iter().flat_map(|r| &r.cpus) {
        if !cpus.contains(&c.as_str()) {
            cpus.push(c);
        }
    }
    let ran = |r: &ArmResult| {
        let on: Vec<String> = r
            .cpus
            .iter()
            .filter_map(|c| cpus.iter().position(|k| k == c))
            .map(|i| format!("CPU {}", i + 1))
            .collect();
        let on = if on.is_empty() {
            "CPU not recorded".to_string()
        } else {
            on.join(" + ")
        };
        format!("{}, {on}", r.precision)
    };
    md.push_str("\nArms:\n\n");
    md.push_str(&format!(
        "- base: ViT of depth L = {}, {} epochs from scratch ({})\n",
        cfg.base_depth,
        cfg.base_epochs,
        results
            .iter()
            .find(|r| r.name == "base")
            .map_or("not run".to_string(), ran)
    ));
    for a in ARMS {
        if let Some(r) = results.iter().find(|r| r.name == a.name) {
            md.push_str(&format!("- {}: {} ({})\n", a.name, a.what, ran(r)));
        }
    }
    let cpu_list: Vec<String> = cpus
        .iter()
        .enumerate()
        .map(|(i, c)| format!("CPU {} = {c}", i + 1))
        .collect();
    let variants_png = if variants {
        "\nvariants.png shows the variants next to the grown arm they vary (and the base): validation top-1, \
         on which the variants are read, per seed and mean ± std, and against the parameters each trains.\n"
    } else {
        ""
    };
    md.push_str(&format!(
        "\nresults.png shows the base and the headline arms (grown to 2L and its baselines). Its left panel \
         counts only the images each arm trained on after the base (as the table's `train images` does); the right panel counts all training images behind a model, the base's \
         pretraining included for the arms that start from the base.\n{variants_png}\
         \nIn brackets above: the precision of each arm's matrix products and the CPUs (and threads) its runs trained on{}. \
         This report was rendered on {}. Test accuracy is the last epoch's; test top-1 of arms with several seeds is mean ± sample std. \
         `trained params` is below `params` only where the shared blocks are frozen (adapters-only). Wall time is training and evaluation per run. \
         The validation split is carved off the training set by the run's seed; arms that start from the base carve the base's, so that \
         their validation images are ones the base never trained on.\n",
        if cpu_list.is_empty() {
            String::new()
        } else {
            format!(" ({})", cpu_list.join("; "))
        },
        machine()
    ));
    if scaling {
        md.push_str(
            "\nscaling.png: test top-1 of the base grown to 1.5L, 2L and 3L (E epochs) next to scratch models of \
             the same depths (3E epochs), against the parameters each adds to the base and against the training \
             images behind each model (the base's pretraining included for the grown ones).\n",
        );
    }
    md.push_str(&format!(
        "\nSettings (`study.json`): `{}`\n",
        serde_json::to_string(&cfg.settings()).expect("serialisable")
    ));
    crate::checkpoint::atomic::atomic_write(&dir.join("RESULTS.md"), md.as_bytes())?;
    write_json(&dir.join("results.json"), &results)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_inside_the_seeds_spread_is_called_level() {
        let one = verdict(&[0.8968], &[0.8967], "scratch-3E");
        assert!(
            one.starts_with("beats scratch-3E by 0.01 points (one seed"),
            "{one}"
        );
        let level = verdict(&[0.899, 0.897, 0.898], &[0.897, 0.899, 0.896], "scratch-3E");
        assert!(
            level.starts_with("is level with scratch-3E: +0.07 points"),
            "{level}"
        );
        let beats = verdict(&[0.905, 0.906, 0.904], &[0.897, 0.898, 0.896], "scratch-3E");
        assert!(
            beats.starts_with("beats scratch-3E by 0.80 points"),
            "{beats}"
        );
        let trails = verdict(&[0.890, 0.891, 0.889], &[0.897, 0.898, 0.896], "scratch-3E");
        assert!(
            trails.starts_with("trails scratch-3E by 0.70 points"),
            "{trails}"
        );
    }
}
