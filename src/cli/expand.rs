use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::checkpoint::{load_model, save_model};
use scalenet::growth::options::Method;
use scalenet::growth::{
    expand, expand_swin, Activation, AdapterSpec, ExpandOptions, InitMode, MapStrategy, Placement,
};
use scalenet::network::Network;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base model: a plain timm directory, or a Llama-family language model (transformers
    /// directory or GGUF file).
    base_dir: PathBuf,
    /// The growth operator: scalenet (shared blocks + adapters; the default), stack (G_stack:
    /// unshared copies), shared (shared blocks, nothing per position), llama-pro (a zero-output
    /// copy after each group of blocks), solar-dus (SOLAR's depth up-scaling, with
    /// --dus-drop), relaxed-recursive (shared blocks, each position's linear layers relaxed by
    /// its own LoRA of --lora-rank). A method fixes the map, adapters, init and sharing it is
    /// defined by.
    #[arg(long, default_value = "scalenet")]
    method: String,
    /// solar-dus: the m blocks each copy of the base loses (the grown depth is 2(L − m)).
    #[arg(long)]
    dus_drop: Option<usize>,
    /// relaxed-recursive: the rank of each position's LoRA on every linear layer [default: 8].
    #[arg(long)]
    lora_rank: Option<usize>,
    /// relaxed-recursive: the LoRA update's scale (PEFT's alpha / rank).
    #[arg(long, default_value_t = 1.0)]
    lora_scale: f64,
    /// Number of block positions L' in the grown model (≥ the base depth).
    #[arg(long, required_unless_present_any = ["depths", "dus_drop"])]
    depth: Option<usize>,
    /// For a Swin: the grown depth of each stage, e.g. 2,2,12,2 (each ≥ the stage's base depth).
    #[arg(long, conflicts_with = "depth")]
    depths: Option<String>,
    /// Which base block runs at each position: cyclic (0..L-1, 0..L-1, ...; the paper's),
    /// interleave (0,0,1,1,...), or an explicit list such as 0,1,1,2. A Swin grows each stage
    /// with the same strategy; explicit maps are given per stage, separated by '/'
    /// (0,1,0,1/0,1,0,1/...).
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
    #[command(flatten)]
    out: super::OutDir,
}

/// The grown (or `--no-share` deepened) network and its config, for a plain ViT or Swin.
fn grow_network(
    args: &Args,
    network: Network,
    config: &scalenet::checkpoint::ModelConfig,
    opts: &scalenet::growth::options::ExpandOptions,
) -> Result<(scalenet::checkpoint::ModelConfig, Network)> {
    Ok(match network {
        Network::Plain(m) if args.depths.is_none() => expand(m, config, opts)?,
        Network::Swin(m) if args.depths.is_some() => expand_swin(m, config, opts)?,
        Network::Plain(_) => bail!(
            "--depths is for Swins; {} is a ViT: use --depth N",
            args.base_dir.display()
        ),
        Network::Swin(m) => {
            bail!(
            "{} is a Swin: give the grown depth of each stage with --depths (its depths are {})",
            args.base_dir.display(),
            m.config().depths.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
        )
        }
        _ => bail!(
            "{}: is a grown scalenet model; expand a plain model",
            args.base_dir.display()
        ),
    })
}

