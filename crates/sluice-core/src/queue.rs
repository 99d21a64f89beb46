//! A line of waiters for a limit: who is served next, who is turned away when the line is
//! full, and who has waited past their deadline. Pure: every method that needs the time
//! takes `now`, and nothing here waits.
//!
//! # Order
//!
//! [`Queue::pop`] serves, in this order:
//!
//! 1. the highest priority first (a newcomer of a higher priority goes before lower ones
//!    already waiting);
//! 2. within a priority, tenants in turns: the tenant served least recently goes next, a
//!    tenant that starts waiting joins the end of the round, and no tenant (`None`) is a
//!    tenant of its own;
//! 3. within a tenant, first come, first served.
//!
//! # A full line
//!
//! At most [`QueueConfig::max_length`] wait. A newcomer to a full line is handled by the
//! [`Overflow`] strategy: turned away ([`Overflow::RejectNew`]), or let in while the
//! longest-waiting waiter is dropped ([`Overflow::DropOldest`]), or let in while the newest
//! waiter of the lowest priority is evicted, if that priority is below the newcomer's
//! ([`Overflow::EvictLowestPriority`]; otherwise the newcomer is turned away). A paused
//! line grants nothing and keeps its waiters; a newcomer to a paused line that is full is
//! turned away as [`Refusal::Paused`], never by evicting another.
//!
//! # Deadlines
//!
//! Each waiter has a deadline; [`Queue::expire`] takes out those whose deadline has come,
//! and [`Queue::next_deadline`] says when to look next. A waiter whose deadline has passed
//! is still served by [`Queue::pop`] until it is expired: the caller decides when to clean
//! up (before serving, typically).
//!
//! ```
//! use sluice_core::Nanos;
//! use sluice_core::queue::{Overflow, Queue, QueueConfig, Refusal};
//!
//! let mut line = Queue::new(QueueConfig { max_length: 3, overflow: Overflow::RejectNew });
//! let now = Nanos::new(0);
//! let later = Nanos::new(10);
//! line.push(0, Some("a".into()), later, "a1", now).unwrap();
//! line.push(0, Some("a".into()), later, "a2", now).unwrap();
//! line.push(0, Some("b".into()), later, "b1", now).unwrap();
//! assert_eq!(line.push(5, None, later, "urgent", now).unwrap_err(), Refusal::Overflow);
//! // Tenants take turns: a, b, then a again.
//! let served: Vec<_> = std::iter::from_fn(|| line.pop()).map(|w| w.value).collect();
//! assert_eq!(served, ["a1", "b1", "a2"]);
//! ```

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::time::Nanos;

/// Whose work a waiter is: waiters of one priority are served by tenant in turns. `None`
/// is a tenant of its own.
pub type Tenant = Option<Arc<str>>;

/// What to do with a newcomer to a full line (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Turn the newcomer away.
    #[default]
    RejectNew,
    /// Let the newcomer in and drop the waiter that has waited longest.
    DropOldest,
    /// Let the newcomer in and evict the newest waiter of the lowest priority, if that is
    /// below the newcomer's; otherwise turn the newcomer away.
    EvictLowestPriority,
}

impl Overflow {
    /// Every strategy, in declaration order.
    pub const ALL: [Self; 3] = [Self::RejectNew, Self::DropOldest, Self::EvictLowestPriority];

    /// The name used in configuration: `reject_new`, `drop_oldest` or
    /// `evict_lowest_priority`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RejectNew => "reject_new",
            Self::DropOldest => "drop_oldest",
            Self::EvictLowestPriority => "evict_lowest_priority",
        }
    }
}

/// How long a line may grow and what happens when it is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueConfig {
    /// The most waiters at once; 0 turns every newcomer away.
    pub max_length: usize,
    /// What a newcomer to a full line does.
    pub overflow: Overflow,
}

/// Which waiter: unique within one [`Queue`], and growing with arrival, so that a smaller
/// id arrived earlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaiterId(u64);

impl WaiterId {
    /// The id as a number (arrival order within its queue).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The id a number names: the inverse of [`get`](Self::get), for an id that was kept
    /// as a number (in a ticket, on the wire).
    pub const fn from_number(number: u64) -> Self {
        Self(number)
    }
}

