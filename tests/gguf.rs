//! GGUF reading: dequantisation against the formats' definitions, llama.cpp's names and q/k
//! row order, the embedded tokenizer, and bad files. The test writes its own tiny GGUF.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use scalenet::checkpoint::gguf::{dequantize, unpermute_rows, GgmlType, GgufFile};
use scalenet::checkpoint::hf_dir::{load_llama, read_parts};

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalenet-gguf-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Hand-made blocks, decoded by the definitions in ggml's `dequantize_row_*`.
#[test]
fn blocks_decode_as_defined() {
    // Q4_0: d, then 16 bytes; element j is the low nibble of byte j, j+16 the high nibble;
    // x = (q - 8) d.
    let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let x = dequantize(GgmlType::Q4_0, &b);
    for j in 0..16 {
        assert_eq!(x[j], (j as f32 - 8.0) * 0.5);
        assert_eq!(x[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
    }
    // Q4_1: d, m, nibbles; x = q d + m.
    let mut b = f16::from_f32(0.25).to_le_bytes().to_vec();
    b.extend(f16::from_f32(-1.0).to_le_bytes());
    b.extend((0..16u8).map(|j| j | (j << 4)));
    let x = dequantize(GgmlType::Q4_1, &b);
    for j in 0..16 {
        assert_eq!(x[j], j as f32 * 0.25 - 1.0);
        assert_eq!(x[j + 16], x[j]);
    }
    // Q8_0: d, 32 signed bytes; x = q d.
    let mut b = f16::from_f32(0.125).to_le_bytes().to_vec();
    b.extend((0..32i8).map(|j| (j - 16) as u8));
    let x = dequantize(GgmlType::Q8_0, &b);
    for (j, v) in x.iter().enumerate() {
        assert_eq!(*v, (j as f32 - 16.0) * 0.125);
    }
    let x = dequantize(GgmlType::Bf16, &bf16::from_f32(-2.5).to_le_bytes());
    assert_eq!(x, vec![-2.5]);
    let x = dequantize(GgmlType::F16, &f16::from_f32(3.0).to_le_bytes());
    assert_eq!(x, vec![3.0]);
}

/// GPT-2's byte → printable character map, as a byte-level BPE vocabulary spells bytes.
fn byte_chars() -> Vec<String> {
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                b
            } else {
                n += 1;
                255 + n
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

/// A tiny GGUF writer: metadata and tensors, as llama.cpp lays them out (version 3).
struct Writer {
    meta: Vec<u8>,
    n_meta: u64,
    infos: Vec<u8>,
    data: Vec<u8>,
    n_tensors: u64,
}

fn gguf_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Writer {
    fn new() -> Self {
        Self {
            meta: vec![],
            n_meta: 0,
            infos: vec![],
            data: vec![],
            n_tensors: 0,
        }
    }

    fn key(&mut self, k: &str, ty: u32) {
        gguf_str(&mut self.meta, k);
        self.meta.extend(ty.to_le_bytes());
        self.n_meta += 1;
    }

    fn u32(&mut self, k: &str, v: u32) {
        self.key(k, 4);
        self.meta.extend(v.to_le_bytes());
    }

    fn f32(&mut self, k: &str, v: f32) {
        self.key(k, 6);
        self.meta.extend(v.to_le_bytes());
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k, 8);
        gguf_str(&mut self.meta, v);
    }

    fn strs(&mut self, k: &str, v: &[String]) {
        self.key(k, 9);
        self.meta.extend(8u32.to_le_bytes());
        self.meta.extend((v.len() as u64).to_le_bytes());
        for s in v {
            gguf_str(&mut self.meta, s);
        }
    }

    fn i32s(&mut self, k: &str, v: &[i32]) {
        self.key(k, 9);
        self.meta.extend(5u32.to_le_bytes());
        self.meta.extend((v.len() as u64).to_le_bytes());
        for x in v {
            self.meta.extend(x.to_le_bytes());
        }
    }

    /// `shape` in torch order; `bytes` already encoded as `ty`.
    fn tensor(&mut self, name: &str, shape: &[usize], ty: GgmlType, bytes: &[u8]) {
        while !self.data.len().is_multiple_of(32) {
            self.data.push(0);
        }
        gguf_str(&mut self.infos, name);
        self.infos.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            self.infos.extend((*d as u64).to_le_bytes());
        }
        self.infos.extend(ty.id().to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
        self.n_tensors += 1;
    }

    fn finish(self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_meta.to_le_bytes());
        out.extend(self.meta);
        out.extend(self.infos);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(self.data);
        out
    }
}

/// Values exactly representable in every format used below (multiples of 1/64 in [-2, 2),
/// with one scale per block).
fn encode(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    let d = 1.0f32 / 8.0;
    match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Bf16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => values
            .chunks(32)
            .flat_map(|c| {
                let mut b = f16::from_f32(d).to_le_bytes().to_vec();
                b.extend(c.iter().map(|v| (v / d).round() as i8 as u8));
                b
            })
            .collect(),
        GgmlType::Q4_0 | GgmlType::Q4_1 => values
            .chunks(32)
            .flat_map(|c| {
                let mut b = f16::from_f32(d).to_le_bytes().to_vec();
                let offset = if ty == GgmlType::Q4_1 {
                    b.extend(f16::from_f32(-1.0).to_le_bytes());
                    1.0
                } else {
                    8.0 * d
                };
                let q = |v: f32| ((v + offset) / d).round() as u8;
                b.extend((0..16).map(|j| q(c[j]) | (q(c[j + 16]) << 4)));
                b
            })
            .collect(),
    }
}

