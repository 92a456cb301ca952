//! The language-model study's numbers: each finished run's final evaluation (`final.json`:
//! validation and test loss over the whole splits, parameters, FLOPs per token), the rate an
//! arm's grid chose, and the report (RESULTS.md, results.png, scaling.png).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lm_arms::{run_name, LmArm, LmStudyConfig, LM_ARMS};
use crate::error::Result;
use crate::plot::{mean_std, render, Chart, Series};
use crate::train::run_dir::{read_json, read_metrics, write_json};
use crate::units::thousands;

/// A finished run's final evaluation; `final.json` in its directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalEval {
    pub val_loss: f64,
    pub test_loss: f64,
    pub val_tokens: usize,
    pub test_tokens: usize,
    pub params_stored: usize,
    pub params_trained: usize,
    /// Positions the forward runs (blocks, shared ones counted at each position).
    pub positions: usize,
    /// Forward FLOPs per token (a shared block counts at every position).
    pub forward_flops_per_token: f64,
    /// Tokens trained in this run (not the base's).
    pub train_tokens: u64,
    pub wall_s: f64,
}

/// Evaluates the run's final model on the whole validation and test splits, once.
pub fn final_eval(cfg: &LmStudyConfig, run: &Path, splits: [PathBuf; 2]) -> Result<()> {
    let path = run.join("final.json");
    if path.exists() {
        return Ok(());
    }
    let device = burn::tensor::Device::flex();
    let loaded = crate::checkpoint::hf_dir::load_llama(&run.join("model"), &device)?;
    let tok = loaded
        .tokenizer
        .as_ref()
        .expect("study models carry the tokenizer");
    let eos = loaded.config.eos_token_ids.first().copied();
    let mut loss = [0.0; 2];
    let mut tokens = [0; 2];
    for (i, p) in splits.iter().enumerate() {
        let (docs, _) = crate::data::text::read_documents(p)?;
        let w = crate::data::text::TokenWindows::new(&docs, tok, eos, cfg.seq_len)?;
        let r = crate::train::lm::evaluate_lm(
            |x| loaded.model.forward(x, None),
            &w,
            8,
            &device,
            |_| {},
        );
        (loss[i], tokens[i]) = (r.loss, r.tokens);
    }
    let metrics = read_metrics(run)?;
    let last = metrics.last();
    let run_cfg: crate::train::config::TrainConfig = read_json(&run.join("run.json"))?;
    let stored = loaded.model.num_params();
    let layer = layer_params(cfg);
    let trained = match run_cfg.train_only {
        crate::train::optim::TrainOnly::New => {
            layer * crate::growth::plan::recorded_new_layers(&loaded.raw).len()
        }
        _ => stored,
    };
    let adapters = loaded.model.growth().map_or(0, |_| match &loaded.model {
        crate::network::LanguageModel::Grown(g) => g.param_counts().adapters,
        _ => 0,
    });
    let positions = loaded.model.depth();
    let fin = FinalEval {
        val_loss: loss[0],
        test_loss: loss[1],
        val_tokens: tokens[0],
        test_tokens: tokens[1],
        params_stored: stored,
        params_trained: trained,
        positions,
        forward_flops_per_token: forward_flops(cfg, positions, adapters),
        train_tokens: last.and_then(|m| m.train_tokens).unwrap_or(0),
        wall_s: metrics.iter().map(|m| m.wall_s).sum(),
    };
    write_json(&path, &fin)
}

/// A decoder layer's parameters (its products and its two norms).
fn layer_params(c: &LmStudyConfig) -> usize {
    let (d, hd) = (c.hidden_size, c.hidden_size / c.num_heads);
    let attn = 2 * d * c.num_heads * hd + 2 * d * c.num_kv_heads * hd;
    attn + 3 * d * c.intermediate_size + 2 * d
}

/// Forward FLOPs per token: 2 per weight of every product a token passes (each position's
/// layer, its adapters, the vocabulary head) and the causal attention's two products over
/// half a window on average.
fn forward_flops(c: &LmStudyConfig, positions: usize, adapters: usize) -> f64 {
    let products =
        positions * (layer_params(c) - 2 * c.hidden_size) + adapters + c.vocab_size * c.hidden_size;
    let attention = positions * 2 * c.seq_len * c.hidden_size;
    (2 * products + attention) as f64
}

fn read_final(run: &Path) -> Option<FinalEval> {
    read_json(&run.join("final.json")).ok()
}

