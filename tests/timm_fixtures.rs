//! Our logits against timm's on the committed golden fixtures (tests/fixtures/gen_timm_fixtures.py).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use scalenet::checkpoint::{load_vit, TensorFile};

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

#[test]
fn logits_match_timm_and_the_grown_reference_within_1e4() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let checks = scalenet::selfcheck::fixtures(&root, &Device::flex()).unwrap();
    let count = |kind: &str| checks.iter().filter(|c| c.name.starts_with(kind)).count();
    assert_eq!(count("timm/"), fixture_dirs().len());
    assert_eq!(count("grown/"), 4);
    for c in &checks {
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

#[test]
fn save_then_load_is_lossless() {
    let device = Device::flex();
    let tmp = tempdir();
    for dir in fixture_dirs() {
        let loaded = load_vit(&dir, &device).unwrap();
        let out = tmp.join(dir.file_name().unwrap());
        scalenet::checkpoint::save_vit(&out, &loaded.config, &loaded.model).unwrap();
        let again = load_vit(&out, &device).unwrap();
        assert_eq!(again.config.arch, loaded.config.arch);
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
