//! Command-line parsing: raw flags become validated settings here, then each subcommand's
//! `run` does the work through the library.

mod expand;
mod forward;
mod info;
mod init;

use clap::{Parser, Subcommand};

/// Grow a pretrained Vision Transformer deeper at almost no parameter cost (ScaleNet).
#[derive(Parser, Debug)]
#[command(name = "scalenet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Describe a model directory: architecture, shapes, input config, parameter counts.
    Info(info::Args),
    /// Run a model on a tensor of images (`input` [N,C,H,W] f32) and write `logits`.
    Forward(forward::Args),
    /// Create a freshly initialised model directory (timm's init) from a preset.
    Init(init::Args),
    /// Grow a model deeper: shared base blocks plus per-position adapters (ScaleNet).
    Expand(expand::Args),
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Forward(a) => forward::run(a),
        Command::Init(a) => init::run(a),
        Command::Expand(a) => expand::run(a),
    }
}
