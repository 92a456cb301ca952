//! The Llama model against transformers' logits (tests/fixtures/gen_llama_fixtures.py), the KV
//! cache against the full forward, and GGUF reading against the formats' definitions.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use scalenet::checkpoint::hf_dir::load_llama;
use scalenet::checkpoint::read_int_tensor;
use scalenet::model::weights::to_vec;

/// The transformers fixtures (plain models) and the grown-Llama reference fixtures.
fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (sub, at_least) in [("llama", 3), ("grown_llama", 2)] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(sub);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        assert!(
            found.len() >= at_least,
            "fixtures missing under {}",
            root.display()
        );
        dirs.extend(found);
    }
    dirs
}

fn ids_tensor(shape: &[usize], ids: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [shape[0], shape[1]]), device)
}

/// Plain models against transformers, grown ones against the PyTorch reference
/// (python/scalenet_torch, on transformers), through the check `scalenet selfcheck` runs.
#[test]
fn logits_match_transformers_and_the_grown_reference_within_1e4() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let checks = scalenet::selfcheck::fixtures(&root, &Device::flex()).unwrap();
    let lm: Vec<_> = checks
        .iter()
        .filter(|c| c.name.contains("llama/"))
        .collect();
    assert_eq!(lm.len(), fixture_dirs().len());
    for c in lm {
        eprintln!("{}: max abs error {:e}", c.name, c.max_err);
        assert!(
            c.passed(),
            "{}: max abs error {} > {}",
            c.name,
            c.max_err,
            c.tolerance
        );
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

/// Generation asks for the last token's logits only: with and without a cache they are the
/// full forward's last row, for plain and grown models.
#[test]
fn last_token_logits_are_the_full_forwards_last_row() {
    use scalenet::model::llama::Logits;
    let device = Device::flex();
    for dir in fixture_dirs() {
        let model = load_llama(&dir, &device).unwrap().model;
        let (shape, ids) = read_int_tensor(&dir.join("io.safetensors"), "input_ids").unwrap();
        let (n, t) = (shape[0], shape[1]);
        let x = || ids_tensor(&shape, &ids, &device);
        let full = to_vec(model.forward(x(), None));
        let vocab = full.len() / (n * t);
        let mut cache = model.new_cache();
        for (last, cached) in [
            (model.forward_logits(x(), None, Logits::Last), false),
            (
                model.forward_logits(x(), Some(&mut cache), Logits::Last),
                true,
            ),
        ] {
            assert_eq!(last.dims(), [n, 1, vocab]);
            let last = to_vec(last);
            for b in 0..n {
                let want = &full[(b * t + t - 1) * vocab..(b * t + t) * vocab];
                let got = &last[b * vocab..(b + 1) * vocab];
                let err = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    err < 1e-5,
                    "{} (cache {cached}) batch {b}: {err}",
                    dir.display()
                );
            }
        }
        assert_eq!(cache.len, t);
    }
}