/// Deterministic values on each format's grid: Q4 formats hold 16 levels, the rest more.
fn grid(n: usize, seed: usize, ty: GgmlType) -> Vec<f32> {
    let levels = match ty {
        GgmlType::Q4_0 => (-8, 8),
        GgmlType::Q4_1 => (0, 16),
        _ => (-16, 16),
    };
    (0..n)
        .map(|i| {
            let k = ((i * 7 + seed * 13) % (levels.1 - levels.0) as usize) as i32 + levels.0;
            let v = k as f32 / 8.0;
            if ty == GgmlType::Q4_1 {
                v - 1.0
            } else {
                v
            }
        })
        .collect()
}

/// Interleaves the rotary halves as convert_hf_to_gguf.py does (the inverse of unpermute).
fn permute_rows(v: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0.0; v.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let dst = (h * head_dim + 2 * i + j) * cols;
                let src = (h * head_dim + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&v[src..src + cols]);
            }
        }
    }
    out
}

const D: usize = 32;
const FF: usize = 64;
const HEADS: usize = 2;
const KV: usize = 1;
const HD: usize = 16;

/// Writes a one-layer llama GGUF holding every supported tensor type; returns its path and
/// the expected (HF name, torch shape, values) of each tensor.
/// (HF name, torch shape, values)
type Expected = Vec<(String, Vec<usize>, Vec<f32>)>;

fn write_tiny(dir: &Path) -> (PathBuf, Expected) {
    write_tiny_with(dir, None)
}

