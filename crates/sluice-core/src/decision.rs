//! The answer to "may this pass?", and the receipt for capacity taken.

use std::time::Duration;

use crate::time::Nanos;

/// The outcome of asking a limit for `cost` units at one instant.
///
/// Over the limit is a `Decision` with `allowed == false`, never an error. Every caller
/// renders its own answer from these fields: HTTP headers, gRPC statuses, metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass. When true, its cost has been (or would be) debited.
    pub allowed: bool,
    /// The capacity `remaining` counts against: the burst for GCRA, the limit otherwise.
    pub limit: u64,
    /// Units still available right after this decision.
    pub remaining: u64,
    /// Time until the limit is back to full capacity (`remaining == limit`).
    pub reset_after: Duration,
    /// When refused: how long to wait before the same request can pass. `None` when
    /// allowed, and when no wait can help because the cost exceeds the capacity.
    pub retry_after: Option<Duration>,
    /// The cost is larger than this limit can ever admit (more than its burst or limit);
    /// retrying will not help. Always refused.
    pub cost_exceeds_capacity: bool,
    /// Decided without the shared store (fail-open or local fallback); the numbers may not
    /// reflect other instances. Always false from an algorithm; set by a store that answers
    /// without its primary (sluice-store's `FallbackStore`).
    pub degraded: bool,
}

impl Decision {
    /// An allowed decision.
    pub const fn allow(limit: u64, remaining: u64, reset_after: Duration) -> Self {
        Self {
            allowed: true,
            limit,
            remaining,
            reset_after,
            retry_after: None,
            cost_exceeds_capacity: false,
            degraded: false,
        }
    }

    /// A refusal that a retry after `retry_after` may turn into an admission.
    pub const fn deny(
        limit: u64,
        remaining: u64,
        reset_after: Duration,
        retry_after: Duration,
    ) -> Self {
        Self {
            allowed: false,
            limit,
            remaining,
            reset_after,
            retry_after: Some(retry_after),
            cost_exceeds_capacity: false,
            degraded: false,
        }
    }

    /// A refusal because the cost can never fit.
    pub const fn exceeds_capacity(limit: u64, remaining: u64, reset_after: Duration) -> Self {
        Self {
            allowed: false,
            limit,
            remaining,
            reset_after,
            retry_after: None,
            cost_exceeds_capacity: true,
            degraded: false,
        }
    }

    /// The same decision marked [`degraded`](Self::degraded).
    #[must_use]
    pub const fn into_degraded(self) -> Self {
        Self {
            degraded: true,
            ..self
        }
    }

    /// The decision to report for a request checked against several limits: the first
    /// refusal with the longest wait (a refusal that can never pass beats any wait), or,
    /// when all allowed, the one with the fewest units remaining.
    ///
    /// Returns `None` for an empty slice.
    pub fn most_restrictive(decisions: &[Self]) -> Option<Self> {
        decisions.iter().copied().reduce(|a, b| {
            let rank = |d: &Self| {
                (
                    !d.allowed,
                    d.cost_exceeds_capacity,
                    d.retry_after.unwrap_or(Duration::ZERO),
                    std::cmp::Reverse(d.remaining),
                )
            };
            if rank(&b) > rank(&a) { b } else { a }
        })
    }
}

/// A receipt for capacity a limit has taken, to give back ([cancel]) or correct to the
/// actual cost ([settle]).
///
/// [cancel]: crate::Algorithm::refund
/// [settle]: crate::Algorithm::charge
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Units taken.
    pub cost: u64,
    /// The instant the capacity is for: `now` for a check, `ready_at` for a reservation.
    pub at: Nanos,
    /// The lease this ticket holds, for [`Concurrency`](crate::Concurrency); `0` otherwise.
    pub lease: u64,
}

/// A limit's answer to a reservation: the decision and, when allowed, the instant the
/// reserved units are available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Allowed when the units can be had within the caller's maximum wait.
    pub decision: Decision,
    /// The earliest instant the units are available (`now` if available at once).
    pub ready_at: Nanos,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_restrictive_prefers_longest_refusal_then_fewest_remaining() {
        let s = Duration::from_secs;
        let a = Decision::allow(10, 5, s(1));
        let b = Decision::allow(10, 2, s(1));
        let c = Decision::deny(10, 0, s(1), s(3));
        let d = Decision::deny(10, 0, s(1), s(7));
        let e = Decision::exceeds_capacity(10, 10, s(0));
        assert_eq!(Decision::most_restrictive(&[a, b]), Some(b));
        assert_eq!(Decision::most_restrictive(&[a, c, d, b]), Some(d));
        assert_eq!(Decision::most_restrictive(&[d, e]), Some(e));
        assert_eq!(Decision::most_restrictive(&[]), None);
    }
}

/// The outcome of one request checked against several limits, all or nothing: either
/// every limit admitted and was debited, or none was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether every limit admitted the request.
    pub allowed: bool,
    /// One decision per limit, in the order the limits were given. When refused, the
    /// allowed entries say what would have been admitted; nothing was debited.
    pub decisions: Vec<Decision>,
}

impl Verdict {
    /// Builds the verdict from per-limit decisions.
    pub fn from_decisions(decisions: Vec<Decision>) -> Self {
        Self {
            allowed: decisions.iter().all(|d| d.allowed),
            decisions,
        }
    }

    /// The one decision to report to the client (see [`Decision::most_restrictive`]).
    /// `None` when no limit applied.
    pub fn decision(&self) -> Option<Decision> {
        Decision::most_restrictive(&self.decisions)
    }
}
