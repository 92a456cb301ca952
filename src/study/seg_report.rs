//! The segmentation study's report: RESULTS.md (the table over seeds, the verdicts, per-class
//! IoU) and results.png (validation mIoU against training images, test mIoU per seed, test
//! mIoU against parameters).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::verdict;
use super::seg_arms::{run_name, SegArm, SegStudyConfig, SEG_ARMS};
use crate::error::Result;
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
    pub backbone_params: usize,
    pub head_params: usize,
    /// Blocks the backbone runs (a shared block counts at each of its positions).
    pub positions: usize,
    pub train_images: u64,
    pub wall_s: f64,
    /// The CPU the run trained on (its last epoch's).
    pub cpu: Option<String>,
}

/// An arm's finished runs, seed order.
struct ArmRuns {
    arm: &'static SegArm,
    dirs: Vec<PathBuf>,
    finals: Vec<SegFinal>,
}

impl ArmRuns {
    fn test_miou(&self) -> Vec<f64> {
        self.finals.iter().map(|f| f.test_miou).collect()
    }
}

fn finished(cfg: &SegStudyConfig, dir: &Path) -> Vec<ArmRuns> {
    let mut arms = Vec::new();
    for arm in SEG_ARMS {
        let mut r = ArmRuns {
            arm,
            dirs: Vec::new(),
            finals: Vec::new(),
        };
        for s in 0..arm.seeds(cfg) {
            let d = dir.join("runs").join(run_name(arm, s));
            if let Ok(f) = read_json::<SegFinal>(&d.join("final.json")) {
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
    let arms = finished(cfg, dir);
    if arms.is_empty() {
        return Ok(());
    }
    let mut md = header(cfg, &arms);
    md.push_str(
        "| arm | positions | seeds | backbone params | head params | val mIoU | test mIoU | test aAcc | test mAcc | wall time per run |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &arms {
        md.push_str(&row(r));
    }
    md.push_str(&verdicts(&arms));
    md.push_str(&per_class(cfg, &arms));
    md.push_str("\nArms:\n\n");
    for r in &arms {
        md.push_str(&format!(
            "- **{}** (`{}`): {}.\n",
            r.arm.name, r.arm.backbone, r.arm.what
        ));
    }
    md.push_str("\n![results](results.png)\n");
    crate::checkpoint::atomic::atomic_write(&dir.join("RESULTS.md"), md.as_bytes())?;
    figure(&arms, &dir.join("results.png"))
}

fn header(cfg: &SegStudyConfig, arms: &[ArmRuns]) -> String {
    let cpus: Vec<String> = arms
        .iter()
        .flat_map(|r| r.finals.iter().filter_map(|f| f.cpu.clone()))
        .fold(Vec::new(), |mut v, c| {
            if !v.contains(&c) {
                v.push(c);
            }
            v
        });
    let subset = |n: Option<usize>| n.map_or("all".into(), thousands);
    format!(
        "# Segmentation study\n\nUperNet (mmsegmentation's `UPerHead`, channels {}, with its FCN auxiliary head at 0.4, \
         channels {}) around each backbone of the classification study in `{}`, on `{}` resized to {}×{}. \
         Every segmentor trains the same {} training scenes for {} epochs (batches of {}, AdamW at {:e}, \
         weight decay {}, linear warm-up for {} epochs then mmsegmentation's poly decay to 0), \
         random resize, crop, flip and photometric distortion; validation mIoU after each epoch on {} \
         validation scenes. The final numbers are mmsegmentation's `IoUMetric` over the whole validation \
         and test splits, whole-image inference. Mean ± sample standard deviation over seeds (the \
         segmentor's seed, and the backbone's where the classification study has that seed). \
         Trained on: {}.\n\n",
        cfg.channels,
        cfg.aux_channels,
        cfg.backbones.display(),
        cfg.data,
        cfg.img_size,
        cfg.img_size,
        subset(cfg.train_subset),
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        cfg.weight_decay,
        cfg.warmup_epochs,
        subset(cfg.val_subset),
        if cpus.is_empty() {
            "unknown".into()
        } else {
            cpus.join("; ")
        }
    )
}

fn over_seeds(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    match v.len() {
        1 => format!("{m:.2}%"),
        _ => format!("{m:.2} ± {s:.2}%"),
    }
}

fn row(r: &ArmRuns) -> String {
    let f = &r.finals[0];
    let get = |g: fn(&SegFinal) -> f64| r.finals.iter().map(g).collect::<Vec<_>>();
    let wall = get(|f| f.wall_s).iter().sum::<f64>() / r.finals.len() as f64;
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} min |\n",
        r.arm.name,
        f.positions,
        r.finals.len(),
        thousands(f.backbone_params),
        thousands(f.head_params),
        over_seeds(&get(|f| f.val_miou)),
        over_seeds(&get(|f| f.test_miou)),
        over_seeds(&get(|f| f.test_aacc)),
        over_seeds(&get(|f| f.test_macc)),
        wall / 60.0
    )
}

/// The claim's comparisons, in test mIoU: grown against the base and against scratch.
fn verdicts(arms: &[ArmRuns]) -> String {
    let get = |n: &str| arms.iter().find(|r| r.arm.name == n);
    let frac = |r: &ArmRuns| r.test_miou().iter().map(|v| v / 100.0).collect::<Vec<_>>();
    let mut s = String::from("\n");
    let Some(grown) = get("grown") else {
        return s;
    };
    for other in ["base", "scratch", "unshared"] {
        if let Some(o) = get(other) {
            s.push_str(&format!(
                "- Test mIoU: grown {}.\n",
                verdict(&frac(grown), &frac(o), other)
            ));
        }
    }
    s
}

/// Test IoU per class, the mean over an arm's seeds.
fn per_class(cfg: &SegStudyConfig, arms: &[ArmRuns]) -> String {
    let Ok(data) = crate::data::seg::SegDataset::open(&cfg.data) else {
        return String::new();
    };
    let mut s = String::from("\nTest IoU per class (mean over seeds):\n\n| class |");
    for r in arms {
        s.push_str(&format!(" {} |", r.arm.name));
    }
    s.push_str(&format!("\n|---|{}\n", "---|".repeat(arms.len())));
    for (k, name) in data.classes.iter().enumerate() {
        s.push_str(&format!("| {name} |"));
        for r in arms {
            let v: Vec<f64> = r
                .finals
                .iter()
                .filter_map(|f| f.test_iou.get(k).copied())
                .filter(|v| v.is_finite())
                .collect();
            s.push_str(&format!(" {:.1} |", mean_std(&v).0));
        }
        s.push('\n');
    }
    s
}

/// Validation mIoU against training images (mean over seeds), test mIoU per seed, and test
/// mIoU against backbone parameters.
fn figure(arms: &[ArmRuns], path: &Path) -> Result<()> {
    let mut curves = Vec::new();
    let mut params = Vec::new();
    for (i, r) in arms.iter().enumerate() {
        curves.push(Series {
            name: r.arm.name.into(),
            points: mean_curve(&r.dirs)?,
            markers: true,
            colour: Some(i),
            ..Series::default()
        });
        params.push(Series {
            name: r.arm.name.into(),
            points: vec![(
                r.finals[0].backbone_params as f64 / 1e3,
                mean_std(&r.test_miou()).0,
            )],
            markers: true,
            labels: vec![format!("{} positions", r.finals[0].positions)],
            colour: Some(i),
            ..Series::default()
        });
    }
    let dots = Dots {
        title: "test mIoU, each seed".into(),
        x_label: "test mIoU (%)".into(),
        rows: arms
            .iter()
            .map(|r| (r.arm.name.to_string(), r.test_miou()))
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
                "validation mIoU (%)",
                curves,
            )
            .into(),
            dots.into(),
            chart(
                "against backbone parameters",
                "backbone parameters (thousands)",
                "test mIoU (%)",
                params,
            )
            .into(),
        ],
        path,
    )
}

/// The per-epoch validation mIoU, averaged over the runs at each epoch they all reached.
fn mean_curve(dirs: &[PathBuf]) -> Result<Vec<(f64, f64)>> {
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
                .filter_map(|m| m[e].val_miou)
                .map(|v| 100.0 * v)
                .collect();
            (imgs, mean_std(&v).0)
        })
        .collect())
}
