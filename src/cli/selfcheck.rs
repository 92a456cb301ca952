use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::device::DEVICE_HELP;
use scalenet::selfcheck::{self, Check};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
    /// The golden fixtures to run (a clone's tests/fixtures); skipped when absent.
    #[arg(long, default_value = "tests/fixtures")]
    fixtures: PathBuf,
    /// Also write every check as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let device = super::device(&args.device)?;
    let mut checks: Vec<Check> = Vec::new();
    // Printed as they finish: a first run on a GPU compiles (and tunes) kernels for minutes.
    let mut report = |c: Check| {
        println!(
            "{}  {:<9} {:<62} max err {:.2e} (tolerance {:.0e})",
            if c.passed() { "ok  " } else { "FAIL" },
            c.group,
            c.name,
            c.max_err,
            c.tolerance
        );
        checks.push(c);
    };
    if args.fixtures.is_dir() {
        for (name, dir) in selfcheck::fixture_dirs(&args.fixtures) {
            report(selfcheck::fixture(&name, &dir, &device)?);
        }
    } else {
        eprintln!(
            "note: {} not found; fixtures skipped (pass --fixtures DIR from a clone)",
            args.fixtures.display()
        );
    }
    let bf16 = scalenet::ops::auto_precision::bf16_supported(&args.device);
    let (ops, skipped) = selfcheck::ops(&device, bf16);
    ops.into_iter().for_each(&mut report);
    for name in skipped {
        println!(
            "skip  ops       {name:<62} {} has no bf16 (WGSL)",
            args.device
        );
    }
    selfcheck::sharing(&device)?
        .into_iter()
        .for_each(&mut report);
    let failed = checks.iter().filter(|c| !c.passed()).count();
    println!("{} passed, {failed} failed", checks.len() - failed);
    if let Some(path) = &args.json {
        let json = serde_json::json!({"device": args.device, "checks": checks});
        scalenet::checkpoint::atomic::atomic_write(
            path,
            serde_json::to_string_pretty(&json)?.as_bytes(),
        )?;
    }
    if failed > 0 {
        bail!(
            "{failed} of {} checks failed on {}",
            checks.len(),
            args.device
        );
    }
    Ok(())
}
