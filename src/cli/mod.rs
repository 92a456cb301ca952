//! Command-line parsing: raw flags become validated settings here, then each subcommand's
//! `run` does the work through the library.

mod bench;
mod convert;
mod eval;
mod expand;
mod forward;
mod generate;
mod info;
mod init;
mod predict;
mod selfcheck;
mod study;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Where `init` and `expand` write a model directory.
#[derive(clap::Args, Debug)]
pub struct OutDir {
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite a model already in --out.
    #[arg(long)]
    force: bool,
}

impl OutDir {
    /// The directory, refused if it is a file or holds a model and `--force` is not given.
    fn checked(&self) -> anyhow::Result<PathBuf> {
        Ok(scalenet::checkpoint::model_dir::check_output_dir(
            &self.out, self.force,
        )?)
    }
}

/// `--device` parsed, with a line on stderr for a GPU: burn compiles each GPU kernel the first
/// time a process uses it, so the first steps take a minute or two (docs/PERFORMANCE.md) and
/// a progress bar that does not move would look like a hang.
fn device(name: &str) -> anyhow::Result<burn::tensor::Device> {
    let device = scalenet::device::parse_device(name)?;
    if scalenet::device::is_gpu(name) {
        eprintln!(
            "{name}: the first steps compile GPU kernels (a minute or two on a fresh machine)"
        );
    }
    Ok(device)
}

/// Grow a pretrained Vision Transformer or Llama-family language model deeper at almost no
/// parameter cost (ScaleNet).
#[derive(Parser, Debug)]
#[command(name = "scalenet", version, about, long_about = None)]
struct Cli {
    /// A CBLAS shared library for the large f32 matrix products on the CPU (MKL's
    /// libmkl_rt.so.*, OpenBLAS's libopenblas.so.0, BLIS's libblis.so.4); without it
    /// scalenet's own kernels run them. docs/PERFORMANCE.md says when it pays.
    #[arg(long, global = true, env = "SCALENET_BLAS", value_name = "PATH")]
    blas: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole idea end to end in minutes on the built-in Fashion-MNIST subset.
    Demo(study::DemoArgs),
    /// Describe a model directory: architecture, shapes, input config, parameter counts.
    Info(info::Args),
    /// Run a model on a tensor of images (`input` [N,C,H,W] f32) and write `logits`.
    Forward(forward::Args),
    /// Convert a GGUF language model to a transformers directory (config, weights, tokenizer).
    Convert(convert::Args),
    /// Continue a prompt with a language model, streaming the tokens.
    Generate(generate::Args),
    /// Create a freshly initialised model directory (timm's init) from a preset.
    Init(init::Args),
    /// Grow a model deeper: shared base blocks plus per-position adapters (ScaleNet).
    Expand(expand::Args),
    /// Train a plain or grown model (AdamW, cosine schedule, checkpoints, exact resume).
    Train(Box<train::Args>),
    /// Top-1, top-5 and per-class accuracy on a dataset's test split.
    Eval(eval::Args),
    /// Top-5 classes with probabilities for image files.
    Predict(predict::Args),
    /// Time training steps and inference on random data; prints img/s and peak memory as JSON.
    Bench(bench::Args),
    /// Check that a device (e.g. cuda:0) computes what the CPU and the reference fixtures do.
    Selfcheck(selfcheck::Args),
    /// The reproduction study: base, grown (paper and identity init) and every baseline.
    Reproduce(study::ReproduceArgs),
}

pub fn run() -> anyhow::Result<()> {
    // `SCALENET_BLAS=` (set but empty) means no library, as `blas::from_env` reads it; clap
    // would refuse it as a missing value.
    if std::env::var_os("SCALENET_BLAS").is_some_and(|v| v.is_empty()) {
        std::env::remove_var("SCALENET_BLAS");
    }
    let cli = Cli::parse();
    if let Some(path) = cli.blas.as_deref().filter(|p| !p.as_os_str().is_empty()) {
        // Still one thread here: the environment may be set safely.
        scalenet::ops::blas::set_env_defaults();
        scalenet::ops::blas::use_library(path)?;
    }
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Forward(a) => forward::run(a),
        Command::Init(a) => init::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Expand(a) => expand::run(a),
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Selfcheck(a) => selfcheck::run(a),
        Command::Reproduce(a) => study::reproduce(a),
        Command::Demo(a) => study::demo(a),
    }
}
