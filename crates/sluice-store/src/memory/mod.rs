//! `MemoryStore`: the embedded default store, a sharded map from key fingerprint to state.
//!
//! Each shard is a spin-then-yield lock over one table per algorithm; a decision holds one
//! shard's lock for a table lookup (usually one cache miss) and a few arithmetic operations. A request checked against several
//! limits locks their shards in ascending order (no deadlocks), decides on copies, and
//! writes back only if every limit allowed. The number of keys is bounded: when a shard is
//! full, states that decide like fresh ones go first, then those closest to expiring.

mod flat;
mod lock;
mod table;

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, ready};
use std::hash::BuildHasher;
use std::time::Duration;

use sluice_core::{
    Algorithm, AlgorithmKind, Clock, Decision, GcraState, Key, LeaseState, LogState,
    MonotonicClock, Nanos, Policy, Verdict, WindowState,
};

use crate::dispatch::with_algorithm;
use crate::store::{Hold, Immediate, Limit, Reservation, Store};
use lock::ShardLock;
use spin::mutex::SpinMutexGuard as ShardGuard;
use table::{Fingerprint, Slot, Stored, Tables};

/// Sizing of a [`MemoryStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Most keys held at once (across all algorithms), rounded up to a multiple of the
    /// shard count. A flood of distinct keys cannot grow memory past this.
    pub max_keys: usize,
    /// Number of shards (rounded up to a power of two).
    pub shards: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_keys: 4 << 20,
            shards: 64,
        }
    }
}

/// Counters of a [`MemoryStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Keys held now.
    pub keys: usize,
    /// States dropped because they decided like fresh ones (no information lost).
    pub evicted_expired: u64,
    /// Live states dropped to stay under `max_keys`: those keys restart with full capacity.
    pub evicted_live: u64,
}

#[derive(Default)]
struct Shard {
    tables: Tables,
    evicted_expired: u64,
    evicted_live: u64,
}

/// Keeps each shard's lock on its own cache lines (two, against adjacent-line prefetch).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// The in-memory [`Store`]: one process, no dependencies, the default.
pub struct MemoryStore<C: Clock = MonotonicClock> {
    shards: Box<[Padded<ShardLock<Shard>>]>,
    shard_mask: u64,
    max_keys_per_shard: usize,
    seeds: (
        foldhash::quality::RandomState,
        foldhash::quality::RandomState,
    ),
    clock: C,
}

impl MemoryStore<MonotonicClock> {
    /// A store with the default configuration and the monotonic clock.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default(), MonotonicClock::new())
    }
}

impl Default for MemoryStore<MonotonicClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> MemoryStore<C> {
    /// A store with the default configuration reading `clock`.
    pub fn with_clock(clock: C) -> Self {
        Self::with_config(MemoryConfig::default(), clock)
    }

    /// A store sized by `config`, reading `clock`.
    pub fn with_config(config: MemoryConfig, clock: C) -> Self {
        let shards = config.shards.clamp(1, 1 << 16).next_power_of_two();
        let max_keys_per_shard = config.max_keys.div_ceil(shards).max(1);
        Self {
            shards: (0..shards).map(|_| Padded::default()).collect(),
            shard_mask: shards as u64 - 1,
            max_keys_per_shard,
            seeds: Default::default(),
            clock,
        }
    }

    /// The store's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Current counters.
    pub fn stats(&self) -> MemoryStats {
        let mut stats = MemoryStats::default();
        for shard in self.shards.iter() {
            let shard = lock(&shard.0);
            stats.keys += shard.tables.len();
            stats.evicted_expired += shard.evicted_expired;
            stats.evicted_live += shard.evicted_live;
        }
        stats
    }