/// One waiter in a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter<P, T> {
    /// Its id.
    pub id: WaiterId,
    /// Higher goes first.
    pub priority: P,
    /// Whose work it is.
    pub tenant: Tenant,
    /// When it joined.
    pub enqueued_at: Nanos,
    /// When it stops waiting.
    pub deadline: Nanos,
    /// What the caller keeps with it.
    pub value: T,
}

/// Why a newcomer was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The line is full and the [`Overflow`] strategy turned it away.
    Overflow,
    /// The line is paused and full.
    Paused,
}

impl Refusal {
    /// `overflow` or `paused`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Overflow => "overflow",
            Self::Paused => "paused",
        }
    }
}

/// A newcomer let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined<P, T> {
    /// Its id.
    pub id: WaiterId,
    /// The waiter taken out to make room for it, if any: dropped (the oldest) or evicted
    /// (of a lower priority).
    pub evicted: Option<Waiter<P, T>>,
}

/// The waiters of one priority.
#[derive(Debug)]
struct Level {
    /// The tenants with waiters, the one to go next first, by their place in the round.
    rotation: BTreeMap<u64, Tenant>,
    /// Each tenant's waiters, oldest first, with its place in the round.
    tenants: HashMap<Tenant, (u64, BTreeSet<WaiterId>)>,
    /// Every waiter of this priority, oldest first.
    ids: BTreeSet<WaiterId>,
}

/// A line of waiters (see the [module docs](self)): `P` is the priority (higher is served
/// first), `T` what each waiter carries.
#[derive(Debug)]
pub struct Queue<P, T> {
    config: QueueConfig,
    paused: bool,
    next_id: u64,
    /// The next place at the end of a round.
    next_seq: u64,
    /// The waiters, by id: oldest first.
    waiters: BTreeMap<WaiterId, Waiter<P, T>>,
    /// Highest priority first. No level is empty.
    levels: BTreeMap<Reverse<P>, Level>,
    /// Deadlines, soonest first.
    deadlines: BTreeSet<(Nanos, WaiterId)>,
}

impl<P: Ord + Copy, T> Queue<P, T> {
    /// An empty line.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            paused: false,
            next_id: 0,
            next_seq: 0,
            waiters: BTreeMap::new(),
            levels: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> QueueConfig {
        self.config
    }

    /// An empty line whose first waiter's id is `first`: for a line made again after it
    /// was dropped, so that no id it hands out repeats one of the line it replaces.
    pub fn starting_at(config: QueueConfig, first: WaiterId) -> Self {
        Self {
            next_id: first.0,
            ..Self::new(config)
        }
    }

    /// The id the next waiter will get.
    pub fn next_id(&self) -> WaiterId {
        WaiterId(self.next_id)
    }

    /// Changes the configuration; waiters beyond a smaller `max_length` stay until served.
    pub fn set_config(&mut self, config: QueueConfig) {
        self.config = config;
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Whether it is paused: [`pop`](Self::pop) serves nobody until it resumes.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Stops serving; the waiters stay.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Serves again.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// Lets a newcomer of `priority` and `tenant` into the line until `deadline`, carrying
    /// `value`, or turns it away (see the [module docs](self) for a full line).
    pub fn push(
        &mut self,
        priority: P,
        tenant: Tenant,
        deadline: Nanos,
        value: T,
        now: Nanos,
    ) -> Result<Joined<P, T>, Refusal> {
        let mut evicted = None;
        if self.waiters.len() >= self.config.max_length {
            if self.paused {
                return Err(Refusal::Paused);
            }
            let victim = match self.config.overflow {
                Overflow::RejectNew => None,
                Overflow::DropOldest => self.waiters.keys().next().copied(),
                Overflow::EvictLowestPriority => self
                    .levels
                    .iter()
                    .next_back()
                    .filter(|(Reverse(lowest), _)| *lowest < priority)
                    .and_then(|(_, level)| level.ids.last().copied()),
            };
            let Some(victim) = victim else {
                return Err(Refusal::Overflow);
            };
            evicted = self.take(victim, false);
        }
        let id = WaiterId(self.next_id);
        self.next_id += 1;
        let level = self
            .levels
            .entry(Reverse(priority))
            .or_insert_with(|| Level {
                rotation: BTreeMap::new(),
                tenants: HashMap::new(),
                ids: BTreeSet::new(),
            });
        match level.tenants.entry(tenant.clone()) {
            Entry::Occupied(mut queue) => {
                queue.get_mut().1.insert(id);
            }
            Entry::Vacant(vacant) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                level.rotation.insert(seq, tenant.clone());
                vacant.insert((seq, BTreeSet::from([id])));
            }
        }
        level.ids.insert(id);
        self.deadlines.insert((deadline, id));
        self.waiters.insert(
            id,
            Waiter {
                id,
                priority,
                tenant,
                enqueued_at: now,
                deadline,
                value,
            },
        );
        Ok(Joined { id, evicted })
    }

