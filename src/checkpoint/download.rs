//! Fetching a hub id's files into the Hugging Face cache, as `huggingface_hub` does, so that
//! Python finds what scalenet downloaded and the other way round: the revision's commit from
//! `{endpoint}/api/models/{repo}/revision/{rev}`, each file from
//! `{endpoint}/{repo}/resolve/{commit}/{file}`, written as `blobs/{etag}` (through
//! `blobs/{etag}.incomplete`, resumed after a broken connection, renamed only once its size and
//! hash check out) with `snapshots/{commit}/{file}` linking to it and `refs/{rev}` naming the
//! commit. Only the files a model needs are fetched.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use super::hub_id::{is_commit, HubId};
use crate::error::{Error, Result};

/// The hub's address: `$HF_ENDPOINT`, else the public hub.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

/// `$HF_TOKEN`, else the token file `huggingface-cli login` writes.
fn token() -> Option<String> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    if let Some(t) = var("HF_TOKEN") {
        return Some(t);
    }
    let file = match var("HF_TOKEN_PATH") {
        Some(p) => PathBuf::from(p),
        None => match var("HF_HOME") {
            Some(h) => PathBuf::from(h).join("token"),
            None => PathBuf::from(var("HOME")?).join(".cache/huggingface/token"),
        },
    };
    let t = std::fs::read_to_string(file).ok()?;
    Some(t.trim().to_string()).filter(|t| !t.is_empty())
}

/// Whether `HF_HUB_OFFLINE` forbids the network.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
}

struct Client {
    agent: ureq::Agent,
    /// For the metadata request, whose redirect (for files kept in LFS) carries the file's
    /// size and hash in `X-Linked-Size` and `X-Linked-Etag`.
    no_redirects: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    id: HubId,
}

impl Client {
    fn new(id: &HubId) -> Self {
        let agent = |redirects: u32| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_body(Some(Duration::from_secs(60)))
                .build()
                .into()
        };
        Self {
            agent: agent(10),
            no_redirects: agent(0),
            endpoint: endpoint(),
            token: token(),
            id: id.clone(),
        }
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Hub {
            id: self.id.to_string(),
            msg: msg.into(),
        }
    }

    /// GET `url` (with the token on the hub's own host, and `Range` from `from` bytes on), or
    /// with `head` a HEAD that does not follow redirects; hub statuses become errors.
    fn request(
        &self,
        url: &str,
        from: u64,
        head: bool,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let resp = if head {
            let mut req = self.no_redirects.head(url);
            if let Some(t) = self
                .token
                .as_ref()
                .filter(|_| url.starts_with(&self.endpoint))
            {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            req.call()
        } else {
            let mut req = self.agent.get(url);
            if let Some(t) = self
                .token
                .as_ref()
                .filter(|_| url.starts_with(&self.endpoint))
            {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            if from > 0 {
                req = req.header("Range", format!("bytes={from}-"));
            }
            req.call()
        };
        let resp = resp.map_err(|e| {
            self.err(format!(
                "not a local path, and the hub cannot be reached ({}: {e})",
                self.endpoint
            ))
        })?;
        match resp.status().as_u16() {
            200 | 206 => Ok(resp),
            301 | 302 | 303 | 307 | 308 if head => Ok(resp),
            401 | 403 => Err(self.err(if self.token.is_some() {
                "not a local path, and the hub refused the token (a gated or private repository: accept its terms, or check HF_TOKEN)"
            } else {
                "not a local path, and the hub asks for a token (a gated or private repository, or none of that name): set HF_TOKEN or run `huggingface-cli login`"
            })),
            404 => Err(self.err(format!(
                "not a local path, and not found on {}",
                self.endpoint
            ))),
            s => Err(self.err(format!("{url}: the hub answered HTTP {s}"))),
        }
    }

    /// The revision's commit and the repository's files.
    fn revision(&self) -> Result<(String, Vec<String>)> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint, self.id.repo, self.id.revision
        );
        let mut resp = self.request(&url, 0, false)?;
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.err(format!("{url}: {e}")))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| self.err(format!("{url}: {e}")))?;
        let sha = v["sha"].as_str().filter(|s| is_commit(s));
        let sha = sha.ok_or_else(|| self.err(format!("{url}: no commit in the answer")))?;
        let files = v["siblings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["rfilename"].as_str().map(String::from))
            .collect();
        Ok((sha.to_string(), files))
    }
}