/// The rate an arm runs its further seeds at: the grid's best seed-0 validation loss among
/// the runs finished, else the study's rate.
pub fn chosen_lr(cfg: &LmStudyConfig, dir: &Path, arm: &LmArm) -> Result<f64> {
    if !arm.grid || cfg.lr_grid.is_empty() {
        return Ok(cfg.lr);
    }
    let best = cfg
        .lr_grid
        .iter()
        .filter_map(|&lr| {
            let run = dir.join("runs").join(run_name(cfg, arm, lr, 0));
            read_final(&run).map(|f| (lr, f.val_loss))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    Ok(best.map_or(cfg.lr, |(lr, _)| lr))
}

/// One arm's finished runs at its chosen rate.
struct ArmRuns {
    arm: &'static LmArm,
    lr: f64,
    /// Rates of the grid with a finished seed-0 run, and that run's validation loss.
    grid: Vec<(f64, f64)>,
    dirs: Vec<PathBuf>,
    finals: Vec<FinalEval>,
}

fn arm_runs(cfg: &LmStudyConfig, dir: &Path, arm: &'static LmArm) -> Result<Option<ArmRuns>> {
    let lr = chosen_lr(cfg, dir, arm)?;
    let grid = if arm.grid {
        cfg.lr_grid
            .iter()
            .filter_map(|&l| {
                read_final(&dir.join("runs").join(run_name(cfg, arm, l, 0)))
                    .map(|f| (l, f.val_loss))
            })
            .collect()
    } else {
        Vec::new()
    };
    let seeds = if arm.seeded { cfg.seeds as u64 } else { 1 };
    let (mut dirs, mut finals) = (Vec::new(), Vec::new());
    for s in 0..seeds {
        let d = dir.join("runs").join(run_name(cfg, arm, lr, s));
        if let Some(f) = read_final(&d) {
            dirs.push(d);
            finals.push(f);
        }
    }
    Ok((!dirs.is_empty()).then_some(ArmRuns {
        arm,
        lr,
        grid,
        dirs,
        finals,
    }))
}

/// The validation curve of a run: (tokens including the base's where it starts from it,
/// training FLOPs likewise, validation loss on the per-epoch windows).
fn curve(run: &Path, base: Option<&FinalEval>, fin: &FinalEval) -> Result<Vec<(f64, f64, f64)>> {
    let (t0, f0) = base.map_or((0.0, 0.0), |b| {
        let t = b.train_tokens as f64;
        (t, 3.0 * b.forward_flops_per_token * t)
    });
    Ok(read_metrics(run)?
        .iter()
        .filter_map(|m| {
            let t = m.train_tokens? as f64;
            Some((
                t0 + t,
                f0 + 3.0 * fin.forward_flops_per_token * t,
                m.val_loss?,
            ))
        })
        .collect())
}

/// Tokens the curve needs to reach `loss` (linear between evaluations), if it gets there.
fn tokens_to_reach(curve: &[(f64, f64, f64)], loss: f64) -> Option<f64> {
    let i = curve.iter().position(|p| p.2 <= loss)?;
    if i == 0 {
        return Some(curve[0].0);
    }
    let (a, b) = (curve[i - 1], curve[i]);
    Some(a.0 + (b.0 - a.0) * (a.2 - loss) / (a.2 - b.2).max(1e-12))
}

/// Writes RESULTS.md, results.png and scaling.png in the study directory.
pub fn write_lm_report(cfg: &LmStudyConfig, dir: &Path) -> Result<()> {
    let base_dir = dir.join("runs").join("base");
    let Some(base) = read_final(&base_dir) else {
        return Ok(());
    };
    let mut arms = Vec::new();
    for arm in LM_ARMS {
        if let Some(r) = arm_runs(cfg, dir, arm)? {
            arms.push(r);
        }
    }
    let base_of = |a: &LmArm| a.from_base.then_some(&base);
    // The long scratch run's curve is the yardstick of "tokens to reach".
    let yardstick = match arms.iter().find(|r| r.arm.name == "scratch-D1+D2") {
        Some(r) => curve(&r.dirs[0], None, &r.finals[0])?,
        None => Vec::new(),
    };
    let mut md = header(cfg, &base);
    md.push_str(&sources_table(&corpus_tokens(cfg, dir)?));
    md.push_str(
        "| arm | positions | seeds | lr | val loss | val ppl | best val (per-epoch windows) | test loss | test ppl | tokens (after base) | training FLOPs after base / with base | scratch 2L tokens to reach | params stored | params trained |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    md.push_str(&row(
        "base",
        &base,
        std::slice::from_ref(&base),
        None,
        cfg.lr,
        std::slice::from_ref(&base_dir),
        &yardstick,
    )?);
    for r in &arms {
        md.push_str(&row(
            r.arm.name,
            &r.finals[0],
            &r.finals,
            base_of(r.arm),
            r.lr,
            &r.dirs,
            &yardstick,
        )?);
    }
    md.push_str("\nArms:\n\n");
    for r in &arms {
        let grid = if r.grid.is_empty() {
            String::new()
        } else {
            let g: Vec<String> = r
                .grid
                .iter()
                .map(|(l, v)| format!("{l:e}: {v:.4}"))
                .collect();
            format!(" Seed-0 validation loss by rate: {}.", g.join(", "))
        };
        md.push_str(&format!("- **{}**: {}.{grid}\n", r.arm.name, r.arm.what));
    }
    crate::checkpoint::atomic::atomic_write(&dir.join("RESULTS.md"), md.as_bytes())?;
    figures(cfg, dir, &base_dir, &base, &arms)
}

/// Tokens of each source in each split (train, validation, test); cached in
/// `corpus_tokens.json`.
fn corpus_tokens(cfg: &LmStudyConfig, dir: &Path) -> Result<Vec<(String, [usize; 3])>> {
    use crate::data::corpus::{Document, SPLIT_FILES};
    let cache = dir.join("corpus_tokens.json");
    if let Ok(c) = read_json(&cache) {
        return Ok(c);
    }
    let tok = crate::data::tokenizer::TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let mut counts: Vec<(String, [usize; 3])> = Vec::new();
    for (i, f) in SPLIT_FILES.iter().enumerate() {
        let path = dir.join(&cfg.corpus).join(f);
        let text = std::fs::read_to_string(&path).map_err(|e| crate::error::Error::io(&path, e))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let d: Document =
                serde_json::from_str(line).map_err(|cause| crate::error::Error::Json {
                    path: path.clone(),
                    cause,
                })?;
            let n = tok.encode(&d.text)?.len() + 1;
            match counts.iter_mut().find(|(s, _)| *s == d.source) {
                Some((_, c)) => c[i] += n,
                None => {
                    let mut c = [0; 3];
                    c[i] = n;
                    counts.push((d.source, c));
                }
            }
        }
    }
    write_json(&cache, &counts)?;
    Ok(counts)
}

