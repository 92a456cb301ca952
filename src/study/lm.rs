//! The language-model study (`scalenet reproduce --family llama`): a tiny Llama trained from
//! scratch on an English corpus (`scalenet corpus`) for D1 tokens, then grown by every growth
//! operator and trained D2 more tokens, against continuing the base and training the deep
//! model from scratch. Finished runs are reused, so a stopped study continues where it was.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::growth::expand::expand_llama_dir;
use crate::growth::options::{ExpandOptions, InitMode, Method};
use crate::growth::plan::{AdapterSpec, LoraSpec, MapStrategy};
use crate::ops::precision::Precision;
use crate::train::config::TrainConfig;
use crate::train::optim::TrainOnly;
use crate::train::run_dir::{read_json, write_json};
use crate::train::trainer::{train, Hooks, Outcome};

/// Everything that sizes a language-model study; saved as `study.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmStudyConfig {
    /// Always `llama`: tells this study's `study.json` from a vision study's.
    pub family: String,
    /// A corpus directory (`scalenet corpus`): train.jsonl, valid.jsonl, test.jsonl. A
    /// relative path is the study directory's, so that a study moves with its corpus.
    pub corpus: PathBuf,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// L; the grown and from-scratch deep models have 2L positions.
    pub base_depth: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    /// Tokens per epoch; each epoch ends with an evaluation on the validation windows.
    pub epoch_tokens: u64,
    /// D1 = base_epochs × epoch_tokens: the base's training.
    pub base_epochs: usize,
    /// D2 = epochs × epoch_tokens: every arm's training after the base.
    pub epochs: usize,
    /// Seeds for the headline arms (scalenet, stack, base+D2 and both scratch arms).
    pub seeds: usize,
    /// The learning rate of the base and of every arm without a grid.
    pub lr: f64,
    /// The rates tried (seed 0, validation loss) for the arms marked for the grid; `lr` must
    /// be one of them. Empty: no grid.
    pub lr_grid: Vec<f64>,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub clip_grad: f64,
    pub adapter_rank: usize,
    pub adapter_scale: f64,
    /// SOLAR's m: the layers dropped from each copy.
    pub dus_drop: usize,
    /// Validation windows evaluated after each epoch (the final evaluation reads them all).
    pub val_windows: usize,
    pub device: String,
    #[serde(default, skip_serializing)]
    pub only: Vec<String>,
    /// As the vision study's: how the products are computed is not one of the settings.
    #[serde(default, skip_serializing)]
    pub precision: Precision,
}

impl LmStudyConfig {
    /// The committed study's sizes: a 4-layer, 192-wide Llama, 6M base tokens, 3M after.
    pub fn reproduce(corpus: PathBuf) -> Self {
        Self {
            family: "llama".into(),
            corpus,
            vocab_size: 4096,
            hidden_size: 192,
            intermediate_size: 512,
            num_heads: 6,
            num_kv_heads: 2,
            base_depth: 4,
            seq_len: 256,
            batch_size: 16,
            epoch_tokens: 500_000,
            base_epochs: 12,
            epochs: 6,
            seeds: 3,
            lr: 2e-3,
            lr_grid: vec![5e-4, 1e-3, 2e-3, 4e-3],
            warmup_epochs: 0.5,
            weight_decay: 0.1,
            clip_grad: 1.0,
            adapter_rank: 32,
            adapter_scale: 0.1,
            dus_drop: 1,
            val_windows: 256,
            device: "flex".into(),
            only: Vec::new(),
            precision: Precision::F32,
        }
    }

    fn settings(&self) -> Self {
        Self {
            only: Vec::new(),
            precision: Precision::default(),
            ..self.clone()
        }
    }

    pub(super) fn d1(&self) -> u64 {
        self.base_epochs as u64 * self.epoch_tokens
    }

    pub(super) fn d2(&self) -> u64 {
        self.epochs as u64 * self.epoch_tokens
    }
}

/// How long an arm trains after the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Budget {
    /// D2 tokens.
    D2,
    /// 2·D2 tokens (the base's share of a 2L model's FLOPs).
    TwoD2,
    /// D1 + D2 tokens (a grown model's whole budget, base included).
    D1D2,
}

/// One arm of the language-model study.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LmArm {
    pub name: &'static str,
    pub what: &'static str,
    /// Depth in halves of L (4 = 2L); SOLAR's depth follows from m instead.
    pub halves: usize,
    pub budget: Budget,
    pub seeded: bool,
    /// Its learning rate is chosen on the validation split from the study's grid.
    pub grid: bool,
    /// Starts from the trained base (its tokens count D1 before its own).
    pub from_base: bool,
}

const fn lm_arm(name: &'static str, what: &'static str, halves: usize, budget: Budget) -> LmArm {
    LmArm {
        name,
        what,
        halves,
        budget,
        seeded: false,
        grid: false,
        from_base: true,
    }
}

