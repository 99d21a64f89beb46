//! A fixed-size fingerprint of an item id, for the sets that only test membership.
//!
//! A run remembers every id it has seen (to refuse repeats) and every id already in the
//! results file (to skip it). Kept as text, each costs a `String` (24 bytes) plus its heap
//! allocation (the id's length, rounded up by the allocator) per set: at a million lines,
//! 100 MB and more. An [`IdKey`] is the first 128 bits of the SHA-256 of the id's bytes:
//! 16 bytes, whatever the id's length, and no allocation.
//!
//! Two different ids get the same key only by a SHA-256 collision in 128 bits: about 2^64
//! ids are needed before one is likely, and the ids come from the user's own file, so a
//! key is taken for the id. The text is still kept wherever it is written out (results,
//! journal, dead letter) or shown.

use sha2::{Digest, Sha256};

/// The first 128 bits of the SHA-256 of an id's bytes. Bytes, not a `u128`, so it has an
/// alignment of 1 and packs tightly next to a line number in a map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct IdKey([u8; 16]);

impl IdKey {
    /// The key of `id`.
    pub(crate) fn of(id: &str) -> Self {
        let digest = Sha256::digest(id.as_bytes());
        let mut key = [0_u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::mem::size_of;

    use super::IdKey;

    #[test]
    fn same_id_same_key_different_ids_different_keys() {
        assert_eq!(IdKey::of("item-1"), IdKey::of("item-1"));
        assert_eq!(IdKey::of(""), IdKey::of(""));
        assert_ne!(IdKey::of(""), IdKey::of(" "));
        assert_ne!(IdKey::of("a"), IdKey::of("A"));
        let ids: Vec<String> = (0..5_000)
            .map(|i| format!("item-{i}"))
            .chain((0..1_000).map(|i| "x".repeat(i)))
            .collect();
        let keys: HashSet<IdKey> = ids.iter().map(|id| IdKey::of(id)).collect();
        assert_eq!(keys.len(), ids.len());
        // The first 128 bits of SHA-256 (of "abc": FIPS 180-2's example).
        assert_eq!(
            IdKey::of("abc").0,
            [
                0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
                0x22, 0x23
            ]
        );
    }

    #[test]
    fn a_key_is_sixteen_bytes() {
        assert_eq!(size_of::<IdKey>(), 16);
        // A `seen` entry: the key and the first line, no padding.
        assert_eq!(size_of::<(IdKey, u64)>(), 24);
    }

    /// The memory per id of the `done` set and the `seen` map, text against keys: the
    /// tables' slots (a control byte each) plus, for text, each id's heap allocation.
    /// `cargo nextest run -p sluice-egress --all-features --run-ignored only per_id`
    #[test]
    #[ignore = "a measurement: prints, asserts nothing much"]
    fn per_id_memory() {
        const N: usize = 1_000_000;
        let ids: Vec<String> = (0..N).map(|i| format!("request-{i:08}")).collect();
        let text_heap: usize = ids.iter().map(String::capacity).sum();

        let done_text: HashSet<String> = ids.iter().cloned().collect();
        let seen_text: HashMap<String, u64> = ids.iter().cloned().zip(1..).collect();
        let done_keys: HashSet<IdKey> = ids.iter().map(|id| IdKey::of(id)).collect();
        let seen_keys: HashMap<IdKey, u64> = ids.iter().map(|id| IdKey::of(id)).zip(1..).collect();

        let table = |capacity: usize, slot: usize| capacity * (slot + 1);
        let before = table(done_text.capacity(), size_of::<String>())
            + table(seen_text.capacity(), size_of::<(String, u64)>())
            + 2 * text_heap;
        let after = table(done_keys.capacity(), size_of::<IdKey>())
            + table(seen_keys.capacity(), size_of::<(IdKey, u64)>());
        println!(
            "slot bytes (a control byte included): done {} -> {}, seen {} -> {}; text adds the \
             id's heap allocation to each",
            size_of::<String>() + 1,
            size_of::<IdKey>() + 1,
            size_of::<(String, u64)>() + 1,
            size_of::<(IdKey, u64)>() + 1,
        );
        println!(
            "{N} ids of {} bytes (heap counted at its length, a lower bound): \
             text {:.1} MB ({:.0} B/id), keys {:.1} MB ({:.0} B/id)",
            ids[0].len(),
            before as f64 / 1e6,
            before as f64 / N as f64,
            after as f64 / 1e6,
            after as f64 / N as f64,
        );
        assert!(after < before);
    }
}
