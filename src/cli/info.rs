use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use scalenet::checkpoint::load_model;
use scalenet::checkpoint::model_dir::LoadedModel;
use scalenet::growth::plan::recorded_new_layers;
use scalenet::growth::{GrownCounts, GrowthSpec};
use scalenet::model::arch::ImageArch;
use scalenet::model::swin::SwinConfig;
use scalenet::model::vit::config::VitConfig;
use scalenet::network::Network;
use scalenet::units::{human, thousands};

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
    if scalenet::checkpoint::det_dir::is_detection_dir(&args.model_dir) {
        return detection(&args);
    }
    if scalenet::checkpoint::seg_dir::is_segmentation_dir(&args.model_dir) {
        return segmentation(&args);
    }
    let loaded = load_model(&args.model_dir, &Device::flex())?;
    match &loaded.config.arch {
        ImageArch::Vit(v) => vit(&args, &loaded, v),
        ImageArch::Swin(s) => swin(&args, &loaded, s),
    }
}

/// A ViT, plain or grown: its dims, tokens, head and input, its growth, its parameters.
fn vit(args: &Args, loaded: &LoadedModel, v: &VitConfig) -> Result<()> {
    let cfg = &loaded.config;
    let p = &cfg.pretrained_cfg;
    let (rows, growth_json) = match &loaded.network {
        Network::Plain(m) => {
            let c = m.param_counts();
            let mut rows = vec![
                ("embeddings", c.embeddings),
                ("blocks", c.blocks),
                ("norm", c.norm),
                ("head", c.head),
                ("total", c.total()),
            ];
            let added = recorded_new_layers(&cfg.raw);
            if !added.is_empty() {
                let n = added
                    .iter()
                    .filter_map(|&i| m.blocks.get(i))
                    .map(|b| b.num_params());
                rows.push(("added blocks", n.sum()));
            }
            (rows, serde_json::Value::Null)
        }
        Network::Grown(g) => {
            let c = g.param_counts();
            let j = serde_json::json!({"spec": g.spec, "params": c, "total": c.total(), "unshared_total": c.unshared_total()});
            (grown_rows(&c, "shared blocks", "head"), j)
        }
        Network::Swin(_) | Network::GrownSwin(_) => unreachable!("a ViT config builds a ViT"),
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
            "params": params_json(&rows),
            "scalenet": growth_json,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model        {}", args.model_dir.display());
    print_vit_dims(loaded, v);
    if let Network::Grown(g) = &loaded.network {
        print_growth(&g.spec);
    }
    print_params(&rows);
    Ok(())
}

/// The ViT's architecture, dims, tokens, head and input lines.
fn print_vit_dims(loaded: &LoadedModel, v: &VitConfig) {
    let cfg = &loaded.config;
    let p = &cfg.pretrained_cfg;
    let [gh, gw] = v.grid();
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
}

/// A grown ViT's growth: the map, the adapters, norms and gates.
fn print_growth(s: &GrowthSpec) {
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
    let adapter = match &s.lora {
        Some(l) => format!("{adapter} · {}", lora_text(l)),
        None => adapter,
    };
    println!(
        "growth       {} base blocks → {} positions · map {}",
        s.base_depth,
        s.depth(),
        short_map(&s.layer_map)
    );
    println!(
        "             {adapter} · norms {} · gates {}",
        per_position(s.unshared_norms),
        if s.layer_scale {
            "per position"
        } else {
            "none"
        }
    );
}

/// Relaxed recursive's LoRA as `info` shows it.
fn lora_text(l: &scalenet::growth::LoraSpec) -> String {
    format!(
        "LoRA on every linear layer · rank {} · scale {}",
        l.rank, l.scale
    )
}

fn per_position(yes: bool) -> &'static str {
    if yes {
        "per position"
    } else {
        "shared"
    }
}

/// A grown model's parameter rows; `shared` names its stored blocks, `head` its classifier.
fn grown_rows(
    c: &GrownCounts,
    shared: &'static str,
    head: &'static str,
) -> Vec<(&'static str, usize)> {
    vec![
        ("embeddings", c.embeddings),
        (shared, c.shared_blocks),
        ("adapters", c.adapters),
        ("pos. norms", c.position_norms),
        ("gates", c.gates),
        ("norm", c.norm),
        (head, c.head),
        ("total", c.total()),
        ("unshared", c.unshared_total()),
    ]
}