/// The files of a repository that a model needs: the named file; else `config.json`, the
/// weights (one file, or an index and its shards) and `tokenizer.json` where present.
fn wanted(
    id: &HubId,
    files: &[String],
    index: impl Fn() -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    let has = |f: &str| files.iter().any(|x| x == f);
    let missing = |what: &str| Error::Hub {
        id: id.to_string(),
        msg: format!("the repository has no {what}"),
    };
    if let Some(f) = &id.file {
        return has(f).then(|| vec![f.clone()]).ok_or_else(|| missing(f));
    }
    if !has("config.json") {
        let ggufs: Vec<&String> = files.iter().filter(|f| f.ends_with(".gguf")).collect();
        return Err(match ggufs.first() {
            Some(g) => Error::Hub {
                id: id.to_string(),
                msg: format!("a GGUF repository: name the file, e.g. {}:{g}", id.repo),
            },
            None => missing("config.json"),
        });
    }
    let mut out = vec!["config.json".to_string()];
    if has("model.safetensors") {
        out.push("model.safetensors".into());
    } else if has("model.safetensors.index.json") {
        out.push("model.safetensors.index.json".into());
        out.extend(index()?);
    } else {
        return Err(missing("model.safetensors (nor its index)"));
    }
    if has("tokenizer.json") {
        out.push("tokenizer.json".into());
    }
    Ok(out)
}

/// Downloads what `id` needs into `cache`; returns the snapshot directory.
pub fn download(id: &HubId, cache: &Path) -> Result<PathBuf> {
    let client = Client::new(id);
    let (commit, files) = client.revision()?;
    let repo = cache.join(id.folder());
    let snapshot = repo.join("snapshots").join(&commit);
    let fetch = |file: &str| fetch_file(&client, &repo, &commit, file);
    let index = || {
        fetch("model.safetensors.index.json")?;
        shards(&snapshot.join("model.safetensors.index.json"))
    };
    for file in wanted(id, &files, index)? {
        fetch(&file)?;
    }
    if !is_commit(&id.revision) {
        let refs = repo.join("refs");
        std::fs::create_dir_all(&refs).map_err(|e| Error::io(&refs, e))?;
        super::atomic::atomic_write(&refs.join(&id.revision), commit.as_bytes())?;
    }
    Ok(snapshot)
}

/// The shard files an index names.
fn shards(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|cause| Error::Json {
        path: index.to_path_buf(),
        cause,
    })?;
    let mut out: Vec<String> = v["weight_map"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, f)| f.as_str().map(String::from))
        .filter(|f| !f.contains('/') && !f.starts_with('.'))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The size and hash a file must have: from `X-Linked-Size` / `X-Linked-Etag` (large files
/// kept in LFS: the etag is the sha256) or `Content-Length` / `ETag` (the git blob's sha1).
struct Expected {
    size: Option<u64>,
    etag: String,
}

fn expected(resp: &ureq::http::Response<ureq::Body>) -> Option<Expected> {
    // On a redirect, Content-Length is the redirect's own; X-Linked-Size is the file's.
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_string()
            })
    };
    let etag = header("x-linked-etag").or_else(|| header("etag"))?;
    let size = header("x-linked-size")
        .or_else(|| header("content-length"))
        .and_then(|s| s.parse().ok());
    Some(Expected { size, etag })
}

/// One file into `blobs/{etag}` and its snapshot link, unless it is there already.
fn fetch_file(client: &Client, repo: &Path, commit: &str, file: &str) -> Result<()> {
    let link = repo.join("snapshots").join(commit).join(file);
    if link.is_file() {
        return Ok(());
    }
    let url = format!(
        "{}/{}/resolve/{commit}/{file}",
        client.endpoint, client.id.repo
    );
    let blobs = repo.join("blobs");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
    let mut attempt = 0;
    let blob = loop {
        attempt += 1;
        match fetch_blob(client, &url, &blobs, file) {
            Ok(blob) => break blob,
            Err(Fetch::Retry(why)) if attempt < 4 => {
                eprintln!("{file}: {why}; resuming");
            }
            Err(Fetch::Retry(why)) => return Err(client.err(format!("{file}: {why}"))),
            Err(Fetch::Fatal(e)) => return Err(e),
        }
    };
    let dir = link.parent().expect("a snapshot file has a folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let target = Path::new("../..").join(
        std::iter::repeat_n("..", file.matches('/').count())
            .collect::<PathBuf>()
            .join("blobs")
            .join(blob.file_name().expect("a blob has a name")),
    );
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::io(&link, e))
}

