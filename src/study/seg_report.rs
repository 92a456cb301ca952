//! The dense-prediction studies' report (segmentation, and detection with `family` `det`):
//! RESULTS.md (the table over seeds, the verdicts, the per-class scores) and results.png (the
//! validation score against training images, the test score per seed, the test score against
//! parameters). The score is mIoU for segmentors, COCO box AP for detectors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::verdict;
use super::seg_arms::{run_name, SegArm, SegStudyConfig, SEG_ARMS};
use crate::error::Result;
use crate::network::Network;
use crate::plot::{mean_std, render, Chart, Dots, Series};
use crate::train::run_dir::{read_json, read_metrics};
use crate::units::thousands;

/// A finished run's final evaluation; `final.json` in its directory. Percentages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SegFinal {
    pub val_miou: f64,
    pub val_aacc: f64,
    pub test_miou: f64,
    pub test_aacc: f64,
    pub test_macc: f64,
    /// Test IoU per class (NaN where a class is nowhere).
    pub test_iou: Vec<f64>,
    #[serde(flatten)]
    pub run: RunFacts,
}

/// What every dense-prediction run's `final.json` says about the model and the run besides
/// its scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunFacts {
    pub backbone_params: usize,
    pub head_params: usize,
    /// Blocks the backbone runs (a shared block counts at each of its positions).
    pub positions: usize,
    pub train_images: u64,
    pub wall_s: f64,
    /// The CPU the run trained on (its last epoch's).
    pub cpu: Option<String>,
}

impl RunFacts {
    /// The backbone's sizes and the head's, and the training images, wall time and CPU from
    /// the run's metrics.
    pub fn of_run(run: &Path, backbone: &Network, head_params: usize) -> Result<Self> {
        let metrics = read_metrics(run)?;
        let last = metrics.last();
        Ok(Self {
            backbone_params: backbone.num_params(),
            head_params,
            positions: backbone.depth(),
            train_images: last.map_or(0, |m| m.train_images),
            wall_s: metrics.iter().map(|m| m.wall_s).sum(),
            cpu: last.and_then(|m| m.cpu.clone()),
        })
    }
}

/// A detection run's final evaluation (COCO box AP as pycocotools'); `final.json`. Percentages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetFinal {
    pub val_ap: f64,
    pub val_ap50: f64,
    pub test_ap: f64,
    pub test_ap50: f64,
    pub test_ap75: f64,
    /// Test AP per class (-1 where a class has no ground truth, as pycocotools leaves it).
    pub test_class_ap: Vec<f64>,
    #[serde(flatten)]
    pub run: RunFacts,
}

/// What the report reads from a run's `final.json`, whichever the task.
pub trait StudyFinal: serde::de::DeserializeOwned {
    /// The headline score on the validation and the test split.
    fn val(&self) -> f64;
    fn test(&self) -> f64;
    /// The table's other test columns ([`Metric::extra`]).
    fn extra(&self) -> Vec<f64>;
    /// The test score of each class; not finite (or negative) where a class is absent.
    fn per_class(&self) -> &[f64];
    fn facts(&self) -> &RunFacts;
}

impl StudyFinal for SegFinal {
    fn val(&self) -> f64 {
        self.val_miou
    }
    fn test(&self) -> f64 {
        self.test_miou
    }
    fn extra(&self) -> Vec<f64> {
        vec![self.test_aacc, self.test_macc]
    }
    fn per_class(&self) -> &[f64] {
        &self.test_iou
    }
    fn facts(&self) -> &RunFacts {
        &self.run
    }
}

impl StudyFinal for DetFinal {
    fn val(&self) -> f64 {
        self.val_ap
    }
    fn test(&self) -> f64 {
        self.test_ap
    }
    fn extra(&self) -> Vec<f64> {
        vec![self.test_ap50, self.test_ap75]
    }
    fn per_class(&self) -> &[f64] {
        &self.test_class_ap
    }
    fn facts(&self) -> &RunFacts {
        &self.run
    }
}

