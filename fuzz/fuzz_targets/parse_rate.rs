//! Any text given as a rate (`--policy`, config files): a rate or an error naming a piece
//! of the input, never a panic; a parsed rate prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::{AlgorithmKind, PolicyError, Rate};

fuzz_target!(|text: &str| {
    match text.parse::<Rate>() {
        Ok(rate) => assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate)),
        Err(PolicyError::InvalidRate { part, .. }) => assert!(text.contains(&part)),
        Err(_) => {}
    }
    let _ = text.parse::<AlgorithmKind>();
});
