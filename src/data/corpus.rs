//! An English corpus for language-model studies, assembled from text that Debian packages:
//! the King James Bible (`bible-kjv`, one document per chapter), the fortune cookies
//! (`fortunes`, one document per fortune) and the GNU Collaborative International Dictionary
//! of English (`dict-gcide`, one document per entry, a seeded sample up to a byte budget).
//! Each source's documents are shuffled with a fixed seed and split 90/5/5 into train,
//! validation and test, so that no document is in two splits. The result is three `.jsonl`
//! files that `train --data text:` reads, and `corpus.json`, which says what is in each.

use std::io::Read;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::DataError;
use crate::error::{Error, Result};

/// The layout version: a number in RESULTS.md names the corpus it was measured on.
pub const CORPUS_VERSION: &str = "english-v1";

/// Where Debian puts the sources.
pub const FORTUNES_DIR: &str = "/usr/share/games/fortunes";
pub const GCIDE_DICT: &str = "/usr/share/dictd/gcide.dict.dz";
/// What `bible` (package `bible-kjv`) prints the whole text with.
pub const KJV_COMMAND: [&str; 3] = ["bible", "-f", "Gen1:1-Rev22:21"];

/// One document and the source it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub source: String,
    pub text: String,
}

/// The shares of each source's documents that go to validation and test.
const VALID_SHARE: f64 = 0.05;
const TEST_SHARE: f64 = 0.05;

/// The three splits' file names, in the order train, validation, test.
pub const SPLIT_FILES: [&str; 3] = ["train.jsonl", "valid.jsonl", "test.jsonl"];

/// Counts of one source in one split.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitCount {
    pub documents: usize,
    pub bytes: usize,
}

/// `corpus.json`: the version, the seed and each source's counts per split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorpusInfo {
    pub version: String,
    pub seed: u64,
    /// Source name → [train, validation, test].
    pub sources: Vec<(String, [SplitCount; 3])>,
}

/// The KJV as `bible -f` prints it (`Ge1:1 In the beginning ...`, one verse per line): one
/// document per chapter, the verse references dropped.
pub fn kjv_chapters(text: &str) -> Vec<Document> {
    let mut docs: Vec<Document> = Vec::new();
    let mut chapter = String::new();
    for line in text.lines() {
        let Some((reference, verse)) = line.split_once(' ') else {
            continue;
        };
        let Some((book_chapter, _)) = reference.split_once(':') else {
            continue;
        };
        if book_chapter != chapter {
            chapter = book_chapter.to_string();
            docs.push(Document {
                source: "kjv".into(),
                text: String::new(),
            });
        }
        let doc = &mut docs.last_mut().expect("pushed above").text;
        if !doc.is_empty() {
            doc.push(' ');
        }
        doc.push_str(verse.trim());
    }
    docs.retain(|d| !d.text.is_empty());
    docs
}

/// The fortunes of one strfile source (`%` lines between them), overstrikes (`x\b`) removed.
pub fn fortunes(text: &str) -> Vec<Document> {
    let mut clean = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            clean.pop();
        } else {
            clean.push(c);
        }
    }
    clean
        .split("\n%\n")
        .map(|f| f.trim_matches(|c: char| c == '%' || c.is_whitespace()))
        .filter(|f| !f.is_empty())
        .map(|f| Document {
            source: "fortunes".into(),
            text: f.to_string(),
        })
        .collect()
}

/// Every fortune in a directory of strfile sources (the files without an extension).
pub fn fortunes_dir(dir: &Path) -> Result<Vec<Document>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| missing_or_io(dir, e, " (install Debian's `fortunes`)"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
        docs.extend(fortunes(&String::from_utf8_lossy(&bytes)));
    }
    if docs.is_empty() {
        return Err(empty(dir, "holds no fortunes"));
    }
    Ok(docs)
}

/// The entries of a dictd dictionary (the `.dict.dz`, gzip-compatible, with its `.index`
/// beside it): one document per distinct entry, in file order; source tags on lines of their
/// own (`[1913 Webster]`) are dropped and indentation removed.
pub fn gcide_entries(dict_dz: &Path) -> Result<Vec<Document>> {
    let index_path = dict_dz.with_file_name(
        dict_dz
            .file_name()
            .and_then(|n| n.to_str())
            .map_or("gcide.index".into(), |n| {
                n.trim_end_matches(".dict.dz").to_string() + ".index"
            }),
    );
    let raw = std::fs::read(dict_dz)
        .map_err(|e| missing_or_io(dict_dz, e, " (install Debian's `dict-gcide`)"))?;
    let mut dict = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut dict)
        .map_err(|e| bad(dict_dz, &format!("not a gzip/dictzip file ({e})")))?;
    let index = std::fs::read_to_string(&index_path)
        .map_err(|e| missing_or_io(&index_path, e, " (the dictionary's index)"))?;
    let mut spans = Vec::new();
    for (i, line) in index.lines().enumerate() {
        let mut f = line.split('\t');
        let (Some(word), Some(o), Some(l)) = (f.next(), f.next(), f.next()) else {
            return Err(bad(
                &index_path,
                &format!("line {}: not word<TAB>offset<TAB>length", i + 1),
            ));
        };
        let (Some(o), Some(l)) = (dictd_number(o), dictd_number(l)) else {
            return Err(bad(
                &index_path,
                &format!("line {}: bad base-64 number", i + 1),
            ));
        };
        if o.checked_add(l).is_none_or(|end| end > dict.len()) {
            return Err(bad(
                &index_path,
                &format!("line {}: entry past the dictionary's end", i + 1),
            ));
        }
        if !word.starts_with("00-database") {
            spans.push((o, l));
        }
    }
    spans.sort_unstable();
    spans.dedup();
    Ok(spans
        .into_iter()
        .filter_map(|(o, l)| {
            let text = clean_entry(&String::from_utf8_lossy(&dict[o..o + l]));
            (!text.is_empty()).then(|| Document {
                source: "gcide".into(),
                text,
            })
        })
        .collect())
}

