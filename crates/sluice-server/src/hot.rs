//! Hot keys: the keys decided most often over the last minute or two, and the keys refused
//! most often, whatever the store (memory, Redis, a cluster).
//!
//! The limiter sees every decision with its key, so it samples here rather than in a store.
//! A recorded request takes one lock to update a Space-Saving summary (Metwally et al.) of
//! at most [`CAPACITY`] keys, in two generations of [`WINDOW`] each. At a low request rate
//! every request is recorded (exact counts, and a key seen a few times shows at once);
//! once a second the server [adapts](HotKeys::adapt) the sampling to last second's rate, so
//! that about [`BUDGET`] requests a second are recorded: one in 2, 4, ... up to one in
//! 2^[`MAX_SHIFT`], each counting for as many. An unsampled request costs a thread-local
//! increment and a multiply-xorshift, with no lock and no allocation.
//! Keys are client-controlled, so both the table and the text kept per key are bounded: a key
//! longer than [`MAX_KEY_LEN`] bytes is kept cut (its identity is a keyed hash of all of it).
//!
//! Only refusals by an enforcing limit count as refusals: a shadow-mode limit over its
//! limit refused nothing, and counts apart, as `shadow_refusals`.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sluice_core::{Key, Nanos};

/// Requests recorded per second, about, once the rate is above it.
pub(crate) const BUDGET: u64 = 2048;

/// The sparsest sampling: one request in `2^MAX_SHIFT`.
pub(crate) const MAX_SHIFT: u32 = 8;

/// Keys tracked per generation.
pub(crate) const CAPACITY: usize = 128;

/// Longest key text kept, in bytes; longer keys are cut at a character boundary and end
/// with `…`.
pub(crate) const MAX_KEY_LEN: usize = 256;

/// Length of one generation: the top covers the current and the previous one.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// What one limit decided for one descriptor's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Within the limit.
    Allowed,
    /// Refused by an enforcing limit.
    Refused,
    /// Over a shadow-mode limit: counted, not refused.
    ShadowRefused,
}

impl Seen {
    /// The outcome of a decision that was `allowed` or not by a limit in `shadow` mode or not.
    pub(crate) const fn of(allowed: bool, shadow: bool) -> Self {
        match (allowed, shadow) {
            (true, _) => Self::Allowed,
            (false, false) => Self::Refused,
            (false, true) => Self::ShadowRefused,
        }
    }
}

/// A key's recent traffic, estimated from samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HotKey {
    /// The key's canonical text (cut to [`MAX_KEY_LEN`] bytes).
    pub key: String,
    /// Decisions on it over the last one to two windows (an estimate: sampled, and may
    /// overcount by the smallest count tracked when it entered the table).
    pub hits: u64,
    /// How many of them an enforcing limit refused.
    pub refusals: u64,
    /// How many of them a shadow-mode limit would have refused (they passed).
    pub shadow_refusals: u64,
}

/// How [`HotKeys::top`] ranks keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rank {
    /// By decisions.
    Hits,
    /// By enforced refusals (keys never refused are left out).
    Refusals,
}

/// The key text kept for display: the key itself (shared, no copy) or its first bytes.
#[derive(Debug)]
enum Shown {
    Key(Key),
    Cut(Box<str>),
}

impl Shown {
    fn of(key: &Key) -> Self {
        let text = key.as_str();
        if text.len() <= MAX_KEY_LEN {
            return Self::Key(key.clone());
        }
        let mut end = MAX_KEY_LEN - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self::Cut(format!("{}…", &text[..end]).into_boxed_str())
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Key(key) => key.as_str(),
            Self::Cut(text) => text,
        }
    }
}

#[derive(Debug)]
struct Counter {
    id: u64,
    shown: Shown,
    hits: u64,
    refusals: u64,
    shadow_refusals: u64,
}

impl Counter {
    fn add(&mut self, seen: Seen, weight: u64) {
        self.hits += weight;
        match seen {
            Seen::Allowed => {}
            Seen::Refused => self.refusals += weight,
            Seen::ShadowRefused => self.shadow_refusals += weight,
        }
    }
}

#[derive(Debug, Default)]
struct Generations {
    current: Vec<Counter>,
    previous: Vec<Counter>,
    window_start: u64,
}

impl Generations {
    fn rotate(&mut self, window: u64, now: Nanos) {
        let start = now.as_u64() - now.as_u64() % window;
        if start == self.window_start {
            return;
        }
        if self.window_start.saturating_add(window) == start {
            self.previous = std::mem::take(&mut self.current);
        } else {
            self.previous.clear();
            self.current.clear();
        }
        self.window_start = start;
    }
}

