//! Running the language-model study (`scalenet reproduce --family llama`): the corpus's
//! tokenizer, the base, then every wanted arm's model (grown from the base or initialised from
//! scratch) trained by one recipe. Finished runs are reused, so a stopped study continues where
//! it was.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::lm_arms::{run_name, Budget, LmArm, LmStudyConfig, BASE_SEED, LM_ARMS, LM_HEADLINE};
use crate::error::{Error, Result};
use crate::growth::expand::expand_llama_dir;
use crate::growth::options::{ExpandOptions, InitMode, Method};
use crate::growth::plan::{AdapterSpec, LoraSpec, MapStrategy};
use crate::train::config::TrainConfig;
use crate::train::optim::TrainOnly;
use crate::train::trainer::{train, Hooks, Outcome};

/// Runs (or continues) a language-model study in `dir` and writes its report there.
pub fn run_lm_study(cfg: &LmStudyConfig, dir: &Path, hooks: &Hooks) -> Result<()> {
    let study = LmRunner { cfg, dir, hooks };
    study.start()?;
    let tokenizer = study.tokenizer()?;
    let base_init = study.init_model("base-init", cfg.base_depth, 1000, &tokenizer)?;
    let base = study.run(
        "base",
        base_init,
        cfg.base_epochs,
        cfg.lr,
        BASE_SEED,
        TrainOnly::All,
    )?;
    let base_model = base.join("model");
    let arms: Vec<&LmArm> = LM_ARMS.iter().filter(|a| study.wants(a.name)).collect();
    // Seed 0 of every arm first, at the study's rate: the picture forms early.
    for arm in &arms {
        study.run_arm(arm, 0, cfg.lr, &base_model, &tokenizer)?;
    }
    for arm in arms.iter().filter(|a| a.grid) {
        for &lr in cfg.lr_grid.iter().filter(|&&l| l != cfg.lr) {
            study.run_arm(arm, 0, lr, &base_model, &tokenizer)?;
        }
    }
    for arm in arms.iter().filter(|a| a.seeded) {
        let lr = super::lm_report::chosen_lr(cfg, dir, arm)?;
        for s in 1..cfg.seeds as u64 {
            study.run_arm(arm, s, lr, &base_model, &tokenizer)?;
        }
    }
    super::lm_report::write_lm_report(cfg, dir)
}

struct LmRunner<'a> {
    cfg: &'a LmStudyConfig,
    dir: &'a Path,
    hooks: &'a Hooks,
}

