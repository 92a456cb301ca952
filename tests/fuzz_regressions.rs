//! Replays the inputs the fuzz campaigns (fuzz/, cargo-fuzz) found, and a few found by hand,
//! through the same entry points the fuzz targets call: each must end in a typed error or a
//! valid value. Plain tests: no fuzzer is needed to run them.

use std::path::Path;

type Target = fn(&[u8]) -> Result<(), String>;

fn targets() -> [(&'static str, Target); 7] {
    use scalenet::untrusted as u;
    [
        ("safetensors", |b| {
            u::safetensors(b).map(drop).map_err(|e| e.to_string())
        }),
        ("config", |b| {
            u::config(b).map(drop).map_err(|e| e.to_string())
        }),
        ("idx", |b| u::idx(b).map(drop).map_err(|e| e.to_string())),
        ("cifar", |b| {
            u::cifar(b).map(drop).map_err(|e| e.to_string())
        }),
        ("image", |b| {
            u::image(b).map(drop).map_err(|e| e.to_string())
        }),
        ("gguf", |b| u::gguf(b).map(drop).map_err(|e| e.to_string())),
        ("tokenizer", |b| {
            u::tokenizer(b).map(drop).map_err(|e| e.to_string())
        }),
    ]
}

#[test]
fn fuzz_findings_end_in_an_error_or_a_value() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (target, f) in targets() {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| f(&bytes));
            match outcome {
                Ok(Ok(())) => {}
                // An error must be one line a user can read.
                Ok(Err(msg)) => assert!(!msg.contains('\n'), "{}: {msg}", path.display()),
                Err(_) => panic!("{}: panicked", path.display()),
            }
            replayed += 1;
        }
    }
    assert!(
        replayed >= 3,
        "regressions missing under {}",
        root.display()
    );
}
