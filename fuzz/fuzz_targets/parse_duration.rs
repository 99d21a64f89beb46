//! Any text given as a duration (flags, periods, upstream headers later): a duration or an
//! error naming a piece of the input, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::time::parse_duration;

fuzz_target!(|text: &str| {
    if let Err(err) = parse_duration(text) {
        assert!(text.contains(&err.part));
    }
});
