//! Any descriptor a client sends (domain, entries): a bounded canonical key or an error,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::Key;
use sluice_core::key::MAX_COMPONENT_LEN;

fuzz_target!(|input: (&str, Vec<(&str, &str)>)| {
    let (domain, entries) = input;
    if let Ok(key) = Key::new(domain, entries.iter().copied()) {
        let bound = (1 + 2 * entries.len()) * (MAX_COMPONENT_LEN + 1);
        assert!(key.as_str().len() <= bound);
    }
    let _ = Key::named(domain);
});
