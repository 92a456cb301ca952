//! Text for language models: plain `.txt` files (one file or a directory of them) and `.jsonl`
//! with a `text` field, tokenised with the model's tokenizer, joined with the end-of-text token
//! and cut into windows of `seq_len + 1` tokens (inputs and their next-token targets), each
//! window starting where the previous one's inputs ended.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::tokenizer::TextTokenizer;
use super::DataError;
use crate::error::{Error, Result};

/// The documents found under `path`: a file, or every `.txt`/`.jsonl` (or extension-less text)
/// file below a directory, in path order. Returns (documents, files skipped as not text).
pub fn read_documents(path: &Path) -> Result<(Vec<String>, usize)> {
    let mut files = Vec::new();
    if path.is_dir() {
        collect(path, &mut files)?;
        files.sort();
    } else if path.is_file() {
        files.push(path.to_path_buf());
    } else {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            hint: " (expected a .txt or .jsonl file, or a directory of them)".into(),
        }
        .into());
    }
    let mut docs = Vec::new();
    let mut skipped = 0;
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
        let is_jsonl = f.extension().is_some_and(|e| e == "jsonl");
        let Ok(text) = String::from_utf8(bytes) else {
            if path.is_dir() && f.extension().is_none() {
                skipped += 1;
                continue;
            }
            return Err(DataError::BadFile {
                path: f,
                msg: "is not UTF-8 text".into(),
            }
            .into());
        };
        if is_jsonl {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| DataError::BadFile {
                        path: f.clone(),
                        msg: format!("line {}: not JSON ({e})", i + 1),
                    })?;
                let Some(t) = v.get("text").and_then(|t| t.as_str()) else {
                    return Err(DataError::BadFile {
                        path: f.clone(),
                        msg: format!("line {}: no string field 'text'", i + 1),
                    }
                    .into());
                };
                docs.push(t.to_string());
            }
        } else {
            docs.push(text);
        }
    }
    if docs.iter().all(|d| d.trim().is_empty()) {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            msg: "holds no text".into(),
        }
        .into());
    }
    Ok((docs, skipped))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in entries {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else {
            let ext = p.extension().and_then(|e| e.to_str());
            if matches!(ext, None | Some("txt") | Some("jsonl")) {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// Token windows of one corpus.
#[derive(Clone, Debug)]
pub struct TokenWindows {
    pub seq_len: usize,
    /// Each `seq_len + 1` tokens long.
    pub windows: Vec<Vec<u32>>,
}

impl TokenWindows {
    /// Tokenises `docs`, separated by `eos` when given, and cuts the stream into windows.
    pub fn new(
        docs: &[String],
        tok: &TextTokenizer,
        eos: Option<u32>,
        seq_len: usize,
    ) -> Result<Self> {
        let mut stream = Vec::new();
        for d in docs {
            stream.extend(tok.encode(d)?);
            stream.extend(eos);
        }
        let windows = if seq_len == 0 || stream.len() < 2 {
            Vec::new()
        } else {
            (0..(stream.len() - 1) / seq_len)
                .map(|i| stream[i * seq_len..i * seq_len + seq_len + 1].to_vec())
                .collect()
        };
        Ok(Self { seq_len, windows })
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// (train, held out): a seeded draw of `fraction` of the windows is held out.
    pub fn split(self, fraction: f64, seed: u64) -> (Self, Self) {
        let n = self.windows.len();
        let held = ((n as f64 * fraction).round() as usize).min(n);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x7e47));
        let mut is_held = vec![false; n];
        for &i in &order[..held] {
            is_held[i] = true;
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (w, h) in self.windows.into_iter().zip(is_held) {
            if h {
                val.push(w);
            } else {
                train.push(w);
            }
        }
        let seq_len = self.seq_len;
        (
            Self {
                seq_len,
                windows: train,
            },
            Self {
                seq_len,
                windows: val,
            },
        )
    }

    /// Keeps the first `n` windows.
    pub fn truncate(mut self, n: usize) -> Self {
        self.windows.truncate(n);
        self
    }

    /// A seeded random draw of `n` windows (all of them if there are fewer), in corpus order.
    pub fn subset(self, n: usize, seed: u64) -> Self {
        if n >= self.windows.len() {
            return self;
        }
        let mut order: Vec<usize> = (0..self.windows.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x5b5e7));
        let mut keep = vec![false; order.len()];
        for &i in &order[..n] {
            keep[i] = true;
        }
        let seq_len = self.seq_len;
        let windows = self
            .windows
            .into_iter()
            .zip(keep)
            .filter_map(|(w, k)| k.then_some(w))
            .collect();
        Self { seq_len, windows }
    }

    /// `(inputs, targets)` of windows `idx`, each `[idx.len(), seq_len]` row-major.
    pub fn batch(&self, idx: &[usize]) -> (Vec<i64>, Vec<i64>) {
        let mut inputs = Vec::with_capacity(idx.len() * self.seq_len);
        let mut targets = Vec::with_capacity(idx.len() * self.seq_len);
        for &i in idx {
            let w = &self.windows[i];
            inputs.extend(w[..self.seq_len].iter().map(|&t| t as i64));
            targets.extend(w[1..].iter().map(|&t| t as i64));
        }
        (inputs, targets)
    }
}

/// The `text:PATH` form of `--data`, or `None` for another kind of data.
pub fn text_spec(spec: &str) -> Option<&Path> {
    spec.strip_prefix("text:").map(Path::new)
}
