use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::data::corpus;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write train.jsonl, valid.jsonl, test.jsonl and corpus.json.
    #[arg(long)]
    out: PathBuf,
    /// The King James Bible as `bible -f Gen1:1-Rev22:21` prints it; without it, the `bible`
    /// program (Debian's `bible-kjv`) is run.
    #[arg(long)]
    kjv: Option<PathBuf>,
    /// A directory of fortune files (Debian's `fortunes`).
    #[arg(long, default_value = corpus::FORTUNES_DIR)]
    fortunes: PathBuf,
    /// The GCIDE dictionary (Debian's `dict-gcide`), its `.index` beside it.
    #[arg(long, default_value = corpus::GCIDE_DICT)]
    gcide: PathBuf,
    /// At most this many MB of dictionary entries (a seeded sample); 0 leaves the dictionary out.
    #[arg(long, default_value_t = 6.0)]
    gcide_mb: f64,
    /// Seed of the sample and of the split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    if !(a.gcide_mb >= 0.0 && a.gcide_mb.is_finite()) {
        bail!("--gcide-mb must be a number of MB, at least 0");
    }
    let src = corpus::Sources {
        kjv: a.kjv,
        fortunes: a.fortunes,
        gcide: a.gcide,
        gcide_bytes: (a.gcide_mb * 1e6) as usize,
    };
    let info = corpus::assemble(&src, a.seed, &a.out)?;
    println!("{}", corpus::describe(&info, &a.out));
    Ok(())
}