/// Shared decoder layers are one parameter each: the gradient a grown model gives a shared
/// tensor is the sum of the gradients its copies get in the unshared model, and one AdamW
/// step moves it once by that sum.
#[test]
fn shared_layers_move_once_by_the_summed_gradient() {
    use burn::optim::GradientsParams;
    use scalenet::growth::{expand_llama, AdapterSpec, ExpandOptions, InitMode, MapStrategy};
    use scalenet::network::LanguageModel;
    use scalenet::train::optim::{named_params, AdamW, AdamWConfig};
    let device = Device::flex().autodiff();
    let dir = fixture_dirs()
        .into_iter()
        .find(|d| d.ends_with("gqa_tied"))
        .unwrap();
    let LanguageModel::Plain(base) = load_llama(&dir, &device).unwrap().model else {
        unreachable!()
    };
    let opts = ExpandOptions {
        depth: 4,
        depths: Vec::new(),
        map: MapStrategy::Cyclic,
        adapter: Some(AdapterSpec {
            rank: 4,
            ..AdapterSpec::default()
        }),
        unshared_norms: false,
        init: InitMode::Paper,
        no_share: false,
        lora: None,
        seed: 0,
    };
    let LanguageModel::Grown(grown) = expand_llama(base, &opts).unwrap() else {
        unreachable!()
    };
    let plain = grown.unshared(&device);
    let ids = ids_tensor(
        &[2, 7],
        &[3, 9, 27, 81, 50, 1, 2, 5, 6, 7, 8, 9, 10, 11],
        &device,
    );
    let w = Tensor::<3>::random(
        [2, 7, 97],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let g_plain = (plain.forward(ids.clone(), None) * w.clone())
        .sum()
        .backward();
    let grad = |i: usize| {
        to_vec(
            plain.layers[i]
                .mlp
                .gate_proj
                .weight
                .val()
                .grad(&g_plain)
                .unwrap(),
        )
    };
    let sum: Vec<f32> = grad(0).iter().zip(&grad(2)).map(|(a, b)| a + b).collect();
    let loss = (grown.forward(ids, None) * w).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &grown);
    let before = to_vec(grown.layers[0].mlp.gate_proj.weight.val());
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let stepped = opt.step(1e-2, grown, grads, 1.0);
    let after = to_vec(stepped.layers[0].mlp.gate_proj.weight.val());
    for ((b, a), g) in before.iter().zip(&after).zip(&sum) {
        let want = b - 1e-2 * g / (g.abs() + 1e-8);
        assert!((a - want).abs() < 1e-5, "{a} vs {want} (g = {g})");
    }
    assert_eq!(opt.export().len(), 2 * named_params(&stepped).len());
    // 2 shared layers, not 4 copies: the grown model holds the base's layers once.
    assert_eq!(stepped.layers.len(), 2);
}

/// Identity init (gates 1 at a layer's first position, 0 after) gives the base's logits
/// exactly, grown and as LLaMA-Pro-style copies.
#[test]
fn identity_growth_keeps_the_base_function() {
    use scalenet::growth::{expand_llama, AdapterSpec, ExpandOptions, InitMode, MapStrategy};
    use scalenet::network::LanguageModel;
    let device = Device::flex();
    let dir = fixture_dirs()
        .into_iter()
        .find(|d| d.ends_with("llama3_rope_untied"))
        .unwrap();
    let (shape, ids) = read_int_tensor(&dir.join("io.safetensors"), "input_ids").unwrap();
    let base = load_llama(&dir, &device).unwrap().model;
    let want = to_vec(base.forward(ids_tensor(&shape, &ids, &device), None));
    for no_share in [false, true] {
        let LanguageModel::Plain(b) = load_llama(&dir, &device).unwrap().model else {
            unreachable!()
        };
        let opts = ExpandOptions {
            depth: 5,
            depths: Vec::new(),
            map: MapStrategy::Interleave,
            adapter: Some(AdapterSpec::default()),
            unshared_norms: true,
            init: InitMode::Identity,
            no_share,
            lora: None,
            seed: 1,
        };
        let grown = expand_llama(b, &opts).unwrap();
        assert_eq!(grown.depth(), 5);
        let got = to_vec(grown.forward(ids_tensor(&shape, &ids, &device), None));
        assert_eq!(got, want, "no_share = {no_share}");
    }
}

/// A model split into shards with `model.safetensors.index.json` loads as the single file does.
#[test]
fn sharded_checkpoints_load_as_one() {
    let device = Device::flex();
    let src = fixture_dirs()
        .into_iter()
        .find(|d| d.ends_with("gqa_tied"))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("scalenet-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (i, half) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = half
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        std::fs::write(
            dir.join(&file),
            safetensors::serialize(views, &None).unwrap(),
        )
        .unwrap();
        for n in half {
            map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let (shape, ids) = read_int_tensor(&src.join("io.safetensors"), "input_ids").unwrap();
    let run = |d: &Path| {
        to_vec(
            load_llama(d, &device)
                .unwrap()
                .model
                .forward(ids_tensor(&shape, &ids, &device), None),
        )
    };
    assert_eq!(run(&dir), run(&src));
}
