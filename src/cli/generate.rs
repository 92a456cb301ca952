use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::checkpoint::hf_dir::load_llama;
use scalenet::device::DEVICE_HELP;
use scalenet::generate::{generate, Sampling};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A language model: a transformers directory (config.json, model.safetensors,
    /// tokenizer.json) or a GGUF file.
    model: PathBuf,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in the model's chat format (ChatML: <|im_start|>user …), for
    /// instruction-tuned models.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling: draw from the smallest set of tokens holding this much probability.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], not {}", args.top_p);
    }
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!(
            "--temperature must be 0 or positive, not {}",
            args.temperature
        );
    }
    let device = super::device(&args.device)?;
    let loaded = load_llama(&args.model, &device)?;
    let Some(tok) = &loaded.tokenizer else {
        bail!(
            "{}: no tokenizer.json beside the model; generate needs one",
            args.model.display()
        );
    };
    let text = if args.chat {
        if tok.token_to_id("<|im_start|>").is_none() {
            bail!(
                "{}: --chat needs a ChatML tokenizer (<|im_start|>), which this one is not",
                tok.path.display()
            );
        }
        format!(
            "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
            args.prompt
        )
    } else {
        args.prompt.clone()
    };
    let mut prompt = tok.encode(&text)?;
    if prompt.is_empty() {
        if let Some(b) = loaded.config.bos_token_id {
            prompt.push(b);
        } else {
            bail!("--prompt is empty and the model has no bos_token_id to start from");
        }
    }
    let mut stop = loaded.config.eos_token_ids.clone();
    if args.chat {
        stop.extend(tok.token_to_id("<|im_end|>"));
    }
    let sampling = Sampling {
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
    };
    if !args.chat {
        print!("{}", args.prompt);
    }
    let mut stream = tok.streamer();
    let mut stdout = std::io::stdout();
    let mut failure = None;
    let started = std::time::Instant::now();
    // The first token comes out of the prompt's forward (the prefill); the rest one step each.
    let mut first_token = None;
    let new = generate(
        &loaded.model,
        &prompt,
        args.max_new_tokens,
        &sampling,
        &stop,
        &device,
        |id| {
            first_token.get_or_insert_with(std::time::Instant::now);
            if stop.contains(&id) {
                return false;
            }
            match stream.push(id) {
                Ok(piece) => {
                    print!("{piece}");
                    let _ = stdout.flush();
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        },
    );
    println!();
    if let Some(e) = failure {
        return Err(e.into());
    }
    let ended = std::time::Instant::now();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut report = format!("prompt: {} token{}", prompt.len(), plural(prompt.len()));
    // With no new token the prompt never ran; a stop token as the first one comes out of the
    // prompt's forward without reaching the callback.
    if !new.is_empty() {
        let prefill = (first_token.unwrap_or(ended) - started).as_secs_f64();
        report.push_str(&format!(
            " in {prefill:.1} s ({:.0} tokens/s)",
            prompt.len() as f64 / prefill.max(1e-9)
        ));
    }
    if let (Some(first), n @ 2..) = (first_token, new.len()) {
        let secs = (ended - first).as_secs_f64();
        report.push_str(&format!(
            " · generated: {n} tokens, {:.1} tokens/s after the first",
            (n - 1) as f64 / secs.max(1e-9)
        ));
    } else {
        let n = new.len();
        report.push_str(&format!(" · generated: {n} token{}", plural(n)));
    }
    eprintln!("{report}");
    Ok(())
}