/// `write_tiny`, with a `rope_freqs.weight` tensor (Llama 3.1+ files) when given.
fn write_tiny_with(dir: &Path, rope_factors: Option<&[f32]>) -> (PathBuf, Expected) {
    let vocab = byte_chars();
    let v = vocab.len();
    let mut w = Writer::new();
    w.str("general.architecture", "llama");
    w.u32("llama.block_count", 1);
    w.u32("llama.context_length", 128);
    w.u32("llama.embedding_length", D as u32);
    w.u32("llama.feed_forward_length", FF as u32);
    w.u32("llama.attention.head_count", HEADS as u32);
    w.u32("llama.attention.head_count_kv", KV as u32);
    w.u32("llama.rope.dimension_count", HD as u32);
    w.f32("llama.rope.freq_base", 10000.0);
    w.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    w.str("tokenizer.ggml.model", "gpt2");
    w.str("tokenizer.ggml.pre", "gpt-2");
    w.strs("tokenizer.ggml.tokens", &vocab);
    w.strs("tokenizer.ggml.merges", &[]);
    w.i32s("tokenizer.ggml.token_type", &vec![1; v]);
    w.u32("tokenizer.ggml.eos_token_id", 0);
    let specs: Vec<(&str, &str, Vec<usize>, GgmlType)> = vec![
        (
            "token_embd.weight",
            "model.embed_tokens.weight",
            vec![v, D],
            GgmlType::F16,
        ),
        (
            "output_norm.weight",
            "model.norm.weight",
            vec![D],
            GgmlType::F32,
        ),
        (
            "output.weight",
            "lm_head.weight",
            vec![v, D],
            GgmlType::Q4_1,
        ),
        (
            "blk.0.attn_norm.weight",
            "model.layers.0.input_layernorm.weight",
            vec![D],
            GgmlType::F32,
        ),
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
            vec![HEADS * HD, D],
            GgmlType::Q4_0,
        ),
        (
            "blk.0.attn_k.weight",
            "model.layers.0.self_attn.k_proj.weight",
            vec![KV * HD, D],
            GgmlType::Q4_1,
        ),
        (
            "blk.0.attn_v.weight",
            "model.layers.0.self_attn.v_proj.weight",
            vec![KV * HD, D],
            GgmlType::Q8_0,
        ),
        (
            "blk.0.attn_output.weight",
            "model.layers.0.self_attn.o_proj.weight",
            vec![D, HEADS * HD],
            GgmlType::Bf16,
        ),
        (
            "blk.0.ffn_norm.weight",
            "model.layers.0.post_attention_layernorm.weight",
            vec![D],
            GgmlType::F32,
        ),
        (
            "blk.0.ffn_gate.weight",
            "model.layers.0.mlp.gate_proj.weight",
            vec![FF, D],
            GgmlType::Q8_0,
        ),
        (
            "blk.0.ffn_up.weight",
            "model.layers.0.mlp.up_proj.weight",
            vec![FF, D],
            GgmlType::Q4_0,
        ),
        (
            "blk.0.ffn_down.weight",
            "model.layers.0.mlp.down_proj.weight",
            vec![D, FF],
            GgmlType::F16,
        ),
    ];
    let mut expected = Vec::new();
    for (seed, (gguf, hf, shape, ty)) in specs.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let values = grid(n, seed, ty);
        let stored = match gguf {
            "blk.0.attn_q.weight" => permute_rows(&values, HEADS, HD, D),
            "blk.0.attn_k.weight" => permute_rows(&values, KV, HD, D),
            _ => values.clone(),
        };
        w.tensor(gguf, &shape, ty, &encode(ty, &stored));
        expected.push((hf.to_string(), shape, values));
    }
    if let Some(f) = rope_factors {
        w.tensor(
            "rope_freqs.weight",
            &[f.len()],
            GgmlType::F32,
            &encode(GgmlType::F32, f),
        );
    }
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, w.finish()).unwrap();
    (path, expected)
}

#[test]
fn a_tiny_gguf_loads_with_every_tensor_type() {
    let dir = tempdir("tiny");
    let (path, expected) = write_tiny(&dir);
    let parts = read_parts(&path).unwrap();
    assert_eq!(parts.config.num_key_value_heads, KV);
    assert_eq!(parts.config.head_dim, HD);
    assert!(!parts.config.tie_word_embeddings);
    for (name, shape, values) in &expected {
        let t = &parts.tensors.tensors[name];
        assert_eq!(&t.shape, shape, "{name}");
        assert_eq!(
            &t.values, values,
            "{name}: dequantised values (and q/k row order)"
        );
    }
    let loaded = load_llama(&path, &burn::tensor::Device::flex()).unwrap();
    let tok = loaded.tokenizer.unwrap();
    let ids = tok.encode("héllo, world").unwrap();
    assert_eq!(ids.len(), "héllo, world".len(), "one token per byte");
    assert_eq!(tok.decode(&ids).unwrap(), "héllo, world");
    // unpermute_rows undoes the converter's interleave.
    let v: Vec<f32> = (0..HEADS * HD * 2).map(|i| i as f32).collect();
    assert_eq!(
        unpermute_rows(&permute_rows(&v, HEADS, HD, 2), HEADS, HD, 2),
        v
    );
}

