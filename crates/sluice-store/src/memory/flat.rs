//! `FlatMap`: an open-addressing map from fingerprint to value.
//!
//! Keys and values sit side by side in one array and a lookup probes linearly from the
//! key's home slot, so finding a key among millions usually costs one cache miss (a
//! SwissTable costs two: its control bytes and its buckets live apart). The keys are
//! already uniformly random fingerprints, so no hashing is needed. Deletion shifts the
//! rest of the probe run back (no tombstones), and the load stays at most three quarters,
//! which keeps runs short.

use super::table::Fingerprint;

/// Marks an empty slot; [`FlatMap`] never stores a fingerprint with `hi == 0`.
const EMPTY: u64 = 0;

pub(crate) struct FlatMap<V> {
    slots: Vec<(Fingerprint, V)>,
    len: usize,
}

impl<V> Default for FlatMap<V> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
        }
    }
}

/// A fingerprint as stored: `hi` is never zero, which marks empty slots.
fn stored(fp: &Fingerprint) -> Fingerprint {
    Fingerprint {
        lo: fp.lo,
        hi: fp.hi.max(1),
    }
}

impl<V: Default> FlatMap<V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn home(&self, fp: &Fingerprint) -> usize {
        // The mask keeps the index inside the table, whose length fits in usize.
        usize::try_from(fp.hi & self.mask() as u64).unwrap_or(0)
    }

    /// The slot holding `fp`, if any.
    fn find(&self, fp: &Fingerprint) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let fp = stored(fp);
        let mut i = self.home(&fp);
        loop {
            let (slot, _) = &self.slots[i];
            if slot.hi == EMPTY {
                return None;
            }
            if *slot == fp {
                return Some(i);
            }
            i = (i + 1) & self.mask();
        }
    }

    pub(crate) fn get(&self, fp: &Fingerprint) -> Option<&V> {
        self.find(fp).map(|i| &self.slots[i].1)
    }

    pub(crate) fn get_mut(&mut self, fp: &Fingerprint) -> Option<&mut V> {
        self.find(fp).map(|i| &mut self.slots[i].1)
    }

    /// Inserts or replaces the value of `fp`.
    pub(crate) fn insert(&mut self, fp: Fingerprint, value: V) {
        if let Some(i) = self.find(&fp) {
            self.slots[i].1 = value;
            return;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(stored(&fp), value);
        self.len += 1;
    }

    /// Puts an absent key into the first empty slot of its run.
    fn place(&mut self, fp: Fingerprint, value: V) {
        let mut i = self.home(&fp);
        while self.slots[i].0.hi != EMPTY {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = (fp, value);
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, empty_slots(capacity));
        for (fp, value) in old {
            if fp.hi != EMPTY {
                self.place(fp, value);
            }
        }
    }

    pub(crate) fn remove(&mut self, fp: &Fingerprint) -> Option<V> {
        let i = self.find(fp)?;
        Some(self.remove_at(i))
    }

    /// Empties slot `i` and shifts back the rest of its probe run, so that every key stays
    /// reachable from its home slot without tombstones.
    fn remove_at(&mut self, mut hole: usize) -> V {
        let mask = self.mask();
        let (_, value) = std::mem::take(&mut self.slots[hole]);
        self.len -= 1;
        let mut next = (hole + 1) & mask;
        while self.slots[next].0.hi != EMPTY {
            let home = self.home(&self.slots[next].0);
            // The key at `next` may move into the hole unless its home lies cyclically in
            // (hole, next]: then the hole is before its home and it must stay.
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.slots.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        value
    }

    /// Keeps the entries for which `keep` returns true. An entry may be offered twice when
    /// a removal near the end of the table pulls a wrapped one back: `keep` must give the
    /// same answer for it (or count only what it removes).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Fingerprint, &mut V) -> bool) {
        let mut i = 0;
        while i < self.slots.len() {
            let (fp, value) = &mut self.slots[i];
            if fp.hi != EMPTY && !keep(fp, value) {
                self.remove_at(i); // another entry may now sit at `i`: look again
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots
            .iter()
            .filter(|(fp, _)| fp.hi != EMPTY)
            .map(|(_, value)| value)
    }
}

fn empty_slots<V: Default>(capacity: usize) -> Vec<(Fingerprint, V)> {
    (0..capacity)
        .map(|_| (Fingerprint { lo: 0, hi: EMPTY }, V::default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn fp(hi: u64) -> Fingerprint {
        Fingerprint { lo: hi ^ 0x55, hi }
    }

    #[test]
    fn behaves_like_a_hash_map_under_random_operations() {
        let mut flat = FlatMap::<u64>::default();
        let mut model = HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct keys with colliding home slots, including hi == 0.
            let key = fp((x % 97) * 64);
            match x % 5 {
                0 | 1 => {
                    flat.insert(key, step);
                    model.insert(key.hi, step);
                }
                2 => assert_eq!(flat.remove(&key), model.remove(&key.hi)),
                3 => {
                    let cut = x % 7;
                    // By `lo`: the map stores `hi == 0` as 1, `lo` as it is.
                    flat.retain(|f, _| f.lo % 7 != cut);
                    model.retain(|hi, _| (hi ^ 0x55) % 7 != cut);
                }
                _ => assert_eq!(flat.get(&key), model.get(&key.hi)),
            }
            assert_eq!(flat.len(), model.len());
        }
        for (hi, value) in &model {
            assert_eq!(flat.get(&fp(*hi)), Some(value));
        }
        assert_eq!(flat.values().count(), model.len());
    }

    #[test]
    fn stays_at_most_three_quarters_full() {
        let mut flat = FlatMap::<u64>::default();
        for i in 1..=10_000u64 {
            flat.insert(fp(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), i);
            assert!(flat.len() * 4 <= flat.slots.len() * 3);
        }
    }
}
