//! Typed state tables: one per algorithm, so a GCRA key costs one 24-byte slot, whatever
//! the other algorithms need.

use super::flat::FlatMap;
use sluice_core::{
    Algorithm, AlgorithmKind, Concurrency, FixedWindow, Gcra, GcraState, LeaseState, LogState,
    Nanos, Policy, SlidingLog, SlidingWindow, WindowState,
};

/// A 128-bit keyed hash of a canonical key. The store keeps fingerprints, not key
/// strings: two distinct keys share state only if their fingerprints collide, which for
/// 10^9 keys happens with probability below 10^-20, and the per-store random seeds keep a
/// client from choosing keys that collide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// Picks the shard.
    pub(crate) lo: u64,
    /// Picks the slot in the shard's table.
    pub(crate) hi: u64,
}

pub(crate) type Table<V> = FlatMap<V>;

/// A stored state that knows when it expires.
pub(crate) trait Slot<S>: Default + Send {
    fn new(state: S, expires_at: Nanos) -> Self;
    fn state(&self) -> &S;
    fn state_mut(&mut self) -> &mut S;
    fn set_expires_at(&mut self, at: Nanos);
    fn expires_at(&self) -> Nanos;
}

/// GCRA's state is its own expiry (the bucket is full again at `tat`), so it is stored
/// bare.
impl Slot<Self> for GcraState {
    fn new(state: Self, _: Nanos) -> Self {
        state
    }
    fn state(&self) -> &Self {
        self
    }
    fn state_mut(&mut self) -> &mut Self {
        self
    }
    fn set_expires_at(&mut self, _: Nanos) {}
    fn expires_at(&self) -> Nanos {
        self.tat
    }
}

/// Any other state, with the expiry its policy gave it when last written.
#[derive(Debug, Default)]
pub(crate) struct Timed<S> {
    state: S,
    expires_at: Nanos,
}

impl<S: Default + Send> Slot<S> for Timed<S> {
    fn new(state: S, expires_at: Nanos) -> Self {
        Self { state, expires_at }
    }
    fn state(&self) -> &S {
        &self.state
    }
    fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }
    fn set_expires_at(&mut self, at: Nanos) {
        self.expires_at = at;
    }
    fn expires_at(&self) -> Nanos {
        self.expires_at
    }
}

/// The tables of one shard.
#[derive(Default)]
pub(crate) struct Tables {
    pub(crate) gcra: Table<GcraState>,
    pub(crate) fixed: Table<Timed<WindowState>>,
    pub(crate) sliding: Table<Timed<WindowState>>,
    pub(crate) log: Table<Timed<LogState>>,
    pub(crate) lease: Table<Timed<LeaseState>>,
}

/// Applies a generic operation to each table in turn.
macro_rules! each_table {
    ($tables:expr, |$t:ident| $body:expr) => {{
        {
            let $t = &mut $tables.gcra;
            $body;
        }
        {
            let $t = &mut $tables.fixed;
            $body;
        }
        {
            let $t = &mut $tables.sliding;
            $body;
        }
        {
            let $t = &mut $tables.log;
            $body;
        }
        {
            let $t = &mut $tables.lease;
            $body;
        }
    }};
}

impl Tables {
    pub(crate) fn len(&self) -> usize {
        self.gcra.len() + self.fixed.len() + self.sliding.len() + self.log.len() + self.lease.len()
    }

    /// Drops every state that decides like a fresh one at `now`; returns how many.
    pub(crate) fn remove_expired(&mut self, now: Nanos) -> usize {
        let before = self.len();
        each_table!(self, |t| t.retain(|_, slot| slot.expires_at() > now));
        before - self.len()
    }

    /// Drops the states closest to expiring until at most `keep` remain; returns how many.
    pub(crate) fn remove_soonest_expiring(&mut self, keep: usize) -> usize {
        let len = self.len();
        if len <= keep {
            return 0;
        }
        let mut expiries = Vec::with_capacity(len);
        each_table!(self, |t| expiries
            .extend(t.values().map(|s| s.expires_at())));
        let cut = len - keep;
        let (_, threshold, _) = expiries.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        let mut to_remove = cut;
        // Remove strictly earlier expiries first, then ties, until `cut` are gone.
        for strict in [true, false] {
            each_table!(self, |t| t.retain(|_, slot| {
                let at = slot.expires_at();
                let hit = if strict {
                    at < threshold
                } else {
                    at == threshold
                };
                if hit && to_remove > 0 {
                    to_remove -= 1;
                    false
                } else {
                    true
                }
            }));
        }
        len - self.len()
    }

    pub(crate) fn remove(&mut self, kind: AlgorithmKind, fp: &Fingerprint) {
        match kind {
            AlgorithmKind::Gcra => drop(self.gcra.remove(fp)),
            AlgorithmKind::FixedWindow => drop(self.fixed.remove(fp)),
            AlgorithmKind::SlidingWindow => drop(self.sliding.remove(fp)),
            AlgorithmKind::SlidingLog => drop(self.log.remove(fp)),
            AlgorithmKind::Concurrency => drop(self.lease.remove(fp)),
        }
    }
}

/// An algorithm together with the table its states live in.
pub(crate) trait Stored: Algorithm {
    type Slot: Slot<Self::State>;
    fn table(tables: &mut Tables) -> &mut Table<Self::Slot>;

    fn slot_for(policy: &Policy, state: Self::State) -> Self::Slot {
        let expires_at = Self::expires_at(policy, &state);
        Self::Slot::new(state, expires_at)
    }
}

impl Stored for Gcra {
    type Slot = GcraState;
    fn table(tables: &mut Tables) -> &mut Table<GcraState> {
        &mut tables.gcra
    }
}

impl Stored for FixedWindow {
    type Slot = Timed<WindowState>;
    fn table(tables: &mut Tables) -> &mut Table<Self::Slot> {
        &mut tables.fixed
    }
}

impl Stored for SlidingWindow {
    type Slot = Timed<WindowState>;
    fn table(tables: &mut Tables) -> &mut Table<Self::Slot> {
        &mut tables.sliding
    }
}

impl Stored for SlidingLog {
    type Slot = Timed<LogState>;
    fn table(tables: &mut Tables) -> &mut Table<Self::Slot> {
        &mut tables.log
    }
}

impl Stored for Concurrency {
    type Slot = Timed<LeaseState>;
    fn table(tables: &mut Tables) -> &mut Table<Self::Slot> {
        &mut tables.lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gcra_entry_is_24_bytes() {
        assert_eq!(size_of::<(Fingerprint, GcraState)>(), 24);
    }

    #[test]
    fn soonest_expiring_go_first() {
        let mut tables = Tables::default();
        for i in 0..100u64 {
            let fp = Fingerprint { lo: i, hi: i };
            tables.gcra.insert(fp, GcraState { tat: Nanos::new(i) });
        }
        assert_eq!(tables.remove_soonest_expiring(60), 40);
        assert!(tables.gcra.values().all(|s| s.tat >= Nanos::new(40)));
        assert_eq!(tables.remove_expired(Nanos::new(49)), 10);
        assert_eq!(tables.len(), 50);
    }
}