enum Fetch {
    /// The connection broke: try again from where the partial blob ends.
    Retry(String),
    Fatal(Error),
}

/// Downloads `url` into `blobs/{etag}.incomplete` (continuing it if present), checks it, and
/// renames it to `blobs/{etag}`.
fn fetch_blob(
    client: &Client,
    url: &str,
    blobs: &Path,
    file: &str,
) -> std::result::Result<PathBuf, Fetch> {
    let head = client.request(url, 0, true).map_err(Fetch::Fatal)?;
    let want = expected(&head).ok_or_else(|| {
        Fetch::Fatal(client.err(format!("{url}: the hub sent no ETag to check {file} by")))
    })?;
    // Files kept in LFS redirect to where their bytes are.
    let source = match head.headers().get("location").and_then(|v| v.to_str().ok()) {
        Some(loc) if loc.starts_with('/') => format!("{}{loc}", client.endpoint),
        Some(loc) => loc.to_string(),
        None => url.to_string(),
    };
    if !want.etag.bytes().all(|b| b.is_ascii_alphanumeric()) || want.etag.is_empty() {
        return Err(Fetch::Fatal(
            client.err(format!("{url}: odd ETag '{}'", want.etag)),
        ));
    }
    let blob = blobs.join(&want.etag);
    if blob.is_file() {
        return Ok(blob);
    }
    let partial = blobs.join(format!("{}.incomplete", want.etag));
    let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
    // Where part of the file is on disk, ask for the rest.
    let from = if want.size.is_some_and(|s| have < s) {
        have
    } else {
        0
    };
    let mut resp = client.request(&source, from, false).map_err(Fetch::Fatal)?;
    let append = from > 0 && resp.status().as_u16() == 206;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(&partial)
        .map_err(|e| Fetch::Fatal(Error::io(&partial, e)))?;
    let total = want.size.unwrap_or(0);
    let bar = progress(file, total, if append { have } else { 0 });
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                bar.abandon();
                return Err(Fetch::Retry(format!("the connection broke ({e})")));
            }
        };
        out.write_all(&buf[..n])
            .map_err(|e| Fetch::Fatal(Error::io(&partial, e)))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    drop(out);
    check(&partial, &want, file).map_err(|msg| {
        let _ = std::fs::remove_file(&partial);
        Fetch::Fatal(client.err(format!("{file}: {msg}; nothing was kept")))
    })?;
    std::fs::rename(&partial, &blob).map_err(|e| Fetch::Fatal(Error::io(&blob, e)))?;
    Ok(blob)
}

/// A bar with rate and ETA for one file, on stderr.
fn progress(file: &str, total: u64, done: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total).filter(|&t| t > 0),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} · {bytes_per_sec} · ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(file.to_string());
    bar.set_position(done);
    bar
}

/// Whether the downloaded file has the size and hash the hub promised: sha256 for a 64-digit
/// etag, git's blob sha1 for a 40-digit one.
fn check(path: &Path, want: &Expected, file: &str) -> std::result::Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if let Some(size) = want.size.filter(|&s| s != bytes.len() as u64) {
        return Err(format!(
            "{} bytes arrived, {size} were announced",
            bytes.len()
        ));
    }
    let got = match want.etag.len() {
        64 => hex(&sha2::Sha256::digest(&bytes)),
        40 => {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {}\0", bytes.len()).as_bytes());
            h.update(&bytes);
            hex(&h.finalize())
        }
        _ => return Ok(()),
    };
    if got != want.etag.to_ascii_lowercase() {
        return Err(format!(
            "its hash is {got}, but the hub announced {} for {file}",
            want.etag
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
