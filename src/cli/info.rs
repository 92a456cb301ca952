use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use scalenet::checkpoint::load_model;
use scalenet::network::Network;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json + model.safetensors), or a GGUF file.
    model_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if scalenet::checkpoint::hf_dir::is_language_model(&args.model_dir) {
        return language_model(&args);
    }
    let loaded = load_model(&args.model_dir, &Device::flex())?;
    let cfg = &loaded.config;
    let v = &cfg.vit;
    let p = &cfg.pretrained_cfg;
    let (rows, growth_json) = match &loaded.network {
        Network::Plain(m) => {
            let c = m.param_counts();
            let rows = vec![
                ("embeddings", c.embeddings),
                ("blocks", c.blocks),
                ("norm", c.norm),
                ("head", c.head),
                ("total", c.total()),
            ];
            (rows, serde_json::Value::Null)
        }
        Network::Grown(g) => {
            let c = g.param_counts();
            let rows = vec![
                ("embeddings", c.embeddings),
                ("shared blocks", c.shared_blocks),
                ("adapters", c.adapters),
                ("pos. norms", c.position_norms),
                ("gates", c.gates),
                ("norm", c.norm),
                ("head", c.head),
                ("total", c.total()),
                ("unshared", c.unshared_total()),
            ];
            let j = serde_json::json!({"spec": g.spec, "params": c, "total": c.total(), "unshared_total": c.unshared_total()});
            (rows, j)
        }
    };
    if args.json {
        let out = serde_json::json!({
            "architecture": cfg.architecture,
            "model_args": v.to_model_args(),
            "patch_grid": v.grid(),
            "tokens": v.num_tokens(),
            "input": {
                "size": [v.in_chans, v.img_size[0], v.img_size[1]],
                "mean": p.mean(), "std": p.std(),
                "interpolation": p.interpolation(), "crop_pct": p.crop_pct(),
            },
            "params": rows.iter().map(|(k, n)| (k.replace(". ", "_").replace(' ', "_"), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "scalenet": growth_json,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let [gh, gw] = v.grid();
    println!("model        {}", args.model_dir.display());
    println!(
        "architecture {}{}",
        cfg.architecture,
        if v.distilled { " (distilled)" } else { "" }
    );
    println!(
        "dims         embed {} · depth {}{} · heads {} (head dim {}) · mlp {} · qkv_bias {}",
        v.embed_dim,
        v.depth,
        if cfg.growth.is_some() { " (base)" } else { "" },
        v.num_heads,
        v.head_dim(),
        v.mlp_hidden(),
        v.qkv_bias
    );
    println!(
        "tokens       patch {} → grid {gh}x{gw} = {} patches + {} prefix = {}",
        v.patch_size,
        v.num_patches(),
        v.num_prefix_tokens(),
        v.num_tokens()
    );
    println!(
        "head         global_pool {} · {} · {} classes{}",
        v.global_pool.as_str(),
        if v.use_fc_norm() {
            "fc_norm"
        } else {
            "final norm"
        },
        v.num_classes,
        v.init_values
            .map(|x| format!(" · layer scale {x}"))
            .unwrap_or_default()
    );
    let fmt = |x: Option<Vec<f64>>| {
        x.map(|v| {
            v.iter()
                .map(|f| format!("{f:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "-".into())
    };
    println!(
        "input        {}x{}x{} · mean [{}] · std [{}] · {} · crop_pct {}",
        v.in_chans,
        v.img_size[0],
        v.img_size[1],
        fmt(p.mean()),
        fmt(p.std()),
        p.interpolation().unwrap_or("-"),
        p.crop_pct()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into())
    );
    if let Network::Grown(g) = &loaded.network {
        let s = &g.spec;
        let adapter = match &s.adapter {
            Some(a) => format!(
                "adapters {} · rank {} · scale {} · {}",
                a.placement
                    .iter()
                    .map(|p| format!("{p:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join("+"),
                a.rank,
                a.scale,
                format!("{:?}", a.activation).to_lowercase()
            ),
            None => "no adapters".into(),
        };
        println!(
            "growth       {} base blocks → {} positions · map {}",
            s.base_depth,
            s.depth(),
            short_map(&s.layer_map)
        );
        println!(
            "             {adapter} · norms {} · gates {}",
            if s.unshared_norms {
                "per position"
            } else {
                "shared"
            },
            if s.layer_scale {
                "per position"
            } else {
                "none"
            }
        );
    }
    println!("parameters");
    for (name, n) in rows {
        let note = match name {
            "unshared" => "  the same depth without sharing",
            "shared blocks" => "  each base block stored once",
            _ => "",
        };
        println!("  {name:<14} {:>14}  ({}){note}", thousands(n), human(n));
    }
    Ok(())
}

/// `info` on a transformers directory or a GGUF file.
fn language_model(args: &Args) -> Result<()> {
    let loaded = scalenet::checkpoint::hf_dir::load_llama(&args.model_dir, &Device::flex())?;
    let c = &loaded.config;
    let head =
        |e: &scalenet::model::llama::LlamaEnds| e.lm_head.as_ref().map_or(0, |h| h.num_params());
    let embed = c.vocab_size * c.hidden_size;
    let (rows, growth) = match &loaded.model {
        scalenet::network::LanguageModel::Plain(m) => (
            vec![
                ("embeddings", embed),
                ("layers", m.layers.iter().map(|l| l.num_params()).sum()),
                ("norm", m.ends.norm.num_params()),
                ("lm_head", head(&m.ends)),
                ("total", m.num_params()),
            ],
            None,
        ),
        scalenet::network::LanguageModel::Grown(g) => {
            let n = g.param_counts();
            (
                vec![
                    ("embeddings", n.embeddings),
                    ("shared layers", n.shared_blocks),
                    ("adapters", n.adapters),
                    ("pos. norms", n.position_norms),
                    ("gates", n.gates),
                    ("norm", n.norm),
                    ("lm_head", n.head),
                    ("total", n.total()),
                    ("unshared", n.unshared_total()),
                ],
                Some(&g.spec),
            )
        }
    };
    let rope = match &c.rope_scaling {
        scalenet::model::llama::RopeScaling::None => String::new(),
        scalenet::model::llama::RopeScaling::Linear { factor } => {
            format!(" · linear scaling ×{factor}")
        }
        scalenet::model::llama::RopeScaling::Llama3 { factor, .. } => {
            format!(" · llama3 scaling ×{factor}")
        }
    };
    let tokenizer = loaded.tokenizer.as_ref().map(|t| t.vocab_size());
    if args.json {
        let out = serde_json::json!({
            "family": "llama",
            "config": c.to_json(),
            "tokenizer_vocab": tokenizer,
            "scalenet": growth,
            "params": rows.iter().map(|(k, n)| (k.replace(". ", "_").replace(' ', "_"), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model        {}", args.model_dir.display());
    println!("family       llama (decoder-only language model)");
    println!(
        "dims         hidden {} · layers {} · heads {} / {} kv (head dim {}) · mlp {} (SwiGLU)",
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.intermediate_size
    );
    println!(
        "positions    rope θ {}{rope} · context {} · rms eps {}",
        c.rope_theta, c.max_position_embeddings, c.rms_norm_eps
    );
    println!(
        "vocabulary   {} embeddings · {} · tokenizer {}",
        c.vocab_size,
        if c.tie_word_embeddings {
            "tied head"
        } else {
            "own head"
        },
        tokenizer.map_or_else(
            || "none (no tokenizer.json)".to_string(),
            |n| format!("{n} tokens")
        )
    );
    if let Some(s) = growth {
        println!(
            "growth       {} base layers → {} positions · map {} · adapters {} · norms {} · gates {}",
            s.base_depth,
            s.depth(),
            short_map(&s.layer_map),
            s.adapter.as_ref().map_or("none".to_string(), |a| format!("rank {} scale {}", a.rank, a.scale)),
            if s.unshared_norms { "per position" } else { "shared" },
            if s.layer_scale { "per position" } else { "none" },
        );
    }
    println!("parameters");
    for (name, n) in rows {
        let note = match name {
            "unshared" => "  the same depth without sharing",
            "shared layers" => "  each base layer stored once",
            _ => "",
        };
        println!("  {name:<14} {:>14}  ({}){note}", thousands(n), human(n));
    }
    Ok(())
}

/// The layer map as a compact list: `0,1,2,3,0,1`.
pub fn short_map(map: &[usize]) -> String {
    map.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `1234567` → `1,234,567`
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `5717416` → `5.72M`
pub fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
