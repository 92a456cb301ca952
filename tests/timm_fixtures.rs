//! Our logits against timm's on the committed golden fixtures (tests/fixtures/gen_timm_fixtures.py).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use scalenet::checkpoint::{load_vit, TensorFile};
use scalenet::inference::{run_batched, ImageBatch};

fn fixture_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 7, "fixtures missing under {}", root.display());
    dirs
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_match_timm_within_1e4() {
    let device = Device::flex();
    for dir in fixture_dirs() {
        let loaded = load_vit(&dir, &device).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let io = dir.join("io.safetensors");
        let images = ImageBatch::read(&io, &loaded.config.vit).unwrap();
        let expected = TensorFile::read(&io).unwrap().take("logits").unwrap();
        // Batch size 2 over 3 images also exercises the ragged last batch.
        let (got, width) = run_batched(&images, 2, &device, |x| loaded.model.forward(x), |_| {});
        assert_eq!(
            vec![images.len(), width],
            expected.shape,
            "{}",
            dir.display()
        );
        let err = max_abs_diff(&got, &expected.values);
        eprintln!("{}: max abs error {err:e}", dir.display());
        assert!(err <= 1e-4, "{}: max abs error {err}", dir.display());
    }
}

#[test]
fn save_then_load_is_lossless() {
    let device = Device::flex();
    let tmp = tempdir();
    for dir in fixture_dirs() {
        let loaded = load_vit(&dir, &device).unwrap();
        let out = tmp.join(dir.file_name().unwrap());
        scalenet::checkpoint::save_vit(&out, &loaded.config, &loaded.model).unwrap();
        let again = load_vit(&out, &device).unwrap();
        assert_eq!(again.config.vit, loaded.config.vit);
        let a = TensorFile::read(&dir.join("model.safetensors")).unwrap();
        let b = TensorFile::read(&out.join("model.safetensors")).unwrap();
        assert_eq!(
            a.tensors.keys().collect::<Vec<_>>(),
            b.tensors.keys().collect::<Vec<_>>()
        );
        for (k, t) in &a.tensors {
            assert_eq!(t.shape, b.tensors[k].shape, "{k}");
            assert_eq!(t.values, b.tensors[k].values, "{k}");
        }
    }
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalenet-test-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
