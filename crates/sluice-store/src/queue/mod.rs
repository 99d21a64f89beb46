//! Waiting in line for a limit: the queue contract every queue store implements, and
//! [`acquire`], the one waiting loop over it.
//!
//! A *line* ([`Line`]) is named by a key, guards a set of limits, and holds waiters in
//! sluice-core's [`Queue`](sluice_core::queue::Queue) order (priority, tenants in turns,
//! arrival), each with its cost. [`QueueStore::serve`] grants from the head: the head's cost
//! is debited from every one of the line's limits, all or nothing, in one atomic step,
//! and the next head is tried, until a head must wait; it says when to serve again (the
//! instant the head's limits will admit it, or the soonest deadline). Any process that
//! shares the line may serve it, and serving twice is harmless, so no process is special:
//! each waiter's own [`acquire`] serves the line when its turn may have come.
//!
//! Joining an empty line costs what a check costs: [`QueueStore::join`] grants at once
//! when nobody waits ahead and the limits admit the request.

mod memory;

use std::future::Future;
use std::time::Duration;

use sluice_core::queue::{QueueConfig, Refusal};
use sluice_core::{Key, Nanos, Verdict};

use crate::store::Limit;

pub use memory::{MAX_TENANT_LEN, MemoryQueues, MemoryQueuesConfig, MemoryQueuesError};

/// A line: its key, the limits its grants debit, and how long it may grow.
///
/// The limits belong to the line, not to each waiter, so that a store that grants in one
/// atomic call (a Redis function) knows every key it touches before it is called.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// The line's name. A store keeps one line per key; calls on one key must give the
    /// same limits.
    pub key: &'a Key,
    /// Every limit a grant debits, all or nothing.
    pub limits: &'a [Limit<'a>],
    /// Its maximum length and overflow strategy (applied at every call, so a reload that
    /// changes them takes effect at once).
    pub config: QueueConfig,
}

/// Someone who wants to be granted `cost` units on every limit of the line.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Units per limit.
    pub cost: u64,
    /// Higher is served first.
    pub priority: i32,
    /// Whose work it is: tenants of one priority are served in turns.
    pub tenant: Option<&'a str>,
    /// How long it may wait in line.
    pub max_wait: Duration,
}

/// A place in a line, to ask after or give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueTicket(pub u64);

/// What joining a line came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Joined {
    /// Granted at once: the limits were debited.
    Granted(Verdict),
    /// In line: ask with [`QueueStore::status`], serve with [`QueueStore::serve`].
    Waiting(QueueTicket),
    /// Turned away: the line is full (or paused and full).
    Refused(Refusal),
}

/// What became of a ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketStatus {
    /// Still in line.
    Waiting,
    /// Granted: its limits were debited. Reported once; the ticket is then forgotten.
    Granted(Verdict),
    /// Its deadline came before its turn.
    TimedOut,
    /// Taken out of a full line to make room for a newcomer (see
    /// [`Overflow`](sluice_core::queue::Overflow)).
    Evicted,
    /// Its cost is beyond what one of its limits can ever admit: it could never go.
    TooLarge,
    /// Not known: never issued, already reported, or left.
    Unknown,
}

/// What one [`QueueStore::serve`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// The tickets granted, in the order they were.
    pub granted: Vec<QueueTicket>,
    /// When serving again may grant something or time a waiter out: the instant the head's
    /// limits admit it, else the soonest deadline. `None` when nobody waits, or when only
    /// a release can let the head go and no deadline is pending.
    pub next_at: Option<Nanos>,
    /// The store's clock when it served.
    pub now: Nanos,
}

/// What a line looks like now. The counts start when the line does: a store may forget
/// an idle line (nobody waiting, not paused, nothing unread), so a caller that wants totals
/// counts what its own calls return.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Waiters at each priority that has any, highest first.
    pub waiting_by_priority: Vec<(i32, usize)>,
    /// How long the waiter that joined first has waited.
    pub oldest_wait: Option<Duration>,
    /// Whether it is paused.
    pub paused: bool,
    /// Requests granted, at once or from the line.
    pub granted: u64,
    /// Requests refused for a full line.
    pub overflow: u64,
    /// Requests refused for a paused, full line.
    pub paused_refusals: u64,
    /// Waiters timed out.
    pub timed_out: u64,
    /// Waiters evicted.
    pub evicted: u64,
}