fn sources_table(counts: &[(String, [usize; 3])]) -> String {
    let mut s = String::from(
        "The corpus (`scalenet corpus`: Debian's bible-kjv, fortunes and dict-gcide, split by document 90/5/5), in tokens with an end-of-text token per document:\n\n| source | train | validation | test |\n|---|---|---|---|\n",
    );
    let mut total = [0; 3];
    for (name, c) in counts {
        s.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            thousands(c[0]),
            thousands(c[1]),
            thousands(c[2])
        ));
        for i in 0..3 {
            total[i] += c[i];
        }
    }
    s.push_str(&format!(
        "| all | {} | {} | {} |\n\n",
        thousands(total[0]),
        thousands(total[1]),
        thousands(total[2])
    ));
    s
}

fn header(cfg: &LmStudyConfig, base: &FinalEval) -> String {
    format!(
        "# Language-model study\n\nA Llama of {} layers, width {}, {} heads ({} for keys and values), MLP {}, \
         vocabulary {} (byte-level BPE trained on the training split), windows of {} tokens, batches of {}. \
         The base trains D1 = {} tokens; every arm trains D2 = {} tokens after it (its own warm-up and \
         full cosine decay), except where its row says otherwise. Validation and test loss in nats per \
         token over the whole validation ({} tokens) and test ({} tokens) splits of the corpus in `{}`; \
         the per-epoch curve reads the first {} validation windows. Machine: {}.\n\n",
        cfg.base_depth,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.seq_len,
        cfg.batch_size,
        thousands(cfg.d1() as usize),
        thousands(cfg.d2() as usize),
        thousands(base.val_tokens),
        thousands(base.test_tokens),
        cfg.corpus.display(),
        cfg.val_windows,
        super::report::machine()
    )
}

fn stat(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    if v.len() > 1 {
        format!("{m:.4} ± {s:.4}")
    } else {
        format!("{m:.4}")
    }
}