thread_local! {
    /// Requests seen by this thread, for sampling without a shared counter.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// The hot-key tracker of one limiter.
#[derive(Debug)]
pub(crate) struct HotKeys {
    /// Log2 of the sampling interval now.
    shift: AtomicU32,
    /// The request count at the last [`HotKeys::adapt`].
    adapted_at: AtomicU64,
    capacity: usize,
    window: u64,
    hasher: RandomState,
    table: Mutex<Generations>,
}

impl Default for HotKeys {
    fn default() -> Self {
        Self::new(CAPACITY, WINDOW)
    }
}

impl HotKeys {
    /// A tracker keeping `capacity` keys per generation of `window`, recording every request
    /// until [`adapt`](Self::adapt) says otherwise.
    pub(crate) fn new(capacity: usize, window: Duration) -> Self {
        Self {
            shift: AtomicU32::new(0),
            adapted_at: AtomicU64::new(0),
            capacity: capacity.max(1),
            window: sluice_core::time::duration_nanos(window).max(1),
            hasher: RandomState::new(),
            table: Mutex::default(),
        }
    }

    /// Sets the sampling from the requests decided so far (a cumulative count), called
    /// about once a second: every request while the last interval had at most [`BUDGET`],
    /// else one in the power of two that brings it near [`BUDGET`].
    pub(crate) fn adapt(&self, requests_so_far: u64) {
        let previous = self.adapted_at.swap(requests_so_far, Ordering::Relaxed);
        let rate = requests_so_far.saturating_sub(previous);
        let shift = rate
            .div_ceil(BUDGET)
            .next_power_of_two()
            .trailing_zeros()
            .min(MAX_SHIFT);
        self.shift.store(shift, Ordering::Relaxed);
    }

    /// Whether to record this request: the weight to record it with, if so. Pseudo-random in
    /// the thread's request count (a fixed mix, not the count itself), so that traffic
    /// cycling over a few keys is not always sampled on the same one.
    pub(crate) fn sample(&self) -> Option<u64> {
        let shift = self.shift.load(Ordering::Relaxed);
        if shift == 0 {
            return Some(1);
        }
        let n = SEEN.with(|seen| {
            let n = seen.get().wrapping_add(1);
            seen.set(n);
            n
        });
        let mask = (1u64 << shift) - 1;
        (mix(n) & mask == 0).then_some(1u64 << shift)
    }

    /// Records the keys of one sampled request, each with what its limit decided, counting
    /// for `weight` requests (what [`sample`](Self::sample) said).
    pub(crate) fn record<'k>(
        &self,
        now: Nanos,
        weight: u64,
        keys: impl IntoIterator<Item = (&'k Key, Seen)>,
    ) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.rotate(self.window, now);
        for (key, seen) in keys {
            let id = self.hasher.hash_one(key.as_str());
            self.record_one(&mut table.current, id, key, seen, weight);
        }
    }

    fn record_one(&self, current: &mut Vec<Counter>, id: u64, key: &Key, seen: Seen, weight: u64) {
        if let Some(counter) = current.iter_mut().find(|c| c.id == id) {
            counter.add(seen, weight);
            return;
        }
        let mut counter = Counter {
            id,
            shown: Shown::of(key),
            hits: 0,
            refusals: 0,
            shadow_refusals: 0,
        };
        if current.len() < self.capacity {
            counter.add(seen, weight);
            current.push(counter);
            return;
        }
        // Space-Saving: the newcomer takes over the smallest counter and inherits its hits
        // (never its refusals, which belong to the key that had them).
        if let Some(min) = current.iter_mut().min_by_key(|c| c.hits) {
            counter.hits = min.hits;
            counter.add(seen, weight);
            *min = counter;
        }
    }

    /// The `n` hottest keys over the current and the previous window at `now`, hottest (or
    /// most refused) first; ties by key text.
    pub(crate) fn top(&self, n: usize, rank: Rank, now: Nanos) -> Vec<HotKey> {
        let mut all: Vec<(u64, HotKey)> = Vec::new();
        {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            table.rotate(self.window, now);
            for c in table.previous.iter().chain(&table.current) {
                match all.iter_mut().find(|(id, _)| *id == c.id) {
                    Some((_, hot)) => {
                        hot.hits += c.hits;
                        hot.refusals += c.refusals;
                        hot.shadow_refusals += c.shadow_refusals;
                    }
                    None => all.push((
                        c.id,
                        HotKey {
                            key: c.shown.as_str().to_owned(),
                            hits: c.hits,
                            refusals: c.refusals,
                            shadow_refusals: c.shadow_refusals,
                        },
                    )),
                }
            }
        }
        let mut all: Vec<HotKey> = all.into_iter().map(|(_, hot)| hot).collect();
        let by = |k: &HotKey| match rank {
            Rank::Hits => k.hits,
            Rank::Refusals => k.refusals,
        };
        if rank == Rank::Refusals {
            all.retain(|k| k.refusals > 0);
        }
        all.sort_by(|a, b| by(b).cmp(&by(a)).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }
}

/// splitmix64's finaliser: a cheap bijective scramble of the request count.
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> Key {
        Key::new("api", [("user", user)]).unwrap()
    }

    fn at(secs: u64) -> Nanos {
        Nanos::new(secs * 1_000_000_000)
    }

    #[test]
    fn counts_hits_enforced_and_shadow_refusals_apart() {
        let hot = HotKeys::new(8, WINDOW);
        let (a, b) = (key("a"), key("b"));
        for _ in 0..3 {
            hot.record(at(1), 1, [(&a, Seen::Allowed)]);
        }
        hot.record(at(1), 1, [(&a, Seen::Refused), (&b, Seen::ShadowRefused)]);
        hot.record(at(2), 1, [(&b, Seen::ShadowRefused)]);
        let top = hot.top(10, Rank::Hits, at(2));
        assert_eq!(
            top,
            [
                HotKey {
                    key: "api|user=a".to_owned(),
                    hits: 4,
                    refusals: 1,
                    shadow_refusals: 0
                },
                HotKey {
                    key: "api|user=b".to_owned(),
                    hits: 2,
                    refusals: 0,
                    shadow_refusals: 2
                },
            ]
        );
        let refused = hot.top(10, Rank::Refusals, at(2));
        assert_eq!(
            refused.len(),
            1,
            "a shadow refusal refused nothing: {refused:?}"
        );
        assert_eq!(refused[0].key, "api|user=a");
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_heavy_hitter() {
        let hot = HotKeys::new(8, WINDOW);
        let heavy = key("heavy");
        for i in 0..10_000 {
            hot.record(at(1), 1, [(&key(&format!("cold{i}")), Seen::Allowed)]);
            if i % 4 == 0 {
                hot.record(at(1), 1, [(&heavy, Seen::Refused)]);
            }
        }
        let top = hot.top(usize::MAX, Rank::Hits, at(1));
        assert_eq!(top.len(), 8);
        assert_eq!(top[0].key, "api|user=heavy");
        assert_eq!(top[0].refusals, 2_500);
        assert_eq!(hot.top(1, Rank::Refusals, at(1))[0].key, "api|user=heavy");
    }

    #[test]
    fn long_keys_are_cut_but_told_apart() {
        let hot = HotKeys::new(8, WINDOW);
        let entries = |last: &str| -> Vec<(String, String)> {
            (0..15)
                .map(|i| (format!("k{i}"), "v".repeat(60)))
                .chain([("last".to_owned(), last.to_owned())])
                .collect()
        };
        let long = |last: &str| {
            let entries = entries(last);
            Key::new("api", entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
        };
        let (x, y) = (long("x"), long("y"));
        assert!(x.as_str().len() > MAX_KEY_LEN);
        hot.record(at(1), 1, [(&x, Seen::Allowed), (&y, Seen::Allowed)]);
        hot.record(at(1), 1, [(&x, Seen::Allowed)]);
        let top = hot.top(10, Rank::Hits, at(1));
        assert_eq!(top.len(), 2, "two keys with the same first bytes");
        assert_eq!((top[0].hits, top[1].hits), (2, 1));
        for k in &top {
            assert!(
                k.key.len() <= MAX_KEY_LEN && k.key.ends_with('…'),
                "{}",
                k.key
            );
        }
    }

    #[test]
    fn old_windows_are_forgotten() {
        let hot = HotKeys::new(8, Duration::from_secs(60));
        let a = key("a");
        hot.record(at(10), 1, [(&a, Seen::Refused)]);
        assert_eq!(
            hot.top(10, Rank::Hits, at(70)).len(),
            1,
            "the previous window counts"
        );
        assert!(hot.top(10, Rank::Hits, at(130)).is_empty());
    }

    #[test]
    fn sampling_follows_the_rate_without_cycles() {
        let hot = HotKeys::default();
        assert_eq!(hot.sample(), Some(1), "everything until adapted");
        hot.adapt(1_000);
        hot.adapt(1_000 + BUDGET);
        assert_eq!(hot.sample(), Some(1), "still everything at the budget");
        hot.adapt(1_000 + BUDGET + 16 * BUDGET);
        let picks: Vec<Option<u64>> = (0..16_000).map(|_| hot.sample()).collect();
        assert!(
            picks.iter().flatten().all(|w| *w == 16),
            "each counts for 16"
        );
        let sampled = picks.iter().flatten().count();
        assert!((800..1200).contains(&sampled), "{sampled} of 16000");
        // Two keys in turn: both get sampled.
        let even = picks.iter().step_by(2).flatten().count();
        assert!(even > 300 && sampled - even > 300, "{even} of {sampled}");
        // Far above the budget: no sparser than one in 2^MAX_SHIFT.
        hot.adapt(u64::MAX);
        let weights: Vec<u64> = (0..100_000).filter_map(|_| hot.sample()).collect();
        assert!(!weights.is_empty() && weights.iter().all(|w| *w == 1 << MAX_SHIFT));
        // Quiet again: everything.
        hot.adapt(u64::MAX);
        assert_eq!(hot.sample(), Some(1));
    }
}