impl LmRunner<'_> {
    fn say(&self, s: String) {
        if self.hooks.progress {
            eprintln!("{s}");
        }
    }

    /// Refuses a directory that holds another study, unknown arms and a grid without `lr`;
    /// then records the settings.
    fn start(&self) -> Result<()> {
        let cfg = self.cfg;
        let arms: Vec<&str> = std::iter::once("base")
            .chain(LM_ARMS.iter().map(|a| a.name))
            .collect();
        super::check_only(&cfg.only, &arms)?;
        if !cfg.lr_grid.is_empty() && !cfg.lr_grid.contains(&cfg.lr) {
            return Err(Error::InvalidModel(format!(
                "--lr {} must be one of --lr-grid {:?}: seed 0 of every arm runs at --lr first",
                cfg.lr, cfg.lr_grid
            )));
        }
        if cfg.dus_drop == 0 || cfg.dus_drop >= cfg.base_depth {
            return Err(Error::InvalidModel(format!(
                "--dus-drop {}: SOLAR drops m of the base's {} layers from each copy; m must be 1 to {}",
                cfg.dus_drop,
                cfg.base_depth,
                cfg.base_depth.saturating_sub(1)
            )));
        }
        if cfg.adapter_rank == 0 || cfg.adapter_rank > cfg.hidden_size {
            return Err(Error::InvalidModel(format!(
                "--adapter-rank {} must be 1 to the width {}",
                cfg.adapter_rank, cfg.hidden_size
            )));
        }
        super::record_settings(self.dir, &cfg.settings())
    }

    fn wants(&self, name: &str) -> bool {
        if self.cfg.only.is_empty() {
            LM_ARMS[..LM_HEADLINE].iter().any(|a| a.name == name)
        } else {
            self.cfg.only.iter().any(|o| o == name)
        }
    }

    /// The study's tokenizer, trained once on the corpus's training split.
    fn tokenizer(&self) -> Result<Vec<u8>> {
        let path = self.dir.join("tokenizer.json");
        if !path.exists() {
            let (docs, _) = crate::data::text::read_documents(&self.split_path(0))?;
            self.say(format!(
                "· tokenizer: a byte-level BPE of {} tokens",
                self.cfg.vocab_size
            ));
            let json = crate::data::tokenizer::train_bpe(&docs, self.cfg.vocab_size)
                .map_err(|e| Error::InvalidModel(format!("training the tokenizer: {e}")))?;
            crate::checkpoint::atomic::atomic_write(&path, json.as_bytes())?;
        }
        std::fs::read(&path).map_err(|e| Error::io(&path, e))
    }

    pub(super) fn split_path(&self, i: usize) -> PathBuf {
        self.dir
            .join(&self.cfg.corpus)
            .join(crate::data::corpus::SPLIT_FILES[i])
    }

    /// The `config.json` arguments of a study Llama of `depth` layers.
    fn model_args(&self, depth: usize) -> Map<String, Value> {
        let c = self.cfg;
        let v = json!({
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size, "num_hidden_layers": depth,
            "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
            "max_position_embeddings": c.seq_len, "tie_word_embeddings": true
        });
        v.as_object().expect("an object").clone()
    }

    /// A randomly initialised Llama under `models/name`, with the study's tokenizer.
    fn init_model(&self, name: &str, depth: usize, seed: u64, tok: &[u8]) -> Result<PathBuf> {
        use crate::model::llama::{Llama, LlamaConfig};
        let out = self.dir.join("models").join(name);
        if !out.join("config.json").exists() {
            let (raw, lc) = LlamaConfig::for_init(&self.model_args(depth))
                .map_err(|e| Error::InvalidModel(format!("llama: {e}")))?;
            let device = burn::tensor::Device::flex();
            let model = Llama::new(
                &lc,
                &mut crate::model::weights::RandomInit::new(seed),
                &device,
            );
            let model = crate::network::LanguageModel::Plain(model);
            crate::checkpoint::hf_dir::save_llama(&out, &raw, &model, Some(tok))?;
        }
        Ok(out)
    }

    /// `from` grown as `opts` say under `models/name` (made once).
    fn grow(&self, from: &Path, name: &str, opts: ExpandOptions) -> Result<PathBuf> {
        let out = self.dir.join("models").join(name);
        if !out.join("config.json").exists() {
            expand_llama_dir(from, &opts, &out)?;
        }
        Ok(out)
    }

    /// Growth of the base to `depth` positions by `method`.
    fn opts(
        &self,
        method: Method,
        depth: usize,
        init: InitMode,
        map: MapStrategy,
        seed: u64,
    ) -> Result<ExpandOptions> {
        let opts = ExpandOptions {
            depth,
            depths: Vec::new(),
            map,
            adapter: Some(AdapterSpec {
                rank: self.cfg.adapter_rank,
                scale: self.cfg.adapter_scale,
                ..AdapterSpec::default()
            }),
            unshared_norms: false,
            init,
            no_share: false,
            lora: None,
            seed,
        };
        let (opts, drop) = match method {
            Method::SolarDus => (ExpandOptions { depth: 0, ..opts }, Some(self.cfg.dus_drop)),
            Method::RelaxedRecursive => {
                let lora = Some(LoraSpec {
                    rank: self.lora_rank(),
                    scale: 1.0,
                });
                (ExpandOptions { lora, ..opts }, None)
            }
            _ => (opts, None),
        };
        method.apply(opts, drop).map_err(Error::InvalidModel)
    }

    /// The LoRA rank whose parameters per position come nearest to ScaleNet's adapters (both
    /// branches: d → r → d with biases): the comparison at equal parameters.
    fn lora_rank(&self) -> usize {
        let c = self.cfg;
        let (d, r) = (c.hidden_size, c.adapter_rank);
        let adapters = 2 * (2 * d * r + r + d);
        let (q, kv) = (d, c.num_kv_heads * (d / c.num_heads));
        let per_rank = 2 * (d + q) + 2 * (d + kv) + 3 * (d + c.intermediate_size);
        ((adapters as f64 / per_rank as f64).round() as usize).max(1)
    }

    /// The model seed `s` of `arm` starts from.
    fn model_for(&self, arm: &LmArm, s: u64, base: &Path, tok: &[u8]) -> Result<PathBuf> {
        let depth = arm.halves * self.cfg.base_depth / 2;
        let (paper, cyclic) = (InitMode::Paper, MapStrategy::Cyclic);
        let grow = |m: Method, init, map, name: String| {
            self.grow(base, &name, self.opts(m, depth, init, map, s)?)
        };
        let n = arm.name;
        match n {
            "scalenet" | "scalenet-1.5L" | "scalenet-3L" => {
                grow(Method::ScaleNet, paper, cyclic, format!("{n}-s{s}"))
            }
            "scalenet-identity" => grow(
                Method::ScaleNet,
                InitMode::Identity,
                cyclic,
                format!("{n}-s{s}"),
            ),
            "adjacent" => grow(
                Method::ScaleNet,
                paper,
                MapStrategy::Interleave,
                format!("{n}-s{s}"),
            ),
            "stack" => grow(Method::Stack, paper, cyclic, "stack".into()),
            "shared" => grow(Method::Shared, paper, cyclic, "shared".into()),
            "relaxed-recursive" => grow(Method::RelaxedRecursive, paper, cyclic, n.into()),
            "llama-pro" | "llama-pro-new" => {
                grow(Method::LlamaPro, paper, cyclic, "llama-pro".into())
            }
            "solar-dus" => grow(Method::SolarDus, paper, cyclic, "solar-dus".into()),
            "base+D2" | "base+2D2" => Ok(base.to_path_buf()),
            "shared-scratch" => {
                let random = self.init_model("random-base", self.cfg.base_depth, 3000, tok)?;
                self.grow(
                    &random,
                    "shared-scratch",
                    self.opts(Method::Shared, depth, paper, cyclic, s)?,
                )
            }
            _ => self.init_model(&format!("scratch-{depth}-s{s}"), depth, 2000 + s, tok),
        }
    }

    fn run_arm(&self, arm: &LmArm, s: u64, lr: f64, base: &Path, tok: &[u8]) -> Result<PathBuf> {
        let model = self.model_for(arm, s, base, tok)?;
        let epochs = match arm.budget {
            Budget::D2 => self.cfg.epochs,
            Budget::TwoD2 => 2 * self.cfg.epochs,
            Budget::D1D2 => self.cfg.base_epochs + self.cfg.epochs,
        };
        let only = if arm.name == "llama-pro-new" {
            TrainOnly::New
        } else {
            TrainOnly::All
        };
        let name = run_name(self.cfg, arm, lr, s);
        self.run(&name, model, epochs, lr, s, only)
    }

    /// One run with the study's recipe, unless it finished earlier; then its final evaluation.
    fn run(
        &self,
        name: &str,
        model: PathBuf,
        epochs: usize,
        lr: f64,
        seed: u64,
        only: TrainOnly,
    ) -> Result<PathBuf> {
        let out = self.dir.join("runs").join(name);
        // An archived run keeps its final evaluation and not its model (but for the base's).
        if out.join("model").join("config.json").exists() || out.join("final.json").exists() {
            self.say(format!("· {name}: done earlier, reusing"));
        } else {
            self.say(format!(
                "· {name}: {epochs} epochs of {} tokens at lr {lr:e}",
                self.cfg.epoch_tokens
            ));
            let resume = out.join("run.json").exists();
            let hooks = Hooks {
                progress: self.hooks.progress,
                interrupt: self.hooks.interrupt.clone(),
                ..Hooks::default()
            };
            let cfg = self.recipe(model, epochs, lr, seed, only);
            if let Outcome::Interrupted { .. } = train(cfg, &out, resume, &hooks)? {
                return Err(Error::Refused {
                    path: out,
                    msg: "interrupted; run the same command again to continue".into(),
                });
            }
        }
        super::lm_report::final_eval(self.cfg, &out, [self.split_path(1), self.split_path(2)])?;
        // A study of many hours is readable after every run, not only at its end.
        super::lm_report::write_lm_report(self.cfg, self.dir)?;
        Ok(out)
    }

    fn recipe(
        &self,
        model: PathBuf,
        epochs: usize,
        lr: f64,
        seed: u64,
        only: TrainOnly,
    ) -> TrainConfig {
        let c = self.cfg;
        let text = |i: usize| format!("text:{}", self.split_path(i).display());
        TrainConfig {
            epochs,
            batch_size: c.batch_size,
            lr,
            warmup_epochs: c.warmup_epochs,
            weight_decay: c.weight_decay,
            smoothing: 0.0,
            clip_grad: Some(c.clip_grad),
            train_only: only,
            val_split: 0.0,
            test_subset: Some(c.val_windows),
            seed,
            workers: 1,
            eval_batch_size: 8,
            device: c.device.clone(),
            precision: c.precision,
            seq_len: c.seq_len,
            val_data: Some(text(1)),
            epoch_tokens: Some(c.epoch_tokens),
            ..TrainConfig::new(model, text(0))
        }
    }
}
