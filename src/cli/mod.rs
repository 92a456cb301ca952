//! Command-line parsing: raw flags become validated settings here, then each subcommand's
//! `run` does the work through the library.

mod bench;
mod convert;
mod corpus;
mod eval;
mod expand;
mod export;
mod forward;
mod generate;
mod info;
mod init;
mod predict;
mod scenes;
mod selfcheck;
mod study;
mod tokenizer;
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
    /// The CPU's large f32 matrix products: `auto` (the default) finds MKL (pip's `mkl`),
    /// OpenBLAS or BLIS and uses one where it is faster than scalenet's own kernels on this CPU
    /// (measured once per CPU and library); `none` keeps ours; or a CBLAS library's path.
    #[arg(
        long,
        global = true,
        env = "SCALENET_BLAS",
        value_name = "auto|none|PATH",
        default_value = "auto"
    )]
    blas: std::path::PathBuf,
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
    /// Create a freshly initialised model directory: a timm preset (timm's init), or a Llama (--arch llama).
    Init(init::Args),
    /// Grow a model deeper: shared base blocks plus per-position adapters (ScaleNet), or --method stack, shared, llama-pro, solar-dus.
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
    Reproduce(Box<study::ReproduceArgs>),
    /// Tokenizers for new language models: `tokenizer train`.
    Tokenizer(tokenizer::Args),
    /// Write a model for PyTorch (--torch): a grown Llama with its transformers remote code.
    Export(export::Args),
    /// Assemble an English corpus (KJV, fortunes, GCIDE) from Debian's packages, split by document.
    Corpus(corpus::Args),
    /// Write fmnist-scenes segmentation scenes as PNGs: images, index masks, labelled overlays.
    Scenes(scenes::Args),
}

/// Mesa's Vulkan drivers print `error: XDG_RUNTIME_DIR is invalid or not set` several times per
/// run where the variable is missing (containers, CI, ssh without a login session): a private
/// directory of our own stands in, so that nothing prints what a user would have to learn to
/// ignore. Still one thread here, so the environment may be set safely.
#[cfg(feature = "wgpu")]
fn quiet_vulkan_loader() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = unsafe { libc::getuid() };
    let valid = |p: &std::path::Path| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0)
    };
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| valid(d.as_ref())) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("scalenet-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    if valid(&dir) {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

/// What `--blas auto` chose, and why, for the commands that report it.
static BLAS_CHOICE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Which library runs the large f32 products and why, as `bench` and `train` report it.
pub(crate) fn blas_choice() -> String {
    if let Some(c) = BLAS_CHOICE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        return c;
    }
    match scalenet::ops::blas::active() {
        Some(lib) => format!("{} (as asked, --blas)", lib.path().display()),
        None => "our kernels".into(),
    }
}

impl Command {
    /// Whether the command multiplies large matrices, so that `--blas auto` is worth its
    /// measurement.
    fn computes(&self) -> bool {
        !matches!(
            self,
            Command::Info(_)
                | Command::Init(_)
                | Command::Expand(_)
                | Command::Convert(_)
                | Command::Tokenizer(_)
                | Command::Corpus(_)
                | Command::Scenes(_)
                | Command::Export(_)
        )
    }
}

/// A corrupt image stops `train` and `eval` unless asked to skip such files: say how.
fn skip_hint(err: scalenet::Error) -> anyhow::Error {
    let bad = matches!(
        err,
        scalenet::Error::Data(scalenet::data::DataError::BadImage { .. })
    );
    if bad {
        anyhow::anyhow!("{err}; pass --on-bad-image skip to skip such files")
    } else {
        err.into()
    }
}

pub fn run() -> anyhow::Result<()> {
    // `SCALENET_BLAS=` (set but empty) means no library, as `blas::from_env` reads it; clap
    // would refuse it as a missing value.
    if std::env::var_os("SCALENET_BLAS").is_some_and(|v| v.is_empty()) {
        std::env::set_var("SCALENET_BLAS", "none");
    }
    #[cfg(feature = "wgpu")]
    quiet_vulkan_loader();
    let cli = Cli::parse();
    // Still one thread here: the environment may be set safely.
    match cli.blas.to_str() {
        Some("none") => {}
        Some("auto") if cli.command.computes() => {
            let cache = scalenet::ops::cpu::cache_dir();
            let chosen = scalenet::ops::blas::choose_auto(cache.as_deref());
            *BLAS_CHOICE.lock().unwrap_or_else(|e| e.into_inner()) = Some(chosen);
        }
        Some("auto") => {}
        _ => {
            scalenet::ops::blas::set_env_defaults();
            scalenet::ops::blas::use_library(&cli.blas)?;
        }
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
        Command::Reproduce(a) => study::reproduce(*a),
        Command::Demo(a) => study::demo(a),
        Command::Tokenizer(a) => tokenizer::run(a),
        Command::Corpus(a) => corpus::run(a),
        Command::Scenes(a) => scenes::run(a),
        Command::Export(a) => export::run(a),
    }
}