#[test]
fn bad_gguf_files_get_one_clear_error() {
    let dir = tempdir("bad");
    let (path, _) = write_tiny(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let err = |b: Vec<u8>| match GgufFile::parse(Path::new("x.gguf"), b) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let truncated = err(bytes[..bytes.len() - 100].to_vec());
    assert!(
        truncated.contains("beyond the end of the file"),
        "{truncated}"
    );
    let short = err(bytes[..40].to_vec());
    assert!(
        short.contains("truncated") || short.contains("claims"),
        "{short}"
    );
    assert!(err(b"GGML\x03\x00\x00\x00".to_vec()).contains("magic"));
    // The type of the first tensor (token_embd, F16 = 1) becomes Q6_K (14).
    let pos = bytes
        .windows(17)
        .position(|w| w == b"token_embd.weight")
        .unwrap();
    let ty_at = pos + 17 + 4 + 2 * 8;
    let mut q6 = bytes.clone();
    q6[ty_at..ty_at + 4].copy_from_slice(&14u32.to_le_bytes());
    let e = err(q6);
    assert!(e.contains("Q6_K") && e.contains("cannot dequantise"), "{e}");
    // A tensor count no file can hold.
    let mut many = bytes.clone();
    many[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(many).contains("more than the"));
    for e in [truncated, short] {
        assert!(!e.contains('\n'));
    }
}

/// The binary, its cache in a temporary directory as in tests/cli.rs.
fn scalenet(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_scalenet"))
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join(format!("scalenet-test-cache-{}", std::process::id())),
        )
        .args(args)
        .output()
        .unwrap()
}

