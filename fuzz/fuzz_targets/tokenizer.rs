#![no_main]
//! scalenet::untrusted::tokenizer (a tokenizer.json and a round trip through it): a typed error or a valid value, for any bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scalenet::untrusted::tokenizer(data);
});