    /// Drops every state that decides like a fresh one; returns how many. Nothing runs in
    /// the background: the server (or the application) calls this periodically.
    pub fn remove_expired(&self) -> usize {
        let now = self.clock.now();
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = lock(&shard.0);
                let removed = shard.tables.remove_expired(now);
                shard.evicted_expired += removed as u64;
                removed
            })
            .sum()
    }

    /// Checks one limit (the synchronous core of [`Store::check`]).
    pub fn check_now(&self, limit: Limit<'_>, cost: u64) -> Decision {
        let now = self.clock.now();
        let fp = self.fingerprint(limit.key, limit.policy);
        let mut shard = self.lock_shard(&fp);
        with_algorithm!(limit.policy.algorithm(), A => {
            check_in::<A>(&mut shard, self.max_keys_per_shard, fp, limit.policy, cost, now)
        })
    }

    /// Checks several limits all or nothing (the synchronous core of [`Store::check_all`]).
    pub fn check_all_now(&self, limits: &[Limit<'_>], cost: u64) -> Verdict {
        let (verdict, _, _) = self.transact(limits, |scratch, policy, now| {
            with_algorithm!(policy.algorithm(), A => {
                let state = A::scratch_mut(scratch);
                let decision = A::decide(policy, state, cost, now);
                let ticket = decision.allowed.then(|| A::apply(policy, state, cost, now, now));
                (decision, ticket)
            })
        });
        verdict
    }

    /// Reserves on several limits all or nothing (the synchronous core of
    /// [`Store::reserve`]).
    pub fn reserve_now(&self, limits: &[Limit<'_>], cost: u64, max_wait: Duration) -> Reservation {
        let (verdict, tickets, now) = self.transact(limits, |scratch, policy, now| {
            with_algorithm!(policy.algorithm(), A => {
                let state = A::scratch_mut(scratch);
                let plan = A::plan(policy, state, cost, now, max_wait);
                let ticket = plan
                    .decision
                    .allowed
                    .then(|| A::apply(policy, state, cost, plan.ready_at, now));
                (plan.decision, ticket)
            })
        });
        Reservation::new(limits, verdict, tickets, now)
    }

    /// Gives back what a reservation took (the synchronous core of [`Store::cancel`]).
    pub fn cancel_now(&self, reservation: &Reservation) {
        self.adjust(reservation, |_| 0);
    }

    /// Settles a reservation to `actual` units (the synchronous core of [`Store::settle`]).
    pub fn settle_now(&self, reservation: &Reservation, actual: u64) {
        self.adjust(reservation, |_| actual);
    }

    /// The current state of one limit as a decision for zero units.
    pub fn peek_now(&self, limit: Limit<'_>) -> Decision {
        let now = self.clock.now();
        let fp = self.fingerprint(limit.key, limit.policy);
        let mut shard = self.lock_shard(&fp);
        with_algorithm!(limit.policy.algorithm(), A => {
            let state = A::load(&mut shard.tables, &fp);
            A::decide(limit.policy, &state, 0, now)
        })
    }

    /// Forgets one limit's state.
    pub fn reset_now(&self, limit: Limit<'_>) {
        let fp = self.fingerprint(limit.key, limit.policy);
        self.lock_shard(&fp)
            .tables
            .remove(limit.policy.algorithm(), &fp);
    }

    /// The identity of a limit's state: its key and period (the algorithm picks the
    /// table). So `10/s` and `1000/h` on one key count separately, while a hot reload that
    /// changes only a limit's count keeps its state.
    fn fingerprint(&self, key: &Key, policy: &Policy) -> Fingerprint {
        let id = (key.as_str(), policy.period_nanos());
        Fingerprint {
            lo: self.seeds.0.hash_one(id),
            hi: self.seeds.1.hash_one(id),
        }
    }

    fn shard_index(&self, fp: &Fingerprint) -> usize {
        // The mask keeps the index below the shard count, which fits in usize.
        usize::try_from(fp.lo & self.shard_mask).unwrap_or(0)
    }

    fn lock_shard(&self, fp: &Fingerprint) -> ShardGuard<'_, Shard> {
        lock(&self.shards[self.shard_index(fp)].0)
    }

    /// Runs `step` for each limit in order on scratch copies of their states, with every
    /// shard involved locked; writes the copies back only if every step allowed.
    fn transact<F>(
        &self,
        limits: &[Limit<'_>],
        mut step: F,
    ) -> (Verdict, Vec<Option<sluice_core::Ticket>>, Nanos)
    where
        F: FnMut(&mut AnyState, &Policy, Nanos) -> (Decision, Option<sluice_core::Ticket>),
    {
        let fps: Vec<Fingerprint> = limits
            .iter()
            .map(|l| self.fingerprint(l.key, l.policy))
            .collect();
        let mut order: Vec<usize> = fps.iter().map(|fp| self.shard_index(fp)).collect();
        order.sort_unstable();
        order.dedup();
        // Ascending order: every caller locks shards in the same order, so none deadlock.
        let mut guards: Vec<ShardGuard<'_, Shard>> =
            order.iter().map(|&i| lock(&self.shards[i].0)).collect();
        let now = self.clock.now();
        let shard_of =
            |fp: &Fingerprint| -> usize { order.binary_search(&self.shard_index(fp)).unwrap_or(0) };

        // (kind, fingerprint, guard position, state) per distinct limit state.
        let mut scratch: Vec<(AlgorithmKind, Fingerprint, usize, AnyState)> = Vec::new();
        let mut decisions = Vec::with_capacity(limits.len());
        let mut tickets = Vec::with_capacity(limits.len());
        for (limit, fp) in limits.iter().zip(&fps) {
            let kind = limit.policy.algorithm();
            let slot = match scratch
                .iter()
                .position(|(k, f, _, _)| *k == kind && f == fp)
            {
                Some(slot) => slot,
                None => {
                    let g = shard_of(fp);
                    let state = with_algorithm!(kind, A => {
                        A::into_any(A::load(&mut guards[g].tables, fp))
                    });
                    scratch.push((kind, *fp, g, state));
                    scratch.len() - 1
                }
            };
            let (decision, ticket) = step(&mut scratch[slot].3, limit.policy, now);
            decisions.push(decision);
            tickets.push(ticket);
        }
        let verdict = Verdict::from_decisions(decisions);
        if verdict.allowed {
            for (limit, fp) in limits.iter().zip(&fps) {
                let kind = limit.policy.algorithm();
                if let Some(pos) = scratch
                    .iter()
                    .position(|(k, f, _, _)| *k == kind && f == fp)
                {
                    let (_, _, g, state) = scratch.swap_remove(pos);
                    let shard = &mut *guards[g];
                    with_algorithm!(kind, A => {
                        if let Some(state) = A::from_any(state) {
                            A::store(shard, self.max_keys_per_shard, fp, limit.policy, state, now);
                        }
                    });
                }
            }
        }
        (verdict, tickets, now)
    }

    /// Sets each hold of `reservation` to the cost `actual(hold)` says; zero gives the whole
    /// hold back (and releases a lease).
    fn adjust(&self, reservation: &Reservation, actual: impl Fn(&Hold) -> u64) {
        let now = self.clock.now();
        for hold in &reservation.holds {
            let fp = self.fingerprint(&hold.key, &hold.policy);
            let mut shard = self.lock_shard(&fp);
            let policy = &hold.policy;
            let target = actual(hold);
            with_algorithm!(policy.algorithm(), A => {
                let table = A::table(&mut shard.tables);
                if let Some(slot) = table.get_mut(&fp) {
                    if target == 0 {
                        A::refund(policy, slot.state_mut(), &hold.ticket, hold.ticket.cost, now);
                    } else {
                        A::settle(policy, slot.state_mut(), &hold.ticket, target, now);
                    }
                    let expires_at = A::expires_at(policy, slot.state());
                    slot.set_expires_at(expires_at);
                } else if target > hold.ticket.cost {
                    // The state was dropped (expired or evicted); the extra usage still counts.
                    let mut state = <A as Algorithm>::State::default();
                    A::charge(policy, &mut state, &hold.ticket, target - hold.ticket.cost, now);
                    A::store(&mut shard, self.max_keys_per_shard, &fp, policy, state, now);
                }
            });
        }
    }
}

fn lock<T>(shard: &ShardLock<T>) -> ShardGuard<'_, T> {
    shard.lock()
}