/// The language-model path through the CLI, as a user takes it: GGUF → transformers
/// directory → generate, grow, info, forward.
#[test]
fn convert_generate_expand_through_the_cli() {
    let dir = tempdir("cli");
    let (gguf, _) = write_tiny(&dir);
    let hf = dir.join("hf");
    let o = |a: &[&dyn AsRef<std::ffi::OsStr>]| {
        let args: Vec<&std::ffi::OsStr> = a.iter().map(|x| x.as_ref()).collect();
        let out = scalenet(&args);
        assert!(
            out.status.success(),
            "{:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    o(&[&"convert", &gguf, &"--out", &hf]);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(hf.join(f).is_file(), "{f}");
    }
    let text = o(&[
        &"generate",
        &hf,
        &"--prompt",
        &"ab",
        &"--max-new-tokens",
        &"5",
    ]);
    assert!(text.starts_with("ab"), "{text}");
    let grown = dir.join("grown");
    o(&[
        &"expand",
        &hf,
        &"--depth",
        &"3",
        &"--init",
        &"identity",
        &"--out",
        &grown,
    ]);
    let info = o(&[&"info", &grown]);
    assert!(info.contains("1 base layers → 3 positions"), "{info}");
    assert!(info.contains("shared layers"), "{info}");
    // Identity growth: the same greedy text as the base.
    let again = o(&[
        &"generate",
        &grown,
        &"--prompt",
        &"ab",
        &"--max-new-tokens",
        &"5",
    ]);
    assert_eq!(again, text);
}

/// A grown language model trains through `train` on a text file: the loss falls, and a run
/// stopped mid-epoch and resumed ends with the same weights, bit for bit, as one that never
/// stopped.
#[test]
fn a_grown_language_model_trains_and_resumes_exactly() {
    let dir = tempdir("lm-train");
    let (gguf, _) = write_tiny(&dir);
    let grown = dir.join("grown");
    let out = scalenet(&[
        "expand".as_ref(),
        gguf.as_os_str(),
        "--depth".as_ref(),
        "3".as_ref(),
        "--adapter-rank".as_ref(),
        "4".as_ref(),
        "--out".as_ref(),
        grown.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = dir.join("text.txt");
    let line = "the quick brown fox jumps over the lazy dog. ";
    std::fs::write(&text, line.repeat(40)).unwrap();
    let data = format!("text:{}", text.display());
    const SEQ_LEN: u64 = 32;
    let train = |run: &Path, extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec!["train".into(), grown.clone().into()];
        for a in [
            "--data",
            &data,
            "--seq-len",
            &SEQ_LEN.to_string(),
            "--batch-size",
            "4",
            "--epochs",
            "3",
            "--lr",
            "3e-3",
            "--warmup-epochs",
            "0",
            "--val-split",
            "0.1",
            "--precision",
            "f32",
        ] {
            args.push(a.into());
        }
        args.extend(extra.iter().map(|a| a.into()));
        args.push("--out".into());
        args.push(run.into());
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        scalenet(&refs)
    };
    let straight = dir.join("straight");
    let o = train(&straight, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let losses: Vec<f64> = std::fs::read_to_string(straight.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 3);
    assert!(losses[2] < losses[0], "the loss falls: {losses:?}");
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("val_perplexity") && metrics.contains("tokens_per_s"),
        "{metrics}"
    );
    // Tokens trained on: every window is --seq-len tokens.
    for line in metrics.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            m["train_tokens"].as_u64(),
            m["train_images"].as_u64().map(|w| w * SEQ_LEN),
            "{line}"
        );
    }
    let stopped = dir.join("stopped");
    let o = train(&stopped, &["--stop-after-steps", "4"]);
    // An interrupted run checkpoints and exits 130, as after Ctrl-C.
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = scalenet(&["train".as_ref(), "--resume".as_ref(), stopped.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let weights = |run: &Path| std::fs::read(run.join("model/model.safetensors")).unwrap();
    assert!(
        weights(&straight) == weights(&stopped),
        "resumed weights differ"
    );
    // The trained model is a grown transformers directory that loads and generates.
    let o = scalenet(&[
        "generate".as_ref(),
        straight.join("model").as_os_str(),
        "--prompt".as_ref(),
        "the quick".as_ref(),
        "--max-new-tokens".as_ref(),
        "8".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Llama 3.1+ GGUF files carry llama3 rope scaling as per-frequency factors
/// (`rope_freqs.weight`, as convert_hf_to_gguf.py computes them); they come back as the
/// `rope_scaling` that made them, and factors no llama3 setting makes are refused.
#[test]
fn rope_factors_become_llama3_rope_scaling() {
    use scalenet::model::llama::RopeScaling;
    let (theta, old, low, high, factor) = (10000.0f64, 8192.0f64, 1.0f64, 4.0f64, 8.0f64);
    let factors: Vec<f32> = (0..HD / 2)
        .map(|i| {
            let f = 1.0 / theta.powf((2 * i) as f64 / HD as f64);
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let r = if wavelen < old / high {
                1.0
            } else if wavelen > old / low {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            r as f32
        })
        .collect();
    assert!(
        factors.iter().any(|&f| f > 1.0 && f < 8.0),
        "the smooth band is exercised"
    );
    let dir = tempdir("rope");
    let (path, _) = write_tiny_with(&dir, Some(&factors));
    let parts = read_parts(&path).unwrap();
    assert_eq!(
        parts.config.rope_scaling,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old
        }
    );
    assert!(!parts.tensors.tensors.contains_key("rope_freqs.weight"));
    let mut odd = factors.clone();
    odd[3] = 3.0;
    let (path, _) = write_tiny_with(&dir, Some(&odd));
    let err = read_parts(&path).err().expect("refused").to_string();
    assert!(err.contains("rope_freqs.weight"), "{err}");
}
