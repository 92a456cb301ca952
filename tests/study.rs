//! The reproduction study on a tiny model: arms run, reports and plots are written, a study
//! grows by `--only` and reuses finished arms, and other settings are refused.

use scalenet::ops::precision::Precision;
use scalenet::study::{run_study, StudyConfig};
use scalenet::train::Hooks;

fn tiny() -> StudyConfig {
    StudyConfig {
        data: "fmnist-mini".into(),
        train_subset: Some(256),
        test_subset: Some(64),
        patch_size: 7,
        embed_dim: 16,
        num_heads: 2,
        base_depth: 2,
        base_epochs: 1,
        epochs: 1,
        seeds: 1,
        batch_size: 64,
        adapter_rank: 4,
        workers: 1,
        only: vec![
            "base".into(),
            "grown".into(),
            "scratch-3E".into(),
            "grown-3L".into(),
        ],
        ..StudyConfig::reproduce()
    }
}

#[test]
fn a_tiny_study_runs_grows_and_refuses_other_settings() {
    let dir = std::env::temp_dir().join(format!("scalenet-study-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let r = run_study(&tiny(), &dir, &Hooks::default()).unwrap();
    let names: Vec<&str> = r.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["base", "grown", "scratch-3E", "grown-3L"]);
    assert_eq!(r[3].depth, 6);
    for f in [
        "RESULTS.md",
        "results.png",
        "scaling.png",
        "results.json",
        "study.json",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    assert!(!dir.join("variants.png").exists(), "no variant arm has run");
    // More arms later: the finished ones are reused, the new one runs (frozen blocks). The
    // precision is not a setting: a study may go on in bf16 on a CPU where that is faster.
    let more = StudyConfig {
        only: vec![
            "grown".into(),
            "adapters-only".into(),
            "grown-low-lr".into(),
        ],
        precision: Precision::Bf16,
        ..tiny()
    };
    let r = run_study(&more, &dir, &Hooks::default()).unwrap();
    let a = r.iter().find(|a| a.name == "adapters-only").unwrap();
    assert!(a.params_trainable < a.params_total);
    // The report holds every finished arm, not only this call's.
    let names: Vec<&str> = r.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "base",
            "grown",
            "scratch-3E",
            "grown-3L",
            "adapters-only",
            "grown-low-lr"
        ]
    );
    // The fine-tuning-rate arm trains the grown model at a quarter of the study's rate.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("runs/grown-low-lr-s0/run.json")).unwrap())
            .unwrap();
    assert_eq!(run["lr"].as_f64().unwrap(), tiny().lr / 4.0);
    assert_eq!(run["precision"], "bf16");
    // Arms grown from the base carve the base's validation split; scratch arms their own.
    assert_eq!(run["data_seed"].as_u64(), Some(0));
    let scratch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("runs/scratch-3E-s0/run.json")).unwrap())
            .unwrap();
    assert!(scratch["data_seed"].is_null());
    assert_eq!(scratch["precision"], "f32");
    let md = std::fs::read_to_string(dir.join("RESULTS.md")).unwrap();
    assert!(md.contains("| scratch-3E |") && md.contains("| adapters-only |"));
    // Each arm says the precision its runs trained in, whichever call wrote the report.
    let arm_line = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("- {name}: ")))
            .unwrap_or_else(|| panic!("no line for {name} in {md}"))
            .to_string()
    };
    // ... and the CPU its epochs ran on (recorded per epoch: a run may resume elsewhere).
    assert!(arm_line("grown-low-lr").ends_with("(bf16, CPU 1)"), "{md}");
    assert!(arm_line("scratch-3E").ends_with("(f32, CPU 1)"), "{md}");
    // With the threads it trained with: runs sharing the cores each run slower.
    let cpu = scalenet::ops::auto_precision::cpu_model();
    let threads = rayon::current_num_threads();
    let unit = if threads == 1 { "thread" } else { "threads" };
    assert!(
        md.contains(&format!("(CPU 1 = {cpu}, {threads} {unit})")),
        "{md}"
    );
    let epochs = scalenet::train::trainer::read_metrics(&dir.join("runs/grown-s0")).unwrap();
    assert!(epochs
        .iter()
        .all(|m| m.cpu.as_deref() == Some(cpu.as_str()) && m.threads == Some(threads)));
    // The variants have their own figure once one has run.
    assert!(dir.join("variants.png").is_file());
    assert!(md.contains("variants.png shows"), "{md}");
    // The headline says which way it came out, and at what parameter cost.
    assert!(
        md.contains("beats scratch-3E by") || md.contains("trails scratch-3E by"),
        "{md}"
    );
    assert!(md.contains("parameters against scratch's"), "{md}");
    assert!(dir.join("scaling.png").is_file());
    // Other settings in the same directory are refused; so is an unknown arm.
    let other = StudyConfig { lr: 1e-3, ..tiny() };
    let e = run_study(&other, &dir, &Hooks::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("other settings"), "{e}");
    let bad = StudyConfig {
        only: vec!["grwon".into()],
        ..tiny()
    };
    let e = run_study(&bad, &dir, &Hooks::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such arm"), "{e}");
}

/// A base-only tiny study in a fresh directory, stopped as after Ctrl-C: the running arm
/// checkpoints after its current step and the study stops with the returned message.
fn interrupted_base_study(tag: &str) -> (StudyConfig, std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("scalenet-study-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = StudyConfig {
        only: vec!["base".into()],
        ..tiny()
    };
    let hooks = Hooks::default();
    hooks
        .interrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = run_study(&cfg, &dir, &hooks).unwrap_err().to_string();
    (cfg, dir, e)
}

#[test]
fn an_interrupted_study_says_so_and_continues_when_run_again() {
    let (cfg, dir, e) = interrupted_base_study("int");
    assert!(e.contains("run the same command again"), "{e}");
    let ckpt = dir.join("runs/base/checkpoint/state.json");
    assert!(ckpt.is_file(), "no checkpoint after the interrupt");
    let r = run_study(&cfg, &dir, &Hooks::default()).unwrap();
    assert_eq!(r[0].name, "base");
    assert!(dir.join("runs/base/model/config.json").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A study killed (not interrupted) before its arm wrote a first checkpoint leaves the arm's
/// run.json and nothing else; running it again starts that arm over instead of refusing it.
#[test]
fn a_study_killed_before_the_first_checkpoint_continues_when_run_again() {
    let (cfg, dir, _) = interrupted_base_study("kill");
    let run = dir.join("runs/base");
    std::fs::remove_dir_all(run.join("checkpoint")).unwrap();
    let _ = std::fs::remove_file(run.join("metrics.jsonl"));
    assert!(run.join("run.json").is_file());
    let r = run_study(&cfg, &dir, &Hooks::default()).unwrap();
    assert_eq!(r[0].name, "base");
    assert!(run.join("model/config.json").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
