use anyhow::{bail, Result};
use scalenet::checkpoint::model_dir::build_network;
use scalenet::checkpoint::{save_model, ModelConfig};
use scalenet::model::arch::preset_names;
use scalenet::model::RandomInit;
use serde_json::{Map, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// timm architecture, e.g. deit_tiny_patch16_224 (`--arch list` prints them all), or
    /// `llama` for a Llama-family decoder (its sizes as --model-arg hidden_size=... etc.).
    #[arg(long)]
    arch: String,
    /// Override a model argument, timm-style: img_size=32, in_chans=1, depth=6, global_pool=avg.
    /// Values are JSON (numbers, true/false, [h,w]); bare words are strings.
    #[arg(long = "model-arg", value_name = "KEY=VALUE")]
    model_args: Vec<String>,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    out: super::OutDir,
}

pub fn run(args: Args) -> Result<()> {
    if args.arch == "list" {
        for name in preset_names() {
            println!("{name}");
        }
        return Ok(());
    }
    let overrides = parse_model_args(&args.model_args)?;
    if args.arch == "llama" {
        return init_llama(&args, &overrides);
    }
    let config = ModelConfig::from_preset(&args.arch, &overrides)?;
    let out = args.out.checked()?;
    let device = burn::tensor::Device::flex();
    let model = build_network(&config, &mut RandomInit::new(args.seed), &device);
    save_model(&out, &config, &model)?;
    let n = model.num_params();
    println!(
        "initialised {} ({} parameters) in {}",
        config.architecture,
        scalenet::units::thousands(n),
        out.display()
    );
    Ok(())
}

/// A random Llama-family decoder as a transformers directory, with transformers' init (normal
/// 0.02 for embeddings and projections, ones for the norms).
fn init_llama(args: &Args, overrides: &Map<String, Value>) -> Result<()> {
    use scalenet::model::llama::{Llama, LlamaConfig};
    let (raw, cfg) = LlamaConfig::for_init(overrides).map_err(|e| anyhow::anyhow!("llama: {e}"))?;
    let out = args.out.checked()?;
    let model = Llama::new(
        &cfg,
        &mut RandomInit::new(args.seed),
        &burn::tensor::Device::flex(),
    );
    let n = model.num_params();
    let model = scalenet::network::LanguageModel::Plain(model);
    scalenet::checkpoint::hf_dir::save_llama(&out, &raw, &model, None)?;
    println!(
        "initialised a Llama of {} layers, width {} ({} parameters) in {}; it has no tokenizer: \
         `scalenet tokenizer train` makes one (its <|endoftext|>, id 0, is the bos and eos here), or copy a tokenizer.json of {} tokens",
        cfg.num_hidden_layers,
        cfg.hidden_size,
        scalenet::units::thousands(n),
        out.display(),
        cfg.vocab_size
    );
    Ok(())
}

/// `key=value` pairs → a JSON object; values parse as JSON, falling back to strings.
pub fn parse_model_args(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--model-arg '{pair}': expected KEY=VALUE, e.g. img_size=32");
        };
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        if k.trim().is_empty() {
            bail!("--model-arg '{pair}': empty key");
        }
        map.insert(k.trim().to_string(), value);
    }
    Ok(map)
}
