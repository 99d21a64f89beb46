//! [`MemoryQueues`]: lines in this process's memory, granting from a [`MemoryStore`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sluice_core::queue::{Queue, QueueConfig, Refusal, WaiterId};
use sluice_core::{Clock, Key, Nanos, Verdict};

use super::{Joined, Line, LineStats, QueueStore, QueueTicket, Request, Served, TicketStatus};
use crate::memory::MemoryStore;
use crate::store::Limit;

/// The longest tenant name a line tells apart, in bytes.
pub const MAX_TENANT_LEN: usize = 256;

/// How many lines and finished tickets a [`MemoryQueues`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryQueuesConfig {
    /// The most lines at once; joining a new line beyond it is an error. A line is
    /// forgotten when nobody waits in it, it is not paused and no outcome is unread.
    pub max_lines: usize,
    /// The most unread outcomes (grants, time-outs, evictions) a line keeps; the oldest are
    /// forgotten first (their waiters then read [`TicketStatus::Unknown`]).
    pub max_outcomes: usize,
}

impl Default for MemoryQueuesConfig {
    /// 100,000 lines, 10,000 unread outcomes per line.
    fn default() -> Self {
        Self {
            max_lines: 100_000,
            max_outcomes: 10_000,
        }
    }
}

/// A [`MemoryQueues`] operation that could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryQueuesError {
    /// Every one of `max_lines` lines is in use.
    #[error("{max_lines} lines are in use already (max_lines)")]
    TooManyLines {
        /// The bound.
        max_lines: usize,
    },
}

/// One line and what became of its tickets.
#[derive(Debug)]
struct LineState {
    queue: Queue<i32, u64>,
    /// Finished tickets not read yet, oldest first.
    outcomes: BTreeMap<QueueTicket, TicketStatus>,
    stats: LineStats,
}

/// Lines in this process's memory, granting from a [`MemoryStore`]: one lock over the
/// lines, taken for each operation and never across an await, so every operation on a
/// line is atomic (the store's own operations are atomic per call too).
pub struct MemoryQueues<C: Clock> {
    store: MemoryStore<C>,
    config: MemoryQueuesConfig,
    lines: Mutex<Lines>,
}

/// The lines, and the first ticket a line made anew starts at: above every ticket handed
/// out so far, so that a ticket of a forgotten line never names a waiter of its successor.
#[derive(Debug, Default)]
struct Lines {
    lines: HashMap<Key, LineState>,
    next_ticket: u64,
}

impl Lines {
    /// The line `key`, made if it is new and there is room.
    fn get_or_make(
        &mut self,
        key: &Key,
        config: QueueConfig,
        max_lines: usize,
    ) -> Result<&mut LineState, MemoryQueuesError> {
        let count = self.lines.len();
        match self.lines.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                if count >= max_lines {
                    return Err(MemoryQueuesError::TooManyLines { max_lines });
                }
                let first = WaiterId::from_number(self.next_ticket);
                Ok(entry.insert(LineState {
                    queue: Queue::starting_at(config, first),
                    outcomes: BTreeMap::new(),
                    stats: LineStats::default(),
                }))
            }
        }
    }

    /// Forgets a line that holds nothing worth keeping, so that idle lines cost nothing.
    fn forget_if_idle(&mut self, key: &Key) {
        let Some(state) = self.lines.get(key) else {
            return;
        };
        self.next_ticket = self.next_ticket.max(state.queue.next_id().get());
        if state.queue.is_empty() && !state.queue.is_paused() && state.outcomes.is_empty() {
            self.lines.remove(key);
        }
    }
}

impl<C: Clock> std::fmt::Debug for MemoryQueues<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueues")
            .field("config", &self.config)
            .field("lines", &self.lock().lines.len())
            .finish_non_exhaustive()
    }
}

impl<C: Clock> MemoryQueues<C> {
    /// Lines that grant from `store`.
    pub fn new(store: MemoryStore<C>) -> Self {
        Self::with_config(store, MemoryQueuesConfig::default())
    }

    /// Lines that grant from `store`, bounded by `config`.
    pub fn with_config(store: MemoryStore<C>, config: MemoryQueuesConfig) -> Self {
        Self {
            store,
            config,
            lines: Mutex::new(Lines::default()),
        }
    }