fn clean_entry(entry: &str) -> String {
    let lines: Vec<&str> = entry
        .lines()
        .map(str::trim)
        .filter(|l| !(l.starts_with('[') && l.ends_with(']')))
        .collect();
    lines.join("\n").trim().to_string()
}

/// dictd's numbers: base 64, most significant digit first.
fn dictd_number(s: &str) -> Option<usize> {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    s.bytes().try_fold(0usize, |n, c| {
        let d = DIGITS.iter().position(|&x| x == c)?;
        Some(n * 64 + d)
    })
}

/// A seeded sample of `docs` holding at most `max_bytes` of text (all of it if it fits), in
/// the original order.
pub fn sample_bytes(docs: Vec<Document>, max_bytes: usize, seed: u64) -> Vec<Document> {
    let total: usize = docs.iter().map(|d| d.text.len()).sum();
    if total <= max_bytes {
        return docs;
    }
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut keep = vec![false; docs.len()];
    let mut bytes = 0;
    for i in order {
        if bytes + docs[i].text.len() > max_bytes {
            continue;
        }
        bytes += docs[i].text.len();
        keep[i] = true;
    }
    docs.into_iter()
        .zip(keep)
        .filter_map(|(d, k)| k.then_some(d))
        .collect()
}

/// Splits each source's documents (shuffled with `seed`) into train, validation and test.
pub fn split(sources: Vec<Vec<Document>>, seed: u64) -> ([Vec<Document>; 3], CorpusInfo) {
    let mut splits: [Vec<Document>; 3] = Default::default();
    let mut info = CorpusInfo {
        version: CORPUS_VERSION.into(),
        seed,
        sources: Vec::new(),
    };
    for (k, mut docs) in sources.into_iter().enumerate() {
        let Some(name) = docs.first().map(|d| d.source.clone()) else {
            continue;
        };
        docs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed + k as u64));
        let n = docs.len();
        let n_valid = ((n as f64 * VALID_SHARE).round() as usize)
            .max(1)
            .min(n / 3);
        let n_test = ((n as f64 * TEST_SHARE).round() as usize).max(1).min(n / 3);
        let mut counts: [SplitCount; 3] = Default::default();
        for (i, d) in docs.into_iter().enumerate() {
            let s = if i < n_valid {
                1
            } else if i < n_valid + n_test {
                2
            } else {
                0
            };
            counts[s].documents += 1;
            counts[s].bytes += d.text.len();
            splits[s].push(d);
        }
        info.sources.push((name, counts));
    }
    (splits, info)
}

/// Writes the three splits and `corpus.json` into `dir`, each file atomically.
pub fn write(dir: &Path, splits: &[Vec<Document>; 3], info: &CorpusInfo) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (docs, name) in splits.iter().zip(SPLIT_FILES) {
        let mut out = String::new();
        for d in docs {
            out.push_str(&serde_json::to_string(d).expect("documents serialise"));
            out.push('\n');
        }
        crate::checkpoint::atomic::atomic_write(&dir.join(name), out.as_bytes())?;
    }
    let json = serde_json::to_string_pretty(info).expect("counts serialise");
    crate::checkpoint::atomic::atomic_write(&dir.join("corpus.json"), json.as_bytes())
}

/// Where the sources are read from; by default Debian's paths and the `bible` program.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The KJV as `bible -f` prints it; `None` runs the `bible` program.
    pub kjv: Option<PathBuf>,
    pub fortunes: PathBuf,
    pub gcide: PathBuf,
    /// At most this many bytes of dictionary entries (a seeded sample); 0 leaves it out.
    pub gcide_bytes: usize,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            kjv: None,
            fortunes: FORTUNES_DIR.into(),
            gcide: GCIDE_DICT.into(),
            gcide_bytes: 6_000_000,
        }
    }
}