/// The single-limit check inside one locked shard: no copies, no allocation for keys
/// already present.
fn check_in<A: Transact>(
    shard: &mut Shard,
    max_keys: usize,
    fp: Fingerprint,
    policy: &Policy,
    cost: u64,
    now: Nanos,
) -> Decision {
    if let Some(slot) = A::table(&mut shard.tables).get_mut(&fp) {
        let decision = A::check(policy, slot.state_mut(), cost, now);
        if decision.allowed {
            let expires_at = A::expires_at(policy, slot.state());
            slot.set_expires_at(expires_at);
        }
        return decision;
    }
    let mut state = <A as Algorithm>::State::default();
    let decision = A::check(policy, &mut state, cost, now);
    if decision.allowed {
        A::store(shard, max_keys, &fp, policy, state, now);
    }
    decision
}

/// A copy of any algorithm's state, for deciding several limits before writing any.
#[derive(Debug)]
enum AnyState {
    Gcra(GcraState),
    Window(WindowState),
    Log(LogState),
    Lease(LeaseState),
}

/// Moves states between a shard's tables and the scratch space of a transaction.
trait Transact: Stored {
    fn into_any(state: Self::State) -> AnyState;
    fn from_any(any: AnyState) -> Option<Self::State>;
    fn scratch_mut(any: &mut AnyState) -> &mut Self::State;

