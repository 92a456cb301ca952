//! Text ↔ token ids through the `tokenizers` crate, from a model's `tokenizer.json` or from
//! the vocabulary a GGUF file embeds.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A model's tokenizer, and where it came from (for messages).
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub path: PathBuf,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses a `tokenizer.json` document; `path` is for messages.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let err = |msg: String| Error::Tokenizer {
            path: path.to_path_buf(),
            msg,
        };
        // tokenizers 0.22 panics on some malformed JSON (found by fuzzing: an invalid escape or
        // a lone surrogate inside "decoder"); parsing it fully first (skipping strings without
        // decoding them, as `IgnoredAny` does, misses the surrogate) turns that into an error.
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| err(format!("not valid JSON: {e}")))?;
        let inner = guarded(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(err)?
            .map_err(|e| err(one_line(&e.to_string())))?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Ids for `text`, without the special tokens a template would add.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = guarded(|| self.inner.encode(text, false))
            .map_err(|m| self.err(m))?
            .map_err(|e| self.err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        guarded(|| self.inner.decode(ids, false))
            .map_err(|m| self.err(m))?
            .map_err(|e| self.err(e))
    }

    /// Tokens the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Refuses a tokenizer that yields ids the model has no embedding for.
    pub fn check_fits(&self, vocab_size: usize) -> Result<()> {
        let max_id = self
            .inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .unwrap_or(0) as usize;
        if max_id >= vocab_size {
            return Err(Error::Tokenizer {
                path: self.path.clone(),
                msg: format!(
                    "produces token id {max_id}, but the model's embeddings have only {vocab_size} rows (vocab_size)"
                ),
            });
        }
        Ok(())
    }

    /// Turns ids into text one at a time, printing each piece as soon as it is whole UTF-8.
    pub fn streamer(&self) -> Streamer<'_> {
        Streamer {
            tok: self,
            ids: Vec::new(),
            printed: 0,
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            msg: one_line(&e.to_string()),
        }
    }
}

/// Incremental decoding for streamed generation.
pub struct Streamer<'a> {
    tok: &'a TextTokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl Streamer<'_> {
    /// The new text that `id` completes (empty while a multi-byte character is unfinished).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.ends_with('\u{fffd}') || text.len() < self.printed {
            return Ok(String::new());
        }
        let Some(new) = text.get(self.printed..).map(str::to_string) else {
            return Ok(String::new());
        };
        self.printed = text.len();
        Ok(new)
    }
}

thread_local! {
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside a guarded call into the tokenizers crate, whose panics become
/// errors: a panic hook can stay quiet then (the error is reported where it is caught).
pub fn panic_is_guarded() -> bool {
    GUARDED.with(|g| g.get())
}

/// Runs a call into the tokenizers crate, turning a panic inside it into an error message:
/// a stranger's tokenizer.json must not take the process down.
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    GUARDED.with(|g| g.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(false));
    result.map_err(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!(
            "the tokenizers library failed on this file ({})",
            one_line(&what)
        )
    })
}

fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join(" ")
}

/// The token that separates documents in a tokenizer [`train_bpe`] makes: id 0.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// A byte-level BPE tokenizer (GPT-2's scheme, as SmolLM's) trained on `docs` to `vocab_size`
/// tokens, [`END_OF_TEXT`] first; returns its `tokenizer.json`.
pub fn train_bpe(docs: &[String], vocab_size: usize) -> std::result::Result<String, String> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    guarded(|| {
        tok.train(&mut trainer, docs.iter())?;
        tok.to_string(true)
    })?
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_inside_a_guarded_call_is_an_error() {
        let r: Result<(), String> = super::guarded(|| panic!("deep inside"));
        let msg = r.unwrap_err();
        assert!(
            msg.contains("deep inside") && msg.contains("tokenizers"),
            "{msg}"
        );
        assert!(!super::panic_is_guarded());
    }
}
