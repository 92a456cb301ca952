//! The run directory's files: checkpoints written and swapped in atomically, recovered after a
//! crash; run.json and the other JSON files; metrics.jsonl and its plot.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::EpochMetrics;
use super::optim::{AdamW, Ema};
use crate::checkpoint::atomic::atomic_write;
use crate::error::{Error, Result};

/// The checkpoint's directory in a run directory.
pub(crate) const CHECKPOINT: &str = "checkpoint";

/// Saves a checkpoint (model, optimizer and EMA tensors, `state`) in `dir`, replacing the one
/// there atomically.
pub(crate) fn save_checkpoint<M>(
    dir: &Path,
    save_model: &impl Fn(&Path, &M) -> Result<()>,
    net: &M,
    optim: &AdamW,
    ema: Option<&Ema>,
    state: &impl Serialize,
) -> Result<()> {
    // Write into a fresh directory, then swap it in, so a crash mid-save keeps the old one.
    let parent = dir.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".{CHECKPOINT}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = (|| {
        save_model(&tmp.join("model"), net)?;
        let mut tensors = optim.export();
        if let Some(e) = ema {
            tensors.extend(e.export());
        }
        crate::checkpoint::safetensors_io::write_tensors(
            &tmp.join("optimizer.safetensors"),
            &tensors,
        )?;
        write_json(&tmp.join("state.json"), state)
    })();
    if let Err(e) = written {
        // A full disk must not also leave half a checkpoint behind; the error names the
        // checkpoint, not a temporary path that no longer exists.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(match e {
            Error::Io { cause, .. } => Error::io(dir, cause),
            e => e,
        });
    }
    // One atomic swap where the file system has it: at every instant `checkpoint/` is a
    // complete checkpoint, the old or the new. (Two renames leave a moment without one.)
    if dir.exists() && exchange(&tmp, dir).is_ok() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(());
    }
    let old = parent.join(format!(".{CHECKPOINT}.old-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Swaps two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
        let (a, b) = (c(a)?, c(b)?);
        // SAFETY: two NUL-terminated paths relative to the working directory.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (a, b);
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// After a crash: the checkpoint a two-rename save had moved aside comes back if `checkpoint/`
/// is missing, and the leftovers of interrupted saves go. The run's lock is held, so no other
/// process is writing here.
pub(crate) fn recover_checkpoint(out: &Path) -> Result<()> {
    let ckpt = out.join(CHECKPOINT);
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    let mut leftovers: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!(".{CHECKPOINT}.old-"))
                    || n.starts_with(&format!(".{CHECKPOINT}.tmp-"))
            })
        })
        .collect();
    leftovers.sort();
    for p in leftovers {
        let is_old = p.to_string_lossy().contains(".old-");
        if is_old && !ckpt.exists() && p.join("state.json").is_file() {
            std::fs::rename(&p, &ckpt).map_err(|e| Error::io(&ckpt, e))?;
        } else {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    Ok(())
}

/// Drops the metrics of epochs past the checkpoint (a crash between writing an epoch's metrics
/// and its checkpoint), so that the redone epoch is not listed twice.
pub(crate) fn trim_metrics(out: &Path, epochs_done: usize) -> Result<()> {
    let path = out.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["epoch"].as_u64())
                .is_some_and(|e| e as usize <= epochs_done)
        })
        .collect();
    if keep.len() != text.lines().count() {
        let mut kept = keep.join("\n");
        if !kept.is_empty() {
            kept.push('\n');
        }
        atomic_write(&path, kept.as_bytes())?;
    }
    Ok(())
}

pub(crate) fn check_new_run_dir(out: &Path) -> Result<()> {
    if out.join("run.json").exists() {
        return Err(Error::Refused {
            path: out.to_path_buf(),
            msg: "already holds a run; pass --resume to continue it, or choose another --out"
                .into(),
        });
    }
    Ok(())
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("serialisable");
    text.push('\n');
    atomic_write(path, text.as_bytes())
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|cause| Error::Json {
        path: path.to_path_buf(),
        cause,
    })
}

pub(crate) fn append_metrics(out: &Path, m: &EpochMetrics) -> Result<()> {
    use std::io::Write;
    let path = out.join("metrics.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    let line = format!("{}\n", serde_json::to_string(m).expect("serialisable"));
    f.write_all(line.as_bytes()).map_err(|e| {
        // No half line for the next epoch's line to run into (a full disk).
        let _ = f.set_len(len);
        Error::io(&path, e)
    })
}

/// Reads `metrics.jsonl` of a run.
pub fn read_metrics(out: &Path) -> Result<Vec<EpochMetrics>> {
    let path = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|cause| Error::Json {
                path: path.clone(),
                cause,
            })
        })
        .collect()
}

/// Writes `curves.png`: training loss, and validation/test top-1 against epoch.
pub fn plot_curves(out: &Path) -> Result<()> {
    use crate::plot::{render, Chart, Series};
    let ms = read_metrics(out)?;
    let series = |name: &str, f: &dyn Fn(&EpochMetrics) -> Option<f64>| Series {
        name: name.into(),
        points: ms
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect(),
        markers: ms.len() < 20,
        ..Series::default()
    };
    let lm = ms
        .iter()
        .any(|m| m.val_perplexity.is_some() || m.train_tokens.is_some());
    let loss = Chart {
        title: if lm {
            "loss (train: epoch mean; val: held-out windows)".into()
        } else {
            "loss (train: epoch mean on augmented images)".into()
        },
        x_label: "epoch".into(),
        y_label: "loss".into(),
        series: vec![
            series("train", &|m| Some(m.train_loss)),
            series("val", &|m| m.val_loss),
        ],
    };
    // A language model has perplexity where a classifier has accuracy.
    let acc = if lm {
        Chart {
            title: "validation perplexity".into(),
            x_label: "epoch".into(),
            y_label: "perplexity".into(),
            series: vec![series("val", &|m| m.val_perplexity)],
        }
    } else {
        Chart {
            title: "top-1 accuracy (%)".into(),
            x_label: "epoch".into(),
            y_label: "top-1 %".into(),
            series: vec![
                series("val", &|m| m.val_top1.map(|v| 100.0 * v)),
                series("test", &|m| m.test_top1.map(|v| 100.0 * v)),
            ],
        }
    };
    let charts = [loss.into(), acc.into()];
    render(&charts, &out.join("curves.png"))
}