/// A segmentor's backbone grown in place, its heads kept (a ViT's blocks that feed them are
/// chosen anew over the grown depth).
fn segmentor(
    args: &Args,
    opts: &scalenet::growth::options::ExpandOptions,
    out: &std::path::Path,
    device: &burn::tensor::Device,
) -> Result<()> {
    use scalenet::checkpoint::seg_dir::{
        load_segmentor, save_segmentor, split_backbone, with_backbone,
    };
    let (config, seg) = load_segmentor(&args.base_dir, device)?;
    let before = seg.backbone.num_params();
    let (backbone, heads) = split_backbone(seg);
    let (grown_config, grown) = grow_network(args, backbone, &config.backbone, opts)?;
    let (config, seg) = with_backbone(&config, heads, grown_config, grown, device);
    save_segmentor(out, &config, &seg)?;
    println!(
        "grew the backbone of {} ({} → {} parameters, heads kept) in {}",
        args.base_dir.display(),
        scalenet::units::thousands(before),
        scalenet::units::thousands(seg.backbone.num_params()),
        out.display()
    );
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let opts = options(&args)?;
    let out = args.out.checked()?;
    if scalenet::checkpoint::hf_dir::is_language_model(&args.base_dir) {
        return language_model(&args, &opts, &out);
    }
    let device = burn::tensor::Device::flex();
    if scalenet::checkpoint::seg_dir::is_segmentation_dir(&args.base_dir) {
        return segmentor(&args, &opts, &out, &device);
    }
    let base = load_model(&args.base_dir, &device)?;
    let base_params = base.network.num_params();
    let (config, network) = grow_network(&args, base.network, &base.config, &opts)?;
    save_model(&out, &config, &network)?;
    match &network {
        Network::GrownSwin(g) => {
            let maps: Vec<String> = g
                .spec
                .layer_maps
                .iter()
                .map(|m| super::info::short_map(m))
                .collect();
            let c = g.param_counts();
            println!(
                "grew {} from depths {:?} to {:?} (maps {}) in {}",
                config.architecture,
                g.spec.base_depths,
                g.spec.depths(),
                maps.join(" / "),
                out.display()
            );
            print_cost(&c, base_params);
        }
        Network::Swin(m) => println!(
            "wrote a plain copy of {} with depths {:?} ({} parameters) in {}",
            config.architecture,
            m.config().depths,
            scalenet::units::thousands(m.num_params()),
            out.display()
        ),
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
            scalenet::units::thousands(m.param_counts().total()),
            out.display()
        ),
    }
    Ok(())
}

/// Grows a Llama-family model (transformers directory or GGUF file) into a transformers
/// directory with the `scalenet` block, or with --no-share into a plain one.
fn language_model(args: &Args, opts: &ExpandOptions, out: &std::path::Path) -> Result<()> {
    use scalenet::network::LanguageModel;
    let scalenet::growth::expand::GrownLlamaDir {
        model: grown,
        base_params,
        added,
    } = scalenet::growth::expand::expand_llama_dir(&args.base_dir, opts, out)?;
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
            "wrote a plain {}-layer copy of {} ({} parameters) in {}; the added layers {:?} \
             train alone with `train --train-only new`",
            m.layers.len(),
            args.base_dir.display(),
            scalenet::units::thousands(m.num_params()),
            out.display(),
            added
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
    print_cost(c, base_params);
}

fn print_cost(c: &scalenet::growth::GrownCounts, base_params: usize) {
    println!(
        "parameters: {} = base {} + adjustments {} (+{:.2}%); unshared, the same depth would hold {}",
        scalenet::units::thousands(c.total()),
        scalenet::units::thousands(base_params),
        scalenet::units::thousands(c.adjustments()),
        100.0 * c.adjustments() as f64 / base_params as f64,
        scalenet::units::thousands(c.unshared_total())
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
    let depths = match &args.depths {
        None => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|t| t.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| anyhow::anyhow!("--depths '{s}': expected stage depths like 2,2,12,2"))?,
    };
    let method = Method::parse(&args.method).map_err(anyhow::Error::msg)?;
    let opts = ExpandOptions {
        depth: args.depth.unwrap_or(0),
        depths,
        map,
        adapter,
        unshared_norms: args.unshared_norms,
        init: if args.init == "identity" {
            InitMode::Identity
        } else {
            InitMode::Paper
        },
        no_share: args.no_share,
        lora: (args.lora_rank.is_some() || method == Method::RelaxedRecursive).then(|| {
            scalenet::growth::plan::LoraSpec {
                rank: args
                    .lora_rank
                    .unwrap_or(scalenet::growth::options::DEFAULT_LORA_RANK),
                scale: args.lora_scale,
            }
        }),
        seed: args.seed,
    };
    method
        .apply(opts, args.dus_drop)
        .map_err(anyhow::Error::msg)
}