    fn load(tables: &mut Tables, fp: &Fingerprint) -> Self::State {
        Self::table(tables)
            .get(fp)
            .map(|slot| slot.state().clone())
            .unwrap_or_default()
    }

    /// Writes `state` back; a state that decides like a fresh one is dropped instead.
    fn store(
        shard: &mut Shard,
        max_keys: usize,
        fp: &Fingerprint,
        policy: &Policy,
        state: Self::State,
        now: Nanos,
    ) {
        let slot = Self::slot_for(policy, state);
        let table = Self::table(&mut shard.tables);
        if slot.expires_at() <= now {
            table.remove(fp);
            return;
        }
        if let Some(existing) = table.get_mut(fp) {
            *existing = slot;
            return;
        }
        if shard.tables.len() >= max_keys {
            make_room(shard, max_keys, now);
        }
        Self::table(&mut shard.tables).insert(*fp, slot);
    }
}

/// Frees at least an eighth of a full shard: expired states first, then the live states
/// closest to expiring. Amortised O(1) per insert.
fn make_room(shard: &mut Shard, max_keys: usize, now: Nanos) {
    shard.evicted_expired += shard.tables.remove_expired(now) as u64;
    let keep = max_keys - max_keys.div_ceil(8);
    shard.evicted_live += shard.tables.remove_soonest_expiring(keep) as u64;
}

macro_rules! transact_impl {
    ($A:ty, $variant:ident) => {
        impl Transact for $A {
            fn into_any(state: Self::State) -> AnyState {
                AnyState::$variant(state)
            }
            fn from_any(any: AnyState) -> Option<Self::State> {
                match any {
                    AnyState::$variant(state) => Some(state),
                    _ => None,
                }
            }
            fn scratch_mut(any: &mut AnyState) -> &mut Self::State {
                if !matches!(any, AnyState::$variant(_)) {
                    *any = AnyState::$variant(Default::default());
                }
                match any {
                    AnyState::$variant(state) => state,
                    _ => unreachable!("just set to this variant"),
                }
            }
        }
    };
}
transact_impl!(sluice_core::Gcra, Gcra);
transact_impl!(sluice_core::FixedWindow, Window);
transact_impl!(sluice_core::SlidingWindow, Window);
transact_impl!(sluice_core::SlidingLog, Log);
transact_impl!(sluice_core::Concurrency, Lease);

impl<C: Clock> Store for MemoryStore<C> {
    type Error = Infallible;

    fn check(
        &self,
        limit: Limit<'_>,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Infallible>> + Send {
        ready(Ok(self.check_now(limit, cost)))
    }

    fn check_all(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
    ) -> impl Future<Output = Result<Verdict, Infallible>> + Send {
        ready(Ok(self.check_all_now(limits, cost)))
    }

    fn peek(&self, limit: Limit<'_>) -> impl Future<Output = Result<Decision, Infallible>> + Send {
        ready(Ok(self.peek_now(limit)))
    }

    fn reserve(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> impl Future<Output = Result<Reservation, Infallible>> + Send {
        ready(Ok(self.reserve_now(limits, cost, max_wait)))
    }

    fn cancel(
        &self,
        reservation: &Reservation,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        self.cancel_now(reservation);
        ready(Ok(()))
    }

    fn settle(
        &self,
        reservation: &Reservation,
        actual: u64,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        self.settle_now(reservation, actual);
        ready(Ok(()))
    }

    fn reset(&self, limit: Limit<'_>) -> impl Future<Output = Result<(), Infallible>> + Send {
        self.reset_now(limit);
        ready(Ok(()))
    }

    fn immediate(&self) -> Option<&dyn Immediate> {
        Some(self)
    }
}

// Each method is the inherent one of the same name (inherent methods win the lookup).
impl<C: Clock> Immediate for MemoryStore<C> {
    fn check_now(&self, limit: Limit<'_>, cost: u64) -> Decision {
        Self::check_now(self, limit, cost)
    }

    fn check_all_now(&self, limits: &[Limit<'_>], cost: u64) -> Verdict {
        Self::check_all_now(self, limits, cost)
    }

    fn reserve_now(&self, limits: &[Limit<'_>], cost: u64, max_wait: Duration) -> Reservation {
        Self::reserve_now(self, limits, cost, max_wait)
    }

    fn cancel_now(&self, reservation: &Reservation) {
        Self::cancel_now(self, reservation);
    }
}

impl<C: Clock + fmt::Debug> fmt::Debug for MemoryStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("max_keys_per_shard", &self.max_keys_per_shard)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