    /// The store the lines grant from (to check or reset limits directly).
    pub fn store(&self) -> &MemoryStore<C> {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        // Plain values inside: a panic elsewhere cannot leave them half-updated.
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many lines are kept now (idle ones are forgotten).
    pub fn lines(&self) -> usize {
        self.lock().lines.len()
    }

    fn now(&self) -> Nanos {
        self.store.clock().now()
    }

    /// [`QueueStore::join`], done now.
    pub fn join_now(
        &self,
        line: Line<'_>,
        request: Request<'_>,
    ) -> Result<Joined, MemoryQueuesError> {
        let now = self.now();
        let mut lines = self.lock();
        let state = lines.get_or_make(line.key, line.config, self.config.max_lines)?;
        state.queue.set_config(line.config);
        // Work-conserving: whoever is ahead goes first, then this request may go at once.
        self.serve_line(state, line.limits, now);
        if state.queue.is_empty() && !state.queue.is_paused() {
            let verdict = self.store.check_all_now(line.limits, request.cost);
            if verdict.allowed {
                state.stats.granted += 1;
                lines.forget_if_idle(line.key);
                return Ok(Joined::Granted(verdict));
            }
        }
        let deadline = now.plus_nanos(sluice_core::time::duration_nanos(request.max_wait));
        // Tenant names may come from clients: only their first bytes tell them apart.
        let tenant = request
            .tenant
            .map(|name| name[..name.floor_char_boundary(MAX_TENANT_LEN)].into());
        let joined = match state
            .queue
            .push(request.priority, tenant, deadline, request.cost, now)
        {
            Ok(joined) => joined,
            Err(refusal) => {
                match refusal {
                    Refusal::Overflow => state.stats.overflow += 1,
                    Refusal::Paused => state.stats.paused_refusals += 1,
                }
                lines.forget_if_idle(line.key);
                return Ok(Joined::Refused(refusal));
            }
        };
        if let Some(evicted) = joined.evicted {
            state.stats.evicted += 1;
            state.finish(
                QueueTicket(evicted.id.get()),
                TicketStatus::Evicted,
                self.config.max_outcomes,
            );
        }
        let ticket = QueueTicket(joined.id.get());
        Ok(Joined::Waiting(ticket))
    }

    /// [`QueueStore::serve`], done now.
    pub fn serve_now(&self, line: Line<'_>) -> Served {
        let now = self.now();
        let mut lines = self.lock();
        let Some(state) = lines.lines.get_mut(line.key) else {
            return Served {
                now,
                ..Served::default()
            };
        };
        state.queue.set_config(line.config);
        let served = self.serve_line(state, line.limits, now);
        lines.forget_if_idle(line.key);
        served
    }

    /// [`QueueStore::status`], read now.
    pub fn status_now(&self, line: Line<'_>, ticket: QueueTicket) -> TicketStatus {
        let mut lines = self.lock();
        let Some(state) = lines.lines.get_mut(line.key) else {
            return TicketStatus::Unknown;
        };
        let status = state.status(ticket);
        lines.forget_if_idle(line.key);
        status
    }

    /// [`QueueStore::leave`], done now.
    pub fn leave_now(&self, line: Line<'_>, ticket: QueueTicket) -> TicketStatus {
        let mut lines = self.lock();
        let Some(state) = lines.lines.get_mut(line.key) else {
            return TicketStatus::Unknown;
        };
        let status = match state.queue.remove(WaiterId::from_number(ticket.0)) {
            Some(_) => TicketStatus::Waiting,
            None => state.status(ticket),
        };
        lines.forget_if_idle(line.key);
        status
    }

    /// [`QueueStore::pause`] or [`QueueStore::resume`], done now.
    pub fn set_paused_now(&self, line: Line<'_>, paused: bool) -> Result<(), MemoryQueuesError> {
        let mut lines = self.lock();
        if !paused && !lines.lines.contains_key(line.key) {
            return Ok(());
        }
        let state = lines.get_or_make(line.key, line.config, self.config.max_lines)?;
        if paused {
            state.queue.pause();
        } else {
            state.queue.resume();
        }
        lines.forget_if_idle(line.key);
        Ok(())
    }

    /// [`QueueStore::stats`], read now.
    pub fn stats_now(&self, line: Line<'_>) -> LineStats {
        let now = self.now();
        let lines = self.lock();
        let Some(state) = lines.lines.get(line.key) else {
            return LineStats::default();
        };
        LineStats {
            waiting_by_priority: state.queue.len_by_priority(),
            oldest_wait: state.queue.oldest().map(|at| now.saturating_since(at)),
            paused: state.queue.is_paused(),
            ..state.stats.clone()
        }
    }

    /// Times out, then grants from the head while its limits admit it.
    fn serve_line(&self, state: &mut LineState, limits: &[Limit<'_>], now: Nanos) -> Served {
        let max_outcomes = self.config.max_outcomes;
        let mut served = Served {
            now,
            ..Served::default()
        };
        for expired in state.queue.expire(now) {
            state.stats.timed_out += 1;
            state.finish(
                QueueTicket(expired.id.get()),
                TicketStatus::TimedOut,
                max_outcomes,
            );
        }
        loop {
            if state.queue.is_paused() {
                served.next_at = state.queue.next_deadline();
                return served;
            }
            let Some(head) = state.queue.head() else {
                return served;
            };
            let verdict = self.store.check_all_now(limits, head.value);
            let id = head.id;
            if verdict.allowed {
                // Not paused, so this serves the head just checked.
                state.queue.pop();
                state.stats.granted += 1;
                let ticket = QueueTicket(id.get());
                served.granted.push(ticket);
                state.finish(ticket, TicketStatus::Granted(verdict), max_outcomes);
                continue;
            }
            if verdict.decisions.iter().any(|d| d.cost_exceeds_capacity) {
                state.queue.remove(id);
                state.finish(QueueTicket(id.get()), TicketStatus::TooLarge, max_outcomes);
                continue;
            }
            served.next_at = ready_at(&verdict, now)
                .into_iter()
                .chain(state.queue.next_deadline())
                .min();
            return served;
        }
    }
}

/// When every refusing limit of `verdict` will admit the request, if they all say.
fn ready_at(verdict: &Verdict, now: Nanos) -> Option<Nanos> {
    let mut wait = Duration::ZERO;
    for decision in verdict.decisions.iter().filter(|d| !d.allowed) {
        wait = wait.max(decision.retry_after?);
    }
    Some(now.plus_nanos(sluice_core::time::duration_nanos(wait)))
}

impl LineState {
    fn finish(&mut self, ticket: QueueTicket, status: TicketStatus, max_outcomes: usize) {
        self.outcomes.insert(ticket, status);
        while self.outcomes.len() > max_outcomes {
            self.outcomes.pop_first();
        }
    }

    fn status(&mut self, ticket: QueueTicket) -> TicketStatus {
        if let Some(status) = self.outcomes.remove(&ticket) {
            return status;
        }
        if self.queue.get(WaiterId::from_number(ticket.0)).is_some() {
            TicketStatus::Waiting
        } else {
            TicketStatus::Unknown
        }
    }
}

impl<C: Clock> QueueStore for MemoryQueues<C> {
    type Error = MemoryQueuesError;

    async fn join(&self, line: Line<'_>, request: Request<'_>) -> Result<Joined, Self::Error> {
        self.join_now(line, request)
    }

    async fn serve(&self, line: Line<'_>) -> Result<Served, Self::Error> {
        Ok(self.serve_now(line))
    }

    async fn status(
        &self,
        line: Line<'_>,
        ticket: QueueTicket,
    ) -> Result<TicketStatus, Self::Error> {
        Ok(self.status_now(line, ticket))
    }

    async fn leave(
        &self,
        line: Line<'_>,
        ticket: QueueTicket,
    ) -> Result<TicketStatus, Self::Error> {
        Ok(self.leave_now(line, ticket))
    }

    async fn pause(&self, line: Line<'_>) -> Result<(), Self::Error> {
        self.set_paused_now(line, true)
    }

    async fn resume(&self, line: Line<'_>) -> Result<(), Self::Error> {
        self.set_paused_now(line, false)
    }

    async fn stats(&self, line: Line<'_>) -> Result<LineStats, Self::Error> {
        Ok(self.stats_now(line))
    }
}