/// Where lines live, and the operations on them. Each operation is atomic per line.
pub trait QueueStore: Send + Sync + 'static {
    /// What can go wrong in the store itself.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Joins `line` with `request`: granted at once when nobody waits ahead (or every
    /// waiter ahead can be granted first) and the limits admit it; else in line, or
    /// turned away when the line is full.
    fn join(
        &self,
        line: Line<'_>,
        request: Request<'_>,
    ) -> impl Future<Output = Result<Joined, Self::Error>> + Send;

    /// Times out the waiters whose deadline has come, then grants from the head while the
    /// head's limits admit it (nothing while paused).
    fn serve(&self, line: Line<'_>) -> impl Future<Output = Result<Served, Self::Error>> + Send;

    /// What became of `ticket`. A final status (granted, timed out, evicted, too large) is
    /// reported once.
    fn status(
        &self,
        line: Line<'_>,
        ticket: QueueTicket,
    ) -> impl Future<Output = Result<TicketStatus, Self::Error>> + Send;

    /// Gives up `ticket`'s place: [`TicketStatus::Waiting`] if it was still in line (now
    /// out of it), else what became of it (a grant the caller must honour or give back).
    fn leave(
        &self,
        line: Line<'_>,
        ticket: QueueTicket,
    ) -> impl Future<Output = Result<TicketStatus, Self::Error>> + Send;

    /// [`serve`](Self::serve), then [`status`](Self::status) of `ticket`: what a waiter
    /// does each time it wakes. A store that can do both in one round trip should.
    fn poll(
        &self,
        line: Line<'_>,
        ticket: QueueTicket,
    ) -> impl Future<Output = Result<(Served, TicketStatus), Self::Error>> + Send {
        async move {
            let served = self.serve(line).await?;
            let status = self.status(line, ticket).await?;
            Ok((served, status))
        }
    }

    /// Stops granting from `line`; its waiters stay.
    fn pause(&self, line: Line<'_>) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Grants from `line` again.
    fn resume(&self, line: Line<'_>) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// How `line` looks now.
    fn stats(&self, line: Line<'_>) -> impl Future<Output = Result<LineStats, Self::Error>> + Send;
}

/// The shortest sleep of [`acquire`] between two polls.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// Why [`acquire`] did not grant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError<E: std::error::Error + 'static> {
    /// Turned away at once: the line is full (or paused and full).
    #[error("the line is {}", refusal.name())]
    Refused {
        /// Why.
        refusal: Refusal,
    },
    /// It waited its whole `max_wait`.
    #[error("still in line after {max_wait:?}")]
    TimedOut {
        /// How long it waited.
        max_wait: Duration,
    },
    /// A newcomer of higher priority (or the line's overflow strategy) took its place.
    #[error("evicted from a full line")]
    Evicted,
    /// Its cost is beyond what one of its limits can ever admit.
    #[error("the cost is beyond what the limits can ever admit")]
    TooLarge,
    /// The store failed.
    #[error(transparent)]
    Store(E),
}

/// A request granted from a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The limits' decisions when it was granted.
    pub verdict: Verdict,
    /// How long it waited in line.
    pub waited: Duration,
}

/// Waits in `line` until `request` is granted, it is refused, or `max_wait` passes: joins,
/// then serves the line whenever its turn may have come (the instant [`Served::next_at`]
/// names, at most `poll` apart and at least a millisecond, so that a grant made by another process or a release is
/// seen within `poll`). Dropping the future leaves the ticket in line until its deadline
/// times it out; a caller that may give up early should keep the ticket and
/// [`leave`](QueueStore::leave) instead, since a ticket granted after its waiter is gone
/// debits its limits for nobody.
///
/// `sleep` waits the given time (measured on the store's timeline: the caller's own clock
/// need not agree with Redis `TIME`); tests drive it with a manual clock.
pub async fn acquire<Q, S, F>(
    store: &Q,
    line: Line<'_>,
    request: Request<'_>,
    poll: Duration,
    mut sleep: S,
) -> Result<Grant, AcquireError<Q::Error>>
where
    Q: QueueStore,
    S: FnMut(Duration) -> F,
    F: Future<Output = ()>,
{
    let joined = store
        .join(line, request)
        .await
        .map_err(AcquireError::Store)?;
    let ticket = match joined {
        Joined::Granted(verdict) => {
            return Ok(Grant {
                verdict,
                waited: Duration::ZERO,
            });
        }
        Joined::Refused(refusal) => return Err(AcquireError::Refused { refusal }),
        Joined::Waiting(ticket) => ticket,
    };
    let mut started: Option<Nanos> = None;
    loop {
        let (served, status) = store
            .poll(line, ticket)
            .await
            .map_err(AcquireError::Store)?;
        let began = *started.get_or_insert(served.now);
        match status {
            TicketStatus::Waiting => {}
            TicketStatus::Granted(verdict) => {
                return Ok(Grant {
                    verdict,
                    waited: served.now.saturating_since(began),
                });
            }
            TicketStatus::TimedOut | TicketStatus::Unknown => {
                return Err(AcquireError::TimedOut {
                    max_wait: request.max_wait,
                });
            }
            TicketStatus::Evicted => return Err(AcquireError::Evicted),
            TicketStatus::TooLarge => return Err(AcquireError::TooLarge),
        }
        let deadline = began.plus_nanos(sluice_core::time::duration_nanos(request.max_wait));
        let polled = served
            .now
            .plus_nanos(sluice_core::time::duration_nanos(poll));
        let wake = served.next_at.unwrap_or(polled).min(polled).min(deadline);
        // At least a millisecond: a `poll` of zero, or a head due now that still waits,
        // must not turn the loop into a spin on the store.
        sleep(wake.saturating_since(served.now).max(MIN_SLEEP)).await;
    }
}

#[cfg(test)]
mod tests;
