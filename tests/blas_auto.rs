//! `--blas auto`: the libraries found on this machine are timed against our kernels and the
//! faster one runs. Its own test binary, because the choice is per process.

use scalenet::ops::blas;

#[test]
fn auto_measures_what_it_finds_and_says_what_runs() {
    let cache = std::env::temp_dir().join(format!("scalenet-blas-auto-{}", std::process::id()));
    let found = blas::candidates();
    let reason = blas::choose_auto(Some(&cache));
    eprintln!("--blas auto on this machine: {reason}");
    if found.is_empty() {
        assert!(reason.starts_with("our kernels: no MKL"), "{reason}");
        assert!(blas::active().is_none());
        return;
    }
    // Every library found is named with both rates (or with why it was refused, or not timed:
    // a test run shares the cores with the build, and a busy machine is not timed).
    for path in &found {
        assert!(reason.contains(&path.display().to_string()), "{reason}");
    }
    assert!(
        reason.contains("GFLOP/s")
            || reason.contains("refused")
            || reason.contains("LP64")
            || reason.contains("not timed, other work loads the cores"),
        "{reason}"
    );
    match blas::active() {
        Some(lib) => assert!(
            reason.starts_with(&lib.path().display().to_string()),
            "{reason}"
        ),
        None => assert!(reason.starts_with("our kernels"), "{reason}"),
    }
    // Decided once per process.
    if blas::active().is_some() {
        assert!(blas::choose_auto(Some(&cache)).ends_with("(chosen earlier)"));
    }
    let _ = std::fs::remove_dir_all(cache);
}