    /// The waiter served next, paused or not.
    pub fn head(&self) -> Option<&Waiter<P, T>> {
        let level = self.levels.values().next()?;
        let tenant = level.rotation.values().next()?;
        let id = level.tenants.get(tenant)?.1.first()?;
        self.waiters.get(id)
    }

    /// Serves the waiter at the head of the line; `None` when nobody waits or the line is
    /// paused. Its tenant goes to the end of its priority's round if it has more waiters.
    pub fn pop(&mut self) -> Option<Waiter<P, T>> {
        if self.paused {
            return None;
        }
        let id = self.head()?.id;
        self.take(id, true)
    }

    /// Takes a waiter out of the line, wherever it is (it gave up, or it was served by
    /// other means); `None` if it is not in the line. Its tenant keeps its place in the
    /// round if it has more waiters.
    pub fn remove(&mut self, id: WaiterId) -> Option<Waiter<P, T>> {
        self.take(id, false)
    }

    /// Takes a waiter out; `served`: it was the head, served, and its tenant goes to the
    /// end of the round.
    fn take(&mut self, id: WaiterId, served: bool) -> Option<Waiter<P, T>> {
        let waiter = self.waiters.remove(&id)?;
        self.deadlines.remove(&(waiter.deadline, id));
        let key = Reverse(waiter.priority);
        if let Some(level) = self.levels.get_mut(&key) {
            level.ids.remove(&id);
            if let Some((seq, ids)) = level.tenants.get_mut(&waiter.tenant) {
                let seq = *seq;
                ids.remove(&id);
                if ids.is_empty() {
                    level.rotation.remove(&seq);
                    level.tenants.remove(&waiter.tenant);
                } else if served {
                    level.rotation.remove(&seq);
                    let next = self.next_seq;
                    self.next_seq += 1;
                    level.rotation.insert(next, waiter.tenant.clone());
                    if let Some(entry) = level.tenants.get_mut(&waiter.tenant) {
                        entry.0 = next;
                    }
                }
            }
            if level.ids.is_empty() {
                self.levels.remove(&key);
            }
        }
        Some(waiter)
    }

    /// A waiter in the line.
    pub fn get(&self, id: WaiterId) -> Option<&Waiter<P, T>> {
        self.waiters.get(&id)
    }

    /// A waiter in the line, to change what it carries.
    pub fn get_mut(&mut self, id: WaiterId) -> Option<&mut Waiter<P, T>> {
        self.waiters.get_mut(&id)
    }

    /// Takes out every waiter whose deadline is at or before `now`, soonest first.
    pub fn expire(&mut self, now: Nanos) -> Vec<Waiter<P, T>> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(waiter) = self.take(id, false) {
                expired.push(waiter);
            }
        }
        expired
    }

    /// The soonest deadline in the line.
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// When the waiter that joined first (of those still waiting) joined.
    pub fn oldest(&self) -> Option<Nanos> {
        self.waiters.values().next().map(|w| w.enqueued_at)
    }

    /// How many wait at each priority that has any, highest first.
    pub fn len_by_priority(&self) -> Vec<(P, usize)> {
        self.levels
            .iter()
            .map(|(Reverse(priority), level)| (*priority, level.ids.len()))
            .collect()
    }

    /// Every waiter, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Waiter<P, T>> {
        self.waiters.values()
    }
}

#[cfg(test)]
mod tests;