const fn headline(a: LmArm) -> LmArm {
    LmArm {
        seeded: true,
        grid: true,
        ..a
    }
}

const fn scratch(a: LmArm) -> LmArm {
    LmArm {
        from_base: false,
        ..a
    }
}

/// Every arm, the headline first; without `--only` a study runs the first `LM_HEADLINE`.
pub const LM_ARMS: &[LmArm] = &[
    headline(lm_arm(
        "scalenet",
        "ScaleNet 2L: shared blocks + adapters, paper init",
        4,
        Budget::D2,
    )),
    headline(lm_arm(
        "stack",
        "G_stack 2L: the blocks stacked (cyclic), unshared copies",
        4,
        Budget::D2,
    )),
    headline(lm_arm(
        "base+D2",
        "the base (L) trained D2 more tokens",
        2,
        Budget::D2,
    )),
    headline(scratch(lm_arm(
        "scratch-D2",
        "2L from scratch, D2 tokens",
        4,
        Budget::D2,
    ))),
    headline(scratch(lm_arm(
        "scratch-D1+D2",
        "2L from scratch, D1 + D2 tokens",
        4,
        Budget::D1D2,
    ))),
    LmArm {
        seeded: true,
        ..lm_arm(
            "scalenet-identity",
            "ScaleNet 2L with identity init (gates)",
            4,
            Budget::D2,
        )
    },
    lm_arm(
        "llama-pro",
        "LLaMA-Pro 2L: a zero-output copy after each block, all trained",
        4,
        Budget::D2,
    ),
    lm_arm(
        "llama-pro-new",
        "LLaMA-Pro 2L, only the new blocks trained",
        4,
        Budget::D2,
    ),
    lm_arm(
        "solar-dus",
        "SOLAR depth up-scaling: two copies less m layers each, joined",
        4,
        Budget::D2,
    ),
    lm_arm(
        "shared",
        "shared 2L without adapters (looping, cyclic)",
        4,
        Budget::D2,
    ),
    lm_arm(
        "adjacent",
        "ScaleNet 2L with each block twice in a row (0,0,1,1,...)",
        4,
        Budget::D2,
    ),
    lm_arm(
        "base+2D2",
        "the base (L) trained 2·D2 more tokens (a 2L arm's FLOPs)",
        2,
        Budget::TwoD2,
    ),
    scratch(lm_arm(
        "shared-scratch",
        "shared 2L without adapters from a random base, D1 + D2",
        4,
        Budget::D1D2,
    )),
    // The scaling curve.
    lm_arm(
        "scalenet-1.5L",
        "ScaleNet 1.5L (paper init), D2 tokens",
        3,
        Budget::D2,
    ),
    lm_arm(
        "scalenet-3L",
        "ScaleNet 3L (paper init), D2 tokens",
        6,
        Budget::D2,
    ),
    scratch(lm_arm(
        "scratch-1.5L",
        "1.5L from scratch, D1 + D2 tokens",
        3,
        Budget::D1D2,
    )),
    scratch(lm_arm(
        "scratch-3L",
        "3L from scratch, D1 + D2 tokens",
        6,
        Budget::D1D2,
    )),
];

/// The arms run when `--only` is not given: the headline and the other operators.
pub const LM_HEADLINE: usize = 14;

/// The base's seed (its data order) and the seeds of the random initialisations.
const BASE_SEED: u64 = 0;

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

/// A run's directory name: the arm, its rate where the arm has a grid, and its seed.
pub(super) fn run_name(cfg: &LmStudyConfig, arm: &LmArm, lr: f64, seed: u64) -> String {
    if arm.grid && !cfg.lr_grid.is_empty() {
        format!("{}-lr{lr:e}-s{seed}", arm.name)
    } else {
        format!("{}-s{seed}", arm.name)
    }
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
        std::fs::create_dir_all(self.dir).map_err(|e| Error::io(self.dir, e))?;
        let known = |o: &str| o == "base" || LM_ARMS.iter().any(|a| a.name == o);
        if let Some(bad) = cfg.only.iter().find(|o| !known(o)) {
            return Err(Error::InvalidModel(format!(
                "--only {bad}: no such arm (arms: {})",
                LM_ARMS
                    .iter()
                    .map(|a| a.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
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
        let study_json = self.dir.join("study.json");
        if study_json.exists() {
            let old: Value = read_json(&study_json)?;
            let same = serde_json::from_value::<LmStudyConfig>(old)
                .is_ok_and(|o| o.settings() == cfg.settings());
            if !same {
                return Err(Error::Refused {
                    path: study_json,
                    msg: "holds a study with other settings; choose another --out".into(),
                });
            }
        }
        write_json(&study_json, &cfg.settings())
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
