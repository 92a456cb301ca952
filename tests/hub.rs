//! Models by hub id, downloaded from a hub this test serves on 127.0.0.1 (the hub's revision
//! and resolve endpoints, small files with their git-sha1 ETag, large ones redirected with
//! `X-Linked-Etag` / `X-Linked-Size` as LFS files are): the first download, a second run from
//! the cache with the server gone, a revision pin, a connection dropped half-way and resumed,
//! an unknown repository, a gated one, a file whose hash does not match, and offline mode.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::Digest;

const COMMIT: &str = "1111111111111111111111111111111111111111";
const V1: &str = "2222222222222222222222222222222222222222";

fn fixture(file: &str) -> Vec<u8> {
    from("timm/distilled", file)
}

fn from(dir: &str, file: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::read(root.join(dir).join(file)).unwrap()
}

/// A two-word tokenizer for the language model's repository.
const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"a":0,"b":1},"unk_token":"a"}}"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn git_sha1(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

/// The served hub: repositories `org/tiny` (branches main and v1), `org/bad` (its weights'
/// announced hash is wrong) and `org/gated` (asks for a token).
struct Hub {
    port: u16,
    stop: Arc<AtomicBool>,
    /// GETs of the weights' bytes so far; the first one breaks off half-way when `drop_once`.
    weight_gets: Arc<AtomicUsize>,
}

impl Hub {
    fn start(drop_once: bool) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let weight_gets = Arc::new(AtomicUsize::new(0));
        let (s, g) = (stop.clone(), weight_gets.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let _ = serve(conn, &g, drop_once);
                }
            }
        });
        Hub {
            port,
            stop,
            weight_gets,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag and closes the port.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    if !head {
        let _ = conn.write_all(body);
    }
}