/// Reads the sources, splits them and writes the corpus into `out`.
pub fn assemble(src: &Sources, seed: u64, out: &Path) -> Result<CorpusInfo> {
    let kjv = kjv_chapters(&kjv_text(src.kjv.as_deref())?);
    if kjv.is_empty() {
        return Err(Error::InvalidModel(
            "the KJV text holds no verses of the form `Ge1:1 text`".into(),
        ));
    }
    let mut sources = vec![kjv, fortunes_dir(&src.fortunes)?];
    if src.gcide_bytes > 0 {
        let entries = gcide_entries(&src.gcide)?;
        sources.push(sample_bytes(entries, src.gcide_bytes, seed));
    }
    let (splits, info) = split(sources, seed);
    write(out, &splits, &info)?;
    Ok(info)
}

/// The KJV's text: the file given, or what the `bible` program prints.
fn kjv_text(path: Option<&Path>) -> Result<String> {
    if let Some(p) = path {
        return std::fs::read_to_string(p).map_err(|e| missing_or_io(p, e, ""));
    }
    let [cmd, args @ ..] = KJV_COMMAND;
    match std::process::Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(Error::InvalidModel(format!(
            "`{}` failed: {}",
            KJV_COMMAND.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(_) => Err(Error::InvalidModel(
            "the `bible` program is not installed (Debian's `bible-kjv`); install it or give the KJV's text as a file".into(),
        )),
    }
}

/// What a corpus holds, per source and split, as a table for a terminal.
pub fn describe(info: &CorpusInfo, dir: &Path) -> String {
    let mut s = format!(
        "{} corpus in {} (seed {}):\n",
        info.version,
        dir.display(),
        info.seed
    );
    s.push_str("  source       train docs     MB  ·  valid docs     MB  ·  test docs     MB");
    for (name, c) in &info.sources {
        let mb = |i: usize| c[i].bytes as f64 / 1e6;
        s.push_str(&format!(
            "\n  {name:<10} {:>10} {:>6.2}  ·  {:>10} {:>6.2}  ·  {:>9} {:>6.2}",
            c[0].documents,
            mb(0),
            c[1].documents,
            mb(1),
            c[2].documents,
            mb(2)
        ));
    }
    s
}

/// Reads `corpus.json` from a corpus directory.
pub fn read_info(dir: &Path) -> Result<CorpusInfo> {
    let path = dir.join("corpus.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        missing_or_io(
            &path,
            e,
            " (a corpus directory is made by `scalenet corpus --out DIR`)",
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| bad(&path, &format!("not a corpus description ({e})")))
}

fn missing_or_io(path: &Path, e: std::io::Error, hint: &str) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        DataError::Missing {
            path: path.to_path_buf(),
            hint: hint.into(),
        }
        .into()
    } else {
        Error::io(path, e)
    }
}

fn bad(path: &Path, msg: &str) -> Error {
    DataError::BadFile {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
    .into()
}

fn empty(path: &Path, msg: &str) -> Error {
    DataError::Empty {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kjv_is_one_document_per_chapter_without_references() {
        let text = "Ge1:1 In the beginning.\nGe1:2 And the earth.\nGe2:1 Thus the heavens.\n";
        let docs = kjv_chapters(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].text, "In the beginning. And the earth.");
        assert_eq!(docs[1].text, "Thus the heavens.");
    }

    #[test]
    fn fortunes_split_on_percent_lines_and_lose_overstrikes() {
        let docs = fortunes("One.\n%\n_\u{8}Two\n lines.\n%\n");
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["One.", "Two\n lines."]);
    }

    #[test]
    fn dictd_numbers_are_base_64() {
        assert_eq!(dictd_number("A"), Some(0));
        assert_eq!(dictd_number("BA"), Some(64));
        assert_eq!(dictd_number("5I"), Some(57 * 64 + 8));
        assert_eq!(dictd_number("*"), None);
    }

    #[test]
    fn splits_are_disjoint_seeded_and_cover_every_document() {
        let docs = |src: &str, n: usize| -> Vec<Document> {
            (0..n)
                .map(|i| Document {
                    source: src.into(),
                    text: format!("{src} {i}"),
                })
                .collect()
        };
        let (a, info) = split(vec![docs("x", 100), docs("y", 40)], 7);
        let (b, _) = split(vec![docs("x", 100), docs("y", 40)], 7);
        assert_eq!(a, b);
        assert_eq!(a.iter().map(Vec::len).sum::<usize>(), 140);
        assert_eq!(info.sources[0].1[1].documents, 5);
        assert_eq!(info.sources[1].1[2].documents, 2);
        let mut all: Vec<&String> = a.iter().flatten().map(|d| &d.text).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 140);
    }

    #[test]
    fn a_byte_budget_keeps_order_and_stays_under() {
        let docs: Vec<Document> = (0..50)
            .map(|i| Document {
                source: "g".into(),
                text: format!("{i:04}"),
            })
            .collect();
        let s = sample_bytes(docs, 40, 1);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0].text < w[1].text));
    }
}
