//! The Llama model against transformers' logits (tests/fixtures/gen_llama_fixtures.py), the KV
//! cache against the full forward, and GGUF reading against the formats' definitions.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use scalenet::checkpoint::hf_dir::load_llama;
use scalenet::checkpoint::read_int_tensor;
use scalenet::model::weights::to_vec;

fn fixture_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "fixtures missing under {}", root.display());
    dirs
}

fn ids_tensor(shape: &[usize], ids: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [shape[0], shape[1]]), device)
}

#[test]
fn logits_match_transformers_within_1e4() {
    let device = Device::flex();
    for dir in fixture_dirs() {
        let loaded = load_llama(&dir, &device).unwrap();
        let io = dir.join("io.safetensors");
        let (shape, ids) = read_int_tensor(&io, "input_ids").unwrap();
        let want = read_logits(&io);
        let got = to_vec(
            loaded
                .model
                .forward(ids_tensor(&shape, &ids, &device), None),
        );
        assert_eq!(got.len(), want.len());
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{}: max abs error {err:e}", dir.display());
        assert!(err <= 1e-4, "{}: max abs error {err}", dir.display());
    }
}

/// Prefill then one token at a time through the cache gives the full forward's logits.
#[test]
fn kv_cache_matches_the_full_forward() {
    let device = Device::flex();
    for dir in fixture_dirs() {
        let model = load_llama(&dir, &device).unwrap().model;
        let (shape, ids) = read_int_tensor(&dir.join("io.safetensors"), "input_ids").unwrap();
        let (n, t) = (shape[0], shape[1]);
        let full = to_vec(model.forward(ids_tensor(&shape, &ids, &device), None));
        let vocab = full.len() / (n * t);
        let mut cache = model.new_cache();
        let split = 5;
        let first: Vec<i64> = (0..n)
            .flat_map(|b| ids[b * t..b * t + split].to_vec())
            .collect();
        let mut pieces = vec![to_vec(
            model.forward(ids_tensor(&[n, split], &first, &device), Some(&mut cache)),
        )];
        for j in split..t {
            let one: Vec<i64> = (0..n).map(|b| ids[b * t + j]).collect();
            pieces.push(to_vec(
                model.forward(ids_tensor(&[n, 1], &one, &device), Some(&mut cache)),
            ));
        }
        assert_eq!(cache.len, t);
        for b in 0..n {
            for j in 0..t {
                let got = if j < split {
                    &pieces[0][(b * split + j) * vocab..(b * split + j + 1) * vocab]
                } else {
                    &pieces[j - split + 1][b * vocab..(b + 1) * vocab]
                };
                let want = &full[(b * t + j) * vocab..(b * t + j + 1) * vocab];
                let err = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(err < 1e-4, "{} batch {b} token {j}: {err}", dir.display());
            }
        }
    }
}

/// The f32 `logits` of a fixture's io.safetensors (which also holds integer ids).
fn read_logits(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