fn row(
    name: &str,
    first: &FinalEval,
    finals: &[FinalEval],
    base: Option<&FinalEval>,
    lr: f64,
    dirs: &[PathBuf],
    yardstick: &[(f64, f64, f64)],
) -> Result<String> {
    let val: Vec<f64> = finals.iter().map(|f| f.val_loss).collect();
    let test: Vec<f64> = finals.iter().map(|f| f.test_loss).collect();
    let mut best = Vec::new();
    let mut last = Vec::new();
    for d in dirs {
        let m = read_metrics(d)?;
        best.push(
            m.iter()
                .filter_map(|e| e.val_loss)
                .fold(f64::INFINITY, f64::min),
        );
        last.extend(m.last().and_then(|e| e.val_loss));
    }
    let flops = 3.0 * first.forward_flops_per_token * first.train_tokens as f64;
    let with_base = flops
        + base.map_or(0.0, |b| {
            3.0 * b.forward_flops_per_token * b.train_tokens as f64
        });
    let reach = match tokens_to_reach(yardstick, mean_std(&last).0) {
        _ if yardstick.is_empty() => "–".to_string(),
        Some(t) => thousands(t as usize),
        None => format!(
            "> {}",
            thousands(yardstick.last().map_or(0.0, |p| p.0) as usize)
        ),
    };
    Ok(format!(
        "| {name} | {} | {} | {lr:e} | {} | {:.2} | {} | {} | {:.2} | {} | {flops:.2e} / {with_base:.2e} | {reach} | {} | {} |\n",
        first.positions,
        finals.len(),
        stat(&val),
        mean_std(&val).0.exp(),
        stat(&best),
        stat(&test),
        mean_std(&test).0.exp(),
        thousands(first.train_tokens as usize),
        thousands(first.params_stored),
        thousands(first.params_trained),
    ))
}

/// The main arms' validation loss against tokens and FLOPs (base included), and the scaling
/// arms' final loss against depth.
fn figures(
    cfg: &LmStudyConfig,
    dir: &Path,
    base_dir: &Path,
    base: &FinalEval,
    arms: &[ArmRuns],
) -> Result<()> {
    let main = [
        "scalenet",
        "stack",
        "llama-pro",
        "shared",
        "base+D2",
        "scratch-D1+D2",
        "scalenet-identity",
    ];
    let mut by_tokens = vec![Series {
        name: "base".into(),
        points: curve(base_dir, None, base)?
            .iter()
            .map(|p| (p.0 / 1e6, p.2))
            .collect(),
        ..Series::default()
    }];
    let mut by_flops = vec![Series {
        points: curve(base_dir, None, base)?
            .iter()
            .map(|p| (p.1 / 1e12, p.2))
            .collect(),
        ..by_tokens[0].clone()
    }];
    for r in arms.iter().filter(|r| main.contains(&r.arm.name)) {
        let c = curve(&r.dirs[0], r.arm.from_base.then_some(base), &r.finals[0])?;
        let s = Series {
            name: r.arm.name.into(),
            dashed: !r.arm.from_base,
            ..Series::default()
        };
        by_tokens.push(Series {
            points: c.iter().map(|p| (p.0 / 1e6, p.2)).collect(),
            ..s.clone()
        });
        by_flops.push(Series {
            points: c.iter().map(|p| (p.1 / 1e12, p.2)).collect(),
            ..s
        });
    }
    let chart = |title: &str, x: &str, series| Chart {
        title: title.into(),
        x_label: x.into(),
        y_label: "validation loss (nats/token)".into(),
        series,
    };
    render(
        &[
            chart(
                "against tokens (base included)",
                "tokens (millions)",
                by_tokens,
            )
            .into(),
            chart(
                "against training FLOPs (base included)",
                "training TFLOP",
                by_flops,
            )
            .into(),
        ],
        &dir.join("results.png"),
    )?;
    scaling_figure(cfg, dir, base, arms)
}

fn scaling_figure(
    cfg: &LmStudyConfig,
    dir: &Path,
    base: &FinalEval,
    arms: &[ArmRuns],
) -> Result<()> {
    let point = |names: &[&str]| -> Vec<(f64, f64)> {
        let mut p: Vec<(f64, f64)> = arms
            .iter()
            .filter(|r| names.contains(&r.arm.name))
            .map(|r| {
                (
                    r.finals[0].positions as f64,
                    mean_std(&r.finals.iter().map(|f| f.val_loss).collect::<Vec<_>>()).0,
                )
            })
            .collect();
        p.push((cfg.base_depth as f64, base.val_loss));
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p
    };
    let grown = point(&["scalenet-1.5L", "scalenet", "scalenet-3L"]);
    let scratch = point(&["scratch-1.5L", "scratch-D1+D2", "scratch-3L"]);
    if grown.len() < 3 && scratch.len() < 3 {
        return Ok(());
    }
    let series = |name: &str, points, dashed| Series {
        name: name.into(),
        points,
        markers: true,
        dashed,
        ..Series::default()
    };
    render(
        &[Chart {
            title: "depth: grown from the base against scratch (D1 + D2 tokens)".into(),
            x_label: "positions".into(),
            y_label: "validation loss (nats/token)".into(),
            series: vec![
                series("ScaleNet (base, then D2)", grown, false),
                series("from scratch", scratch, true),
            ],
        }
        .into()],
        &dir.join("scaling.png"),
    )
}
