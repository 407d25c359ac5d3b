//! Arbitrary bytes as a config file: `check` and a reload read files an operator (or a bad
//! ConfigMap) wrote, so any text gives a list of errors or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = reasoning_gateway::config::parse(text);
    }
});
