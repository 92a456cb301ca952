//! Swin: logits against timm's on the committed fixtures (tests/fixtures/gen_swin_fixtures.py),
//! lossless save/load, and growth per stage (identity start, sharing, the unshared copy).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use scalenet::checkpoint::model_dir::build_network;
use scalenet::checkpoint::{load_model, save_model, ModelConfig, TensorFile};
use scalenet::growth::{expand_swin, ExpandOptions, InitMode, MapStrategy};
use scalenet::model::weights::to_vec;
use scalenet::network::Network;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn swin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("swin"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4);
    dirs
}

#[test]
fn logits_match_timm_within_1e4() {
    let device = Device::flex();
    for (name, dir) in scalenet::selfcheck::fixture_dirs(&fixtures()) {
        if !name.contains("swin") {
            continue;
        }
        let c = scalenet::selfcheck::fixture(&name, &dir, &device).unwrap();
        eprintln!("{name}: max abs error {:e}", c.max_err);
        assert!(c.passed(), "{name}: max abs error {}", c.max_err);
    }
}