fn serve(mut conn: TcpStream, weight_gets: &AtomicUsize, drop_once: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let head = method == "HEAD";
    let weights = fixture("model.safetensors");
    let config = fixture("config.json");
    let sha = hex(&sha2::Sha256::digest(&weights));
    let json = |commit: &str| {
        format!(
            r#"{{"sha": "{commit}", "siblings": [{{"rfilename": "config.json"}}, {{"rfilename": "model.safetensors"}}, {{"rfilename": "README.md"}}]}}"#
        )
    };
    match path.as_str() {
        "/api/models/org/tiny/revision/main" => {
            respond(&mut conn, "200 OK", &[], json(COMMIT).as_bytes(), head)
        }
        "/api/models/org/tiny/revision/v1" => {
            respond(&mut conn, "200 OK", &[], json(V1).as_bytes(), head)
        }
        "/api/models/org/bad/revision/main" => {
            respond(&mut conn, "200 OK", &[], json(COMMIT).as_bytes(), head)
        }
        "/api/models/org/lm/revision/main" => {
            let files = r#"{"sha": "3333333333333333333333333333333333333333", "siblings": [{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}, {"rfilename": "tokenizer.json"}]}"#;
            respond(&mut conn, "200 OK", &[], files.as_bytes(), head)
        }
        p if p.starts_with("/org/lm/resolve/") => {
            let file = p.rsplit('/').next().unwrap_or("");
            let body = match file {
                "tokenizer.json" => TOKENIZER.as_bytes().to_vec(),
                f => from("llama/gqa_tied", f),
            };
            let etag = [("ETag", format!("\"{}\"", git_sha1(&body)))];
            respond(&mut conn, "200 OK", &etag, &body, head)
        }
        "/api/models/org/gated/revision/main" if !headers.contains_key("authorization") => respond(
            &mut conn,
            "401 Unauthorized",
            &[],
            b"{\"error\": \"gated\"}",
            head,
        ),
        p if p.ends_with("/config.json") && p.contains("/resolve/") => respond(
            &mut conn,
            "200 OK",
            &[("ETag", format!("\"{}\"", git_sha1(&config)))],
            &config,
            head,
        ),
        p if p.ends_with("/model.safetensors") && p.contains("/resolve/") => {
            let etag = if p.starts_with("/org/bad/") {
                "ab".repeat(32)
            } else {
                sha.clone()
            };
            let headers = [
                ("Location", format!("/cdn/{sha}")),
                ("X-Linked-Etag", format!("\"{etag}\"")),
                ("X-Linked-Size", weights.len().to_string()),
            ];
            respond(&mut conn, "302 Found", &headers, b"", head)
        }
        p if p.starts_with("/cdn/") => {
            let n = weight_gets.fetch_add(1, Ordering::SeqCst);
            let from: usize = headers
                .get("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse().ok())
                .unwrap_or(0);
            if n == 0 && drop_once {
                // All the headers, half the bytes, then the connection goes away.
                let full = [("Content-Length", weights.len().to_string())];
                respond(
                    &mut conn,
                    "200 OK",
                    &full,
                    &weights[..weights.len() / 2],
                    false,
                );
                return Ok(());
            }
            let status = if from > 0 {
                "206 Partial Content"
            } else {
                "200 OK"
            };
            respond(&mut conn, status, &[], &weights[from..], head)
        }
        _ => respond(
            &mut conn,
            "404 Not Found",
            &[],
            b"{\"error\": \"Repository not found\"}",
            head,
        ),
    }
    let _ = reader.read(&mut [0u8; 0]);
    Ok(())
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalenet-hub-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn scalenet(cache: &Path, endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scalenet"))
        .env("HF_HUB_CACHE", cache)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HOME", cache.join("no-home"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One line, exit 1, every needle in it.
fn one_line_error(o: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "'{n}' not in: {stderr}");
    }
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn download_then_the_cache_alone() {
    let cache = tempdir("first");
    let hub = Hub::start(false);
    let o = scalenet(&cache, &hub.endpoint(), &["info", "org/tiny"]);
    assert!(ok(&o).contains("deit_tiny_distilled"));
    let repo = cache.join("models--org--tiny");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let snapshot = repo.join("snapshots").join(COMMIT);
    assert!(snapshot.join("model.safetensors").is_symlink());
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors")).unwrap(),
        fixture("model.safetensors")
    );
    assert!(
        !snapshot.join("README.md").exists(),
        "only what a model needs"
    );
    // With the hub gone, the cache serves.
    let endpoint = hub.endpoint();
    drop(hub);
    let o = scalenet(&cache, &endpoint, &["info", "hf-hub:org/tiny"]);
    assert!(ok(&o).contains("deit_tiny_distilled"));
    // A pinned revision is its own snapshot and ref.
    let hub = Hub::start(false);
    ok(&scalenet(&cache, &hub.endpoint(), &["info", "org/tiny@v1"]));
    assert_eq!(std::fs::read_to_string(repo.join("refs/v1")).unwrap(), V1);
    assert!(repo
        .join("snapshots")
        .join(V1)
        .join("config.json")
        .is_file());
}

/// A language model's repository: config, weights and tokenizer come down, and the model runs.
#[test]
fn a_language_model_by_id() {
    let cache = tempdir("lm");
    let hub = Hub::start(false);
    let out = ok(&scalenet(&cache, &hub.endpoint(), &["info", "org/lm"]));
    assert!(
        out.contains("llama") && out.contains("tokenizer 2 tokens"),
        "{out}"
    );
    let commit = "3333333333333333333333333333333333333333";
    let snapshot = cache.join("models--org--lm/snapshots").join(commit);
    assert!(snapshot.join("tokenizer.json").is_file());
}

#[test]
fn a_broken_connection_resumes() {
    let cache = tempdir("resume");
    let hub = Hub::start(true);
    let o = scalenet(&cache, &hub.endpoint(), &["info", "org/tiny"]);
    assert!(ok(&o).contains("deit_tiny_distilled"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming"));
    assert!(hub.weight_gets.load(Ordering::SeqCst) >= 2);
    let blob = hex(&sha2::Sha256::digest(fixture("model.safetensors")));
    let blobs = cache.join("models--org--tiny/blobs");
    assert_eq!(
        std::fs::read(blobs.join(&blob)).unwrap(),
        fixture("model.safetensors")
    );
    assert!(!blobs.join(format!("{blob}.incomplete")).exists());
}

#[test]
fn refusals_are_one_line_and_leave_the_cache_as_it_was() {
    let cache = tempdir("refused");
    let hub = Hub::start(false);
    let e = hub.endpoint();
    one_line_error(
        &scalenet(&cache, &e, &["info", "org/nosuch"]),
        &["org/nosuch", "not found"],
    );
    one_line_error(
        &scalenet(&cache, &e, &["info", "org/gated"]),
        &["org/gated", "HF_TOKEN"],
    );
    one_line_error(
        &scalenet(&cache, &e, &["info", "org/bad"]),
        &["org/bad", "model.safetensors", "hash", "nothing was kept"],
    );
    let left = files(&cache.join("models--org--bad"));
    assert!(
        left.iter().all(|f| !f.contains("model.safetensors")
            && !f.contains(".incomplete")
            && !f.starts_with(&format!("blobs/{}", "ab".repeat(32)))),
        "{left:?}"
    );
    // Offline, with nothing cached: one line, no request.
    let offline = Command::new(env!("CARGO_BIN_EXE_scalenet"))
        .env("HF_HUB_CACHE", tempdir("offline"))
        .env("HF_ENDPOINT", &e)
        .env("HF_HUB_OFFLINE", "1")
        .args(["info", "org/tiny"])
        .output()
        .unwrap();
    one_line_error(&offline, &["org/tiny", "HF_HUB_OFFLINE"]);
}
