//! Any text as a `sluice serve` config file (envoyproxy/ratelimit YAML or sluice's own):
//! `Config::parse` either accepts it or says what is wrong; it never panics, and an error
//! names where it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_server::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::parse(text, "fuzz.yaml") {
        assert!(error.to_string().starts_with("fuzz.yaml"), "{error}");
    }
});
