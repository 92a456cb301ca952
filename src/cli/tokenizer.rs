use std::path::PathBuf;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Train a byte-level BPE tokenizer (as GPT-2's and SmolLM's) on text, for a new model.
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// The text: `text:PATH` (a .txt or .jsonl file, or a directory of them), as `train` reads it.
    #[arg(long)]
    data: String,
    /// Tokens in the vocabulary, `<|endoftext|>` (id 0) included.
    #[arg(long)]
    vocab_size: usize,
    /// The share of documents held out of training (seeded), as a validation set would be.
    #[arg(long, default_value_t = 0.05)]
    val_split: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write tokenizer.json.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Train(a) => train(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let Some(path) = scalenet::data::text::text_spec(&a.data) else {
        bail!("--data {}: expected text:PATH", a.data);
    };
    if !(0.0..1.0).contains(&a.val_split) {
        bail!("--val-split must be in [0, 1), not {}", a.val_split);
    }
    if a.vocab_size < 257 {
        bail!(
            "--vocab-size must be at least 257 (the 256 bytes and <|endoftext|>), not {}",
            a.vocab_size
        );
    }
    let (mut docs, _) = scalenet::data::text::read_documents(path)?;
    if docs.is_empty() {
        bail!("{}: no text", path.display());
    }
    docs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(a.seed));
    let held = (docs.len() as f64 * a.val_split).round() as usize;
    let train = &docs[held.min(docs.len() - 1)..];
    let json = scalenet::data::tokenizer::train_bpe(train, a.vocab_size)
        .map_err(|e| anyhow::anyhow!("training the tokenizer: {e}"))?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    scalenet::checkpoint::atomic::atomic_write(&a.out, json.as_bytes())?;
    let tok = scalenet::data::tokenizer::TextTokenizer::from_file(&a.out)?;
    println!(
        "trained a byte-level BPE of {} tokens on {} of {} documents (<|endoftext|> is id 0) into {}",
        tok.vocab_size(),
        train.len(),
        docs.len(),
        a.out.display()
    );
    Ok(())
}