/// A segmentor: its head, backbone and input, and the parameters of each part.
fn segmentation(args: &Args) -> Result<()> {
    let (c, seg) = scalenet::checkpoint::seg_dir::load_segmentor(&args.model_dir, &Device::flex())?;
    let norms: usize = seg.stage_norms.iter().map(|n| n.num_params()).sum();
    let rows = [
        ("backbone", seg.backbone.num_params()),
        ("stage norms", norms),
        ("neck", seg.neck.as_ref().map_or(0, |n| n.num_params())),
        ("decode head", seg.decode_head.num_params()),
        (
            "aux head",
            seg.auxiliary_head.as_ref().map_or(0, |h| h.num_params()),
        ),
        ("total", seg.backbone.num_params() + seg.head_params()),
    ];
    if args.json {
        let out = serde_json::json!({"config": c.to_json(), "params": params_json(&rows)});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let [h, w] = c.backbone.arch.img_size();
    let grown = if c.backbone.growth.is_some() {
        "grown "
    } else {
        ""
    };
    let head = match c.spec.head {
        scalenet::segment::HeadKind::Upernet => "UperNet with its FCN auxiliary head",
        scalenet::segment::HeadKind::Linear => "linear probe",
    };
    println!(
        "segmentor      {head} on a {grown}{} ({})",
        c.backbone.arch.family(),
        c.backbone.architecture
    );
    println!(
        "input          {}×{h}×{w}, mean {:?}, std {:?}",
        c.backbone.arch.in_chans(),
        c.mean,
        c.std
    );
    println!(
        "classes        {} (ignore_index {})",
        c.spec.num_classes, c.ignore_index
    );
    if matches!(c.backbone.arch, ImageArch::Vit(_)) {
        println!("out_indices    {:?}", c.spec.out_indices);
    }
    print_params(&rows);
    Ok(())
}

/// A detector: its pyramid, anchors, backbone and input, and the parameters of each part.
fn detection(args: &Args) -> Result<()> {
    let (c, det) = scalenet::checkpoint::det_dir::load_detector(&args.model_dir, &Device::flex())?;
    let norms: usize = det.stage_norms.iter().map(|n| n.num_params()).sum();
    let up = det.upsample.as_ref().map_or(0, |u| u.num_params());
    let rows = [
        ("backbone", det.backbone.num_params()),
        ("stage norms", norms),
        ("pyramid", up + det.fpn.num_params()),
        ("head", det.head.num_params()),
        ("total", det.backbone.num_params() + det.head_params()),
    ];
    if args.json {
        let out = serde_json::json!({"config": c.to_json(), "params": params_json(&rows)});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let [h, w] = c.backbone.arch.img_size();
    let grown = if c.backbone.growth.is_some() {
        "grown "
    } else {
        ""
    };
    let s = &c.spec;
    println!(
        "detector       RetinaNet (torchvision's) on a {grown}{} ({})",
        c.backbone.arch.family(),
        c.backbone.architecture
    );
    let strides = scalenet::detect::DetSpec::level_strides(&c.backbone.arch);
    println!(
        "pyramid        {} levels at strides {strides:?}, {} channels",
        strides.len(),
        s.fpn_channels
    );
    println!(
        "anchors        sizes {:?} (×2^⅓, ×2^⅔), aspect ratios {:?}",
        s.anchor_sizes, s.aspect_ratios
    );
    let (mean, std) = (&c.mean, &c.std);
    println!(
        "input          {}×{h}×{w}, mean {mean:?}, std {std:?}",
        c.backbone.arch.in_chans()
    );
    let names = c
        .class_names
        .as_ref()
        .map_or(String::new(), |n| format!(": {}", n.join(", ")));
    println!("classes        {}{names}", s.num_classes);
    print_params(&rows);
    Ok(())
}

/// The parameter rows as a JSON object (`pos. norms` → `pos_norms`).
fn params_json(rows: &[(&str, usize)]) -> serde_json::Map<String, serde_json::Value> {
    rows.iter()
        .map(|(k, n)| (k.replace(". ", "_").replace(' ', "_"), serde_json::json!(n)))
        .collect()
}

/// The parameter table, with a note on the rows that need one.
fn print_params(rows: &[(&str, usize)]) {
    println!("parameters");
    for &(name, n) in rows {
        let note = match name {
            "unshared" => "  the same depth without sharing",
            "shared blocks" => "  each base block stored once",
            "shared layers" => "  each base layer stored once",
            "added blocks" | "added layers" => "  what `train --train-only new` trains",
            _ => "",
        };
        println!("  {name:<14} {:>14}  ({}){note}", thousands(n), human(n));
    }
}

/// `info` on a transformers directory or a GGUF file.
fn language_model(args: &Args) -> Result<()> {
    let loaded = scalenet::checkpoint::hf_dir::load_llama(&args.model_dir, &Device::flex())?;
    let c = &loaded.config;
    let head =
        |e: &scalenet::model::llama::LlamaEnds| e.lm_head.as_ref().map_or(0, |h| h.num_params());
    let embed = c.vocab_size * c.hidden_size;
    let (rows, growth) = match &loaded.model {
        scalenet::network::LanguageModel::Plain(m) => {
            let mut rows = vec![
                ("embeddings", embed),
                ("layers", m.layers.iter().map(|l| l.num_params()).sum()),
                ("norm", m.ends.norm.num_params()),
                ("lm_head", head(&m.ends)),
                ("total", m.num_params()),
            ];
            let added = recorded_new_layers(&loaded.raw);
            if !added.is_empty() {
                let n = added
                    .iter()
                    .filter_map(|&i| m.layers.get(i))
                    .map(|l| l.num_params());
                rows.push(("added layers", n.sum()));
            }
            (rows, None)
        }
        scalenet::network::LanguageModel::Grown(g) => (
            grown_rows(&g.param_counts(), "shared layers", "lm_head"),
            Some(&g.spec),
        ),
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
            "params": params_json(&rows),
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
            per_position(s.unshared_norms),
            if s.layer_scale { "per position" } else { "none" },
        );
        if let Some(l) = &s.lora {
            println!("             {}", lora_text(l));
        }
    }
    print_params(&rows);
    Ok(())
}

/// The layer map as a compact list: `0,1,2,3,0,1`.
pub fn short_map(map: &[usize]) -> String {
    map.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A Swin: its stages (grid, window, shift, width, heads, depth) and, per stage, what the
/// blocks and the positions' adjustments hold. Shared blocks are counted once.
fn swin(args: &Args, loaded: &LoadedModel, c: &SwinConfig) -> Result<()> {
    let cfg = &loaded.config;
    let p = &cfg.pretrained_cfg;
    let (blocks, positions, spec) = match &loaded.network {
        Network::Swin(m) => (&m.stages, None, None),
        Network::GrownSwin(g) => (&g.stages, Some(&g.positions), Some(&g.spec)),
        _ => unreachable!("a Swin config builds a Swin"),
    };
    let ends = match &loaded.network {
        Network::Swin(m) => &m.ends,
        Network::GrownSwin(g) => &g.ends,
        _ => unreachable!("a Swin config builds a Swin"),
    };
    let [embed, merges, norm, head] = ends.num_params();
    let mut stages = Vec::new();
    for (s, g) in c.stages().iter().enumerate() {
        let stored: usize = blocks[s].iter().map(|b| b.num_params()).sum();
        let (depth, adjust) = match positions {
            Some(ps) => (
                ps[s].len(),
                ps[s]
                    .iter()
                    .map(|p| p.adapter_params() + p.norm_params() + p.gate_params())
                    .sum(),
            ),
            None => (blocks[s].len(), 0),
        };
        stages.push(serde_json::json!({
            "stage": s, "resolution": g.resolution, "window": g.window, "shift": g.shift,
            "dim": g.dim, "heads": g.heads, "base_depth": blocks[s].len(), "depth": depth,
            "layer_map": spec.map(|sp| sp.layer_maps[s].clone()),
            "block_params": stored, "adjustment_params": adjust,
        }));
    }
    let total = loaded.network.num_params();
    if args.json {
        let out = serde_json::json!({
            "architecture": cfg.architecture,
            "family": "swin",
            "model_args": c.to_model_args(),
            "stages": stages,
            "params": {"patch_embed": embed, "merges": merges, "norm": norm, "head": head, "total": total},
            "scalenet": spec,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model        {}", args.model_dir.display());
    println!("architecture {} (Swin)", cfg.architecture);
    println!(
        "input        {}x{}x{} · patch {} · {} · crop_pct {}",
        c.in_chans,
        c.img_size[0],
        c.img_size[1],
        c.patch_size,
        p.interpolation().unwrap_or("-"),
        p.crop_pct()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "head         global_pool {} · {} features · {} classes",
        c.global_pool.as_str(),
        c.num_features(),
        c.num_classes
    );
    println!();
    println!(
        "{:<6} {:>9} {:>7} {:>6} {:>5} {:>6} {:>6} {:>13} {:>12}  map",
        "stage", "grid", "window", "shift", "dim", "heads", "depth", "blocks (once)", "adjustments"
    );
    for st in &stages {
        let pair = |k: &str| format!("{}x{}", st[k][0], st[k][1]);
        let depth = if positions.is_some() {
            format!("{}→{}", st["base_depth"], st["depth"])
        } else {
            st["depth"].to_string()
        };
        let map = st["layer_map"]
            .as_array()
            .map(|m| {
                let m: Vec<usize> = m
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as usize)
                    .collect();
                short_map(&m)
            })
            .unwrap_or_default();
        println!(
            "{:<6} {:>9} {:>7} {:>6} {:>5} {:>6} {:>6} {:>13} {:>12}  {map}",
            st["stage"].to_string(),
            pair("resolution"),
            pair("window"),
            pair("shift"),
            st["dim"].to_string(),
            st["heads"].to_string(),
            depth,
            thousands(st["block_params"].as_u64().unwrap_or(0) as usize),
            thousands(st["adjustment_params"].as_u64().unwrap_or(0) as usize),
        );
    }
    println!();
    println!(
        "parameters   patch embed {} · merges {} · norm {} · head {} · total {}",
        thousands(embed),
        thousands(merges),
        thousands(norm),
        thousands(head),
        thousands(total)
    );
    if let Network::GrownSwin(g) = &loaded.network {
        let k = g.param_counts();
        println!(
            "             adjustments {} (+{:.2}% over the base); unshared, the same depths would hold {}",
            thousands(k.adjustments()),
            100.0 * k.adjustments() as f64 / (k.total() - k.adjustments()) as f64,
            thousands(k.unshared_total())
        );
        println!("             windows follow the position: odd positions use shifted windows");
    }
    Ok(())
}
