use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use scalenet::checkpoint::load_vit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json + model.safetensors).
    model_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = load_vit(&args.model_dir, &Device::flex())?;
    let cfg = &loaded.config;
    let v = &cfg.vit;
    let counts = loaded.model.param_counts();
    let p = &cfg.pretrained_cfg;
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
            "params": {
                "embeddings": counts.embeddings, "blocks": counts.blocks,
                "norm": counts.norm, "head": counts.head, "total": counts.total(),
            },
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
        "dims         embed {} · depth {} · heads {} (head dim {}) · mlp {} · qkv_bias {}",
        v.embed_dim,
        v.depth,
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
    println!("parameters");
    let rows = [
        ("embeddings", counts.embeddings),
        ("blocks", counts.blocks),
        ("norm", counts.norm),
        ("head", counts.head),
        ("total", counts.total()),
    ];
    for (name, n) in rows {
        println!("  {name:<12} {:>14}  ({})", thousands(n), human(n));
    }
    Ok(())
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
