use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::checkpoint::model_dir::check_output_dir;
use scalenet::checkpoint::{load_vit, save_model};
use scalenet::growth::{
    expand, Activation, AdapterSpec, ExpandOptions, InitMode, MapStrategy, Placement,
};
use scalenet::network::Network;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base model: a plain timm directory, or a Llama-family language model (transformers
    /// directory or GGUF file).
    base_dir: PathBuf,
    /// Number of block positions L' in the grown model (≥ the base depth).
    #[arg(long)]
    depth: usize,
    /// Which base block runs at each position: cyclic (0..L-1, 0..L-1, ...; the paper's),
    /// interleave (0,0,1,1,...), or an explicit list such as 0,1,1,2.
    #[arg(long, default_value = "cyclic")]
    map: String,
    /// `parallel` adapters beside each branch, or `none` (sharing without adjustment).
    #[arg(long, default_value = "parallel", value_parser = ["parallel", "none"])]
    adapter: String,
    /// Adapter bottleneck width r.
    #[arg(long, default_value_t = 32)]
    adapter_rank: usize,
    /// Branches that get an adapter: attn, mlp, or attn,mlp.
    #[arg(long, default_value = "attn,mlp")]
    adapter_placement: String,
    /// Adapter output scale s.
    #[arg(long, default_value_t = 0.1)]
    adapter_scale: f64,
    #[arg(long, default_value = "relu", value_parser = ["relu", "gelu"])]
    adapter_act: String,
    /// Give each position its own norm1/norm2 (initialised from its base block's).
    #[arg(long)]
    unshared_norms: bool,
    /// paper: no gates (the paper's). identity: per-position gates, 1 at each base block's
    /// first position and 0 after, so the grown model starts as the base model's function.
    #[arg(long, default_value = "paper", value_parser = ["paper", "identity"])]
    init: String,
    /// Write independent copies as a plain timm model of depth L' (the stacking baseline).
    /// Adapters have no place in a timm model and are left out (they add zero at this point).
    #[arg(long)]
    no_share: bool,
    /// Seed for the adapters' down-projections.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite a model already in --out.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let opts = options(&args)?;
    let out = check_output_dir(&args.out, args.force)?;
    if scalenet::checkpoint::hf_dir::is_language_model(&args.base_dir) {
        return language_model(&args, &opts, &out);
    }
    let device = burn::tensor::Device::flex();
    let base = load_vit(&args.base_dir, &device)?;
    let base_params = base.model.param_counts().total();
    let (config, network) = expand(base.model, &base.config, &opts)?;
    save_model(&out, &config, &network)?;
    match &network {
        Network::Grown(g) => report(
            &config.architecture,
            "positions",
            &g.layer_map,
            &g.param_counts(),
            base_params,
            &out,
        ),
        Network::Plain(m) => println!(
            "wrote a plain {}-block copy of {} ({} parameters) in {}",
            m.blocks.len(),
            config.architecture,
            super::info::thousands(m.param_counts().total()),
            out.display()
        ),
    }
    Ok(())
}

/// Grows a Llama-family model (transformers directory or GGUF file) into a transformers
/// directory with the `scalenet` block, or with --no-share into a plain one.
fn language_model(args: &Args, opts: &ExpandOptions, out: &std::path::Path) -> Result<()> {
    use scalenet::checkpoint::hf_dir::{load_llama, save_llama};
    use scalenet::network::LanguageModel;
    let device = burn::tensor::Device::flex();
    let base = load_llama(&args.base_dir, &device)?;
    let LanguageModel::Plain(model) = base.model else {
        bail!(
            "{}: is already a grown model; expand a plain model",
            args.base_dir.display()
        );
    };
    let base_params = model.num_params();
    let grown = scalenet::growth::expand_llama(model, opts)?;
    save_llama(out, &base.raw, &grown, base.tokenizer_json.as_deref())?;
    match &grown {
        LanguageModel::Grown(g) => report(
            &args.base_dir.display().to_string(),
            "layers",
            &g.layer_map,
            &g.param_counts(),
            base_params,
            out,
        ),
        LanguageModel::Plain(m) => println!(
            "wrote a plain {}-layer copy of {} ({} parameters) in {}",
            m.layers.len(),
            args.base_dir.display(),
            super::info::thousands(m.num_params()),
            out.display()
        ),
    }
    Ok(())
}

/// What `expand` made: depth before and after, and what the growth costs in parameters.
fn report(
    name: &str,
    unit: &str,
    map: &[usize],
    c: &scalenet::growth::GrownCounts,
    base_params: usize,
    out: &std::path::Path,
) {
    let base_depth = map.iter().max().map_or(0, |m| m + 1);
    println!(
        "grew {name} from {base_depth} to {} {unit} (map {}) in {}",
        map.len(),
        super::info::short_map(map),
        out.display()
    );
    println!(
        "parameters: {} = base {} + adjustments {} (+{:.2}%); unshared, the same depth would hold {}",
        super::info::thousands(c.total()),
        super::info::thousands(base_params),
        super::info::thousands(c.adjustments()),
        100.0 * c.adjustments() as f64 / base_params as f64,
        super::info::thousands(c.unshared_total())
    );
}

fn options(args: &Args) -> Result<ExpandOptions> {
    let map = MapStrategy::parse(&args.map).map_err(anyhow::Error::msg)?;
    let adapter = match args.adapter.as_str() {
        "none" => None,
        _ => {
            let mut placement = Vec::new();
            for p in args.adapter_placement.split(',').map(str::trim) {
                let p = match p {
                    "attn" => Placement::Attn,
                    "mlp" => Placement::Mlp,
                    other => bail!("--adapter-placement: '{other}' is not attn or mlp"),
                };
                if !placement.contains(&p) {
                    placement.push(p);
                }
            }
            if args.adapter_rank == 0 {
                bail!("--adapter-rank must be at least 1");
            }
            if !args.adapter_scale.is_finite() {
                bail!("--adapter-scale must be a finite number");
            }
            Some(AdapterSpec {
                placement,
                rank: args.adapter_rank,
                scale: args.adapter_scale,
                activation: if args.adapter_act == "gelu" {
                    Activation::Gelu
                } else {
                    Activation::Relu
                },
            })
        }
    };
    Ok(ExpandOptions {
        depth: args.depth,
        map,
        adapter,
        unshared_norms: args.unshared_norms,
        init: if args.init == "identity" {
            InitMode::Identity
        } else {
            InitMode::Paper
        },
        no_share: args.no_share,
        seed: args.seed,
    })
}