/// How a task's score is named and where its per-epoch value is.
pub struct Metric {
    pub name: &'static str,
    pub extra: [&'static str; 2],
    /// What the per-class table holds.
    pub per_class: &'static str,
    pub epoch_value: fn(&crate::train::config::EpochMetrics) -> Option<f64>,
}

const SEG_METRIC: Metric = Metric {
    name: "mIoU",
    extra: ["aAcc", "mAcc"],
    per_class: "IoU",
    epoch_value: |m| m.val_miou,
};

const DET_METRIC: Metric = Metric {
    name: "AP",
    extra: ["AP50", "AP75"],
    per_class: "AP",
    epoch_value: |m| m.val_map,
};

/// An arm's finished runs, seed order.
struct ArmRuns<F> {
    arm: &'static SegArm,
    dirs: Vec<PathBuf>,
    finals: Vec<F>,
}

impl<F: StudyFinal> ArmRuns<F> {
    fn tests(&self) -> Vec<f64> {
        self.finals.iter().map(F::test).collect()
    }
}

fn finished<F: StudyFinal>(cfg: &SegStudyConfig, dir: &Path) -> Vec<ArmRuns<F>> {
    let mut arms = Vec::new();
    for arm in SEG_ARMS {
        let mut r = ArmRuns {
            arm,
            dirs: Vec::new(),
            finals: Vec::new(),
        };
        for s in 0..arm.seeds(cfg) {
            let d = dir.join("runs").join(run_name(arm, s));
            if let Ok(f) = read_json::<F>(&d.join("final.json")) {
                r.dirs.push(d);
                r.finals.push(f);
            }
        }
        if !r.finals.is_empty() {
            arms.push(r);
        }
    }
    arms
}

/// Writes RESULTS.md and results.png in the study directory (nothing before a run finished).
pub fn write_seg_report(cfg: &SegStudyConfig, dir: &Path) -> Result<()> {
    if cfg.is_det() {
        write_report::<DetFinal>(cfg, dir, &DET_METRIC)
    } else {
        write_report::<SegFinal>(cfg, dir, &SEG_METRIC)
    }
}

fn write_report<F: StudyFinal>(cfg: &SegStudyConfig, dir: &Path, m: &Metric) -> Result<()> {
    let arms = finished::<F>(cfg, dir);
    if arms.is_empty() {
        return Ok(());
    }
    let mut md = header(cfg, &arms);
    let [e1, e2] = m.extra;
    let n = m.name;
    md.push_str(&format!(
        "| arm | positions | seeds | backbone params | head params | val {n} | test {n} | test {e1} | test {e2} | wall time per run |\n|---|---|---|---|---|---|---|---|---|---|\n",
    ));
    for r in &arms {
        md.push_str(&row(r));
    }
    md.push_str(&verdicts(&arms, m));
    md.push_str(&per_class(cfg, &arms, m));
    md.push_str("\nArms:\n\n");
    for r in &arms {
        md.push_str(&format!(
            "- **{}** (`{}`): {}.\n",
            r.arm.name, r.arm.backbone, r.arm.what
        ));
    }
    md.push_str("\n![results](results.png)\n");
    crate::checkpoint::atomic::atomic_write(&dir.join("RESULTS.md"), md.as_bytes())?;
    figure(&arms, m, &dir.join("results.png"))
}

fn header<F: StudyFinal>(cfg: &SegStudyConfig, arms: &[ArmRuns<F>]) -> String {
    let cpus: Vec<String> = arms
        .iter()
        .flat_map(|r| r.finals.iter().filter_map(|f| f.facts().cpu.clone()))
        .fold(Vec::new(), |mut v, c| {
            if !v.contains(&c) {
                v.push(c);
            }
            v
        });
    let subset = |n: Option<usize>| n.map_or("all".into(), thousands);
    let cpus = if cpus.is_empty() {
        "unknown".into()
    } else {
        cpus.join("; ")
    };
    let (size, bs, lr, wd) = (cfg.img_size, cfg.batch_size, cfg.lr, cfg.weight_decay);
    let (train, epochs, warm) = (subset(cfg.train_subset), cfg.epochs, cfg.warmup_epochs);
    let (backbones, data, val) = (cfg.backbones.display(), &cfg.data, subset(cfg.val_subset));
    if cfg.is_det() {
        return format!(
            "# Detection study\n\ntorchvision's RetinaNet (FPN and head {} channels wide, anchors four times each \
             level's stride) around each backbone of the classification study in `{backbones}`, on the boxes of `{data}` \
             resized to {size}×{size}. Every detector trains the same {train} training scenes for {epochs} \
             epochs (batches of {bs}, AdamW at {lr:e}, weight decay {wd}, linear warm-up for {warm} epochs then \
             cosine decay), horizontal flips; validation AP after each epoch on {val} validation scenes. The \
             final numbers are pycocotools' box AP over the whole validation and test splits. Mean ± sample \
             standard deviation over seeds (the detector's seed, and the backbone's where the classification \
             study has that seed). Trained on: {cpus}.\n\n",
            cfg.channels
        );
    }
    format!(
        "# Segmentation study\n\nUperNet (mmsegmentation's `UPerHead`, channels {}, with its FCN auxiliary head at 0.4, \
         channels {}) around each backbone of the classification study in `{backbones}`, on `{data}` resized to {size}×{size}. \
         Every segmentor trains the same {train} training scenes for {epochs} epochs (batches of {bs}, AdamW at {lr:e}, \
         weight decay {wd}, linear warm-up for {warm} epochs then mmsegmentation's poly decay to 0), \
         random resize, crop, flip and photometric distortion; validation mIoU after each epoch on {val} \
         validation scenes. The final numbers are mmsegmentation's `IoUMetric` over the whole validation \
         and test splits, whole-image inference. Mean ± sample standard deviation over seeds (the \
         segmentor's seed, and the backbone's where the classification study has that seed). \
         Trained on: {cpus}.\n\n",
        cfg.channels, cfg.aux_channels,
    )
}

fn over_seeds(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    match v.len() {
        1 => format!("{m:.2}%"),
        _ => format!("{m:.2} ± {s:.2}%"),
    }
}

fn row<F: StudyFinal>(r: &ArmRuns<F>) -> String {
    let RunFacts {
        backbone_params: backbone,
        head_params: head,
        positions,
        ..
    } = *r.finals[0].facts();
    let get = |g: &dyn Fn(&F) -> f64| r.finals.iter().map(g).collect::<Vec<_>>();
    let wall = get(&|f| f.facts().wall_s).iter().sum::<f64>() / r.finals.len() as f64;
    format!(
        "| {} | {positions} | {} | {} | {} | {} | {} | {} | {} | {:.1} min |\n",
        r.arm.name,
        r.finals.len(),
        thousands(backbone),
        thousands(head),
        over_seeds(&get(&F::val)),
        over_seeds(&get(&F::test)),
        over_seeds(&get(&|f| f.extra()[0])),
        over_seeds(&get(&|f| f.extra()[1])),
        wall / 60.0
    )
}

/// The claim's comparisons, in the test score: grown against each other arm.
fn verdicts<F: StudyFinal>(arms: &[ArmRuns<F>], m: &Metric) -> String {
    let get = |n: &str| arms.iter().find(|r| r.arm.name == n);
    let frac = |r: &ArmRuns<F>| r.tests().iter().map(|v| v / 100.0).collect::<Vec<_>>();
    let mut s = String::from("\n");
    let Some(grown) = get("grown") else {
        return s;
    };
    for other in ["base", "scratch", "unshared"] {
        if let Some(o) = get(other) {
            s.push_str(&format!(
                "- Test {}: grown {}.\n",
                m.name,
                verdict(&frac(grown), &frac(o), other)
            ));
        }
    }
    s
}

/// The test score per class, the mean over an arm's seeds.
fn per_class<F: StudyFinal>(cfg: &SegStudyConfig, arms: &[ArmRuns<F>], m: &Metric) -> String {
    let classes = if cfg.is_det() {
        crate::data::det::DetDataset::open(&cfg.data).map(|d| d.classes)
    } else {
        crate::data::seg::SegDataset::open(&cfg.data).map(|d| d.classes)
    };
    let Ok(classes) = classes else {
        return String::new();
    };
    let mut s = format!(
        "\nTest {} per class (mean over seeds):\n\n| class |",
        m.per_class
    );
    for r in arms {
        s.push_str(&format!(" {} |", r.arm.name));
    }
    s.push_str(&format!("\n|---|{}\n", "---|".repeat(arms.len())));
    for (k, name) in classes.iter().enumerate() {
        s.push_str(&format!("| {name} |"));
        for r in arms {
            let v: Vec<f64> = r
                .finals
                .iter()
                .filter_map(|f| f.per_class().get(k).copied())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .collect();
            s.push_str(&format!(" {:.1} |", mean_std(&v).0));
        }
        s.push('\n');
    }
    s
}

/// The validation score against training images (mean over seeds), the test score per seed,
/// and the test score against backbone parameters.
fn figure<F: StudyFinal>(arms: &[ArmRuns<F>], m: &Metric, path: &Path) -> Result<()> {
    let mut curves = Vec::new();
    let mut params = Vec::new();
    for (i, r) in arms.iter().enumerate() {
        curves.push(Series {
            name: r.arm.name.into(),
            points: mean_curve(&r.dirs, m)?,
            markers: true,
            colour: Some(i),
            ..Series::default()
        });
        params.push(Series {
            name: r.arm.name.into(),
            points: vec![(
                r.finals[0].facts().backbone_params as f64 / 1e3,
                mean_std(&r.tests()).0,
            )],
            markers: true,
            labels: vec![format!("{} positions", r.finals[0].facts().positions)],
            colour: Some(i),
            ..Series::default()
        });
    }
    let n = m.name;
    let dots = Dots {
        title: format!("test {n}, each seed"),
        x_label: format!("test {n} (%)"),
        rows: arms
            .iter()
            .map(|r| (r.arm.name.to_string(), r.tests()))
            .collect(),
    };
    let chart = |title: &str, x: &str, y: &str, series| Chart {
        title: title.into(),
        x_label: x.into(),
        y_label: y.into(),
        series,
    };
    render(
        &[
            chart(
                "against training images",
                "training images (thousands)",
                &format!("validation {n} (%)"),
                curves,
            )
            .into(),
            dots.into(),
            chart(
                "against backbone parameters",
                "backbone parameters (thousands)",
                &format!("test {n} (%)"),
                params,
            )
            .into(),
        ],
        path,
    )
}

/// The per-epoch validation score, averaged over the runs at each epoch they all reached.
fn mean_curve(dirs: &[PathBuf], m: &Metric) -> Result<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    for d in dirs {
        runs.push(read_metrics(d)?);
    }
    let epochs = runs.iter().map(Vec::len).min().unwrap_or(0);
    Ok((0..epochs)
        .map(|e| {
            let imgs = runs[0][e].train_images as f64 / 1e3;
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| (m.epoch_value)(&r[e]))
                .map(|v| 100.0 * v)
                .collect();
            (imgs, mean_std(&v).0)
        })
        .collect())
}
