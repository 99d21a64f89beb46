//! What the remote layer's decisions came to, counted: failures are never logged per
//! request, so these are how an operator sees them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::check::Failure;

/// Counts of a [`RemoteRateLimitLayer`](super::RemoteRateLimitLayer)'s checks, shared by
/// the layer, its clones and every service it built. Read them with
/// [`stats`](super::RemoteRateLimitLayer::stats), e.g. into your metrics.
///
/// Every request the server was asked about lands in exactly one count. Requests the
/// layer answered without asking (no key: `400`/`401`) and requests with no limit are in
/// none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RemoteStats {
    /// The server allowed the request.
    pub allowed: u64,
    /// The server refused the request (`429`).
    pub limited: u64,
    /// The server could not be reached (refused or broken connection).
    pub unreachable: u64,
    /// The server did not answer within the layer's timeout.
    pub timed_out: u64,
    /// The server answered something that is not a decision (an error status, an
    /// unparsable body, an `UNKNOWN` code, a wrong number of statuses).
    pub bad_answers: u64,
}

impl RemoteStats {
    /// The checks that followed the failure policy (the server gave no decision).
    pub fn failures(&self) -> u64 {
        self.unreachable
            .saturating_add(self.timed_out)
            .saturating_add(self.bad_answers)
    }
}

/// The live counters behind [`RemoteStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    allowed: AtomicU64,
    limited: AtomicU64,
    unreachable: AtomicU64,
    timed_out: AtomicU64,
    bad_answers: AtomicU64,
}

impl Counters {
    pub(crate) fn decided(&self, over_limit: bool) {
        let counter = if over_limit {
            &self.limited
        } else {
            &self.allowed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, failure: Failure) {
        let counter = match failure {
            Failure::Unreachable => &self.unreachable,
            Failure::TimedOut => &self.timed_out,
            Failure::BadAnswer => &self.bad_answers,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RemoteStats {
        RemoteStats {
            allowed: self.allowed.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            unreachable: self.unreachable.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            bad_answers: self.bad_answers.load(Ordering::Relaxed),
        }
    }
}
