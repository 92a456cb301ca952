//! The language-model study's settings (`study.json`) and arms: a tiny Llama trained from
//! scratch on an English corpus (`scalenet corpus`) for D1 tokens, then grown by every growth
//! operator and trained D2 more tokens, against continuing the base and training the deep
//! model from scratch. `lm_run` runs them, `lm_report` reports them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ops::precision::Precision;

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

    pub(super) fn settings(&self) -> Self {
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
        "relaxed-recursive",
        "Relaxed Recursive 2L: shared blocks + per-position LoRA on every linear layer, at ScaleNet's parameter count",
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
pub(super) const BASE_SEED: u64 = 0;

/// A run's directory name: the arm, its rate where the arm has a grid, and its seed.
pub(super) fn run_name(cfg: &LmStudyConfig, arm: &LmArm, lr: f64, seed: u64) -> String {
    if arm.grid && !cfg.lr_grid.is_empty() {
        format!("{}-lr{lr:e}-s{seed}", arm.name)
    } else {
        format!("{}-s{seed}", arm.name)
    }
}
