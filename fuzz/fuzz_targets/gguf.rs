#![no_main]
//! scalenet::untrusted::gguf (a GGUF file through header, config, dequantisation and tokenizer): a typed error or a valid value, for any bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scalenet::untrusted::gguf(data);
});
