//! What a study found: each arm's results over its seeds, collected from its runs' metrics,
//! and the report (RESULTS.md, results.json and the plots).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::arms::{StudyConfig, ARMS, HEADLINE_ARMS, SCALING_ARMS};
use crate::checkpoint::model_dir::load_model;
use crate::error::{Error, Result};
use crate::network::Network;
use crate::plot::{mean_std, render, Chart, Dots, Series};
use crate::train::config::{EpochMetrics, TrainConfig};
use crate::train::run_dir::{read_json, read_metrics, write_json};
use crate::units::thousands;

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

pub(super) fn collect(
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
        .map(|d| read_json::<TrainConfig>(&d.join("run.json")).map(|c| c.precision.to_string()))
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

pub(super) fn write_report(cfg: &StudyConfig, dir: &Path, results: &[ArmResult]) -> Result<()> {
    write_results_plot(results, &dir.join("results.png"))?;
    let scaling = write_scaling_plot(results, &dir.join("scaling.png"))?;
    let variants = write_variants_plot(results, &dir.join("variants.png"))?;
    let mut md = String::from("# Results\n\n");
    md.push_str(&headline(results));
    md.push_str(&table(results));
    md.push_str(&arms_and_notes(cfg, results, scaling, variants));
    crate::checkpoint::atomic::atomic_write(&dir.join("RESULTS.md"), md.as_bytes())?;
    write_json(&dir.join("results.json"), &results)?;
    Ok(())
}

/// `results.png`: the base and the headline arms' test top-1 against images, after the base
/// and in all, and their final accuracies.
fn write_results_plot(results: &[ArmResult], path: &Path) -> Result<()> {
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
        path,
    )
}

/// The headline paragraph: grown 2L against scratch 3E, when both have run.
fn headline(results: &[ArmResult]) -> String {
    let get = |n: &str| results.iter().find(|r| r.name == n);
    let mut md = String::new();
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
    md
}

/// The arms' list with the precision and CPUs of their runs, and the notes on the plots and
/// the settings.
fn arms_and_notes(
    cfg: &StudyConfig,
    results: &[ArmResult],
    scaling: bool,
    variants: bool,
) -> String {
    let mut md = String::new();
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
    md
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
