//! What the layer asks a remote server and what it makes of the answer, whatever the
//! transport.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use sluice_core::{Decision, Key, Policy, Rate};

/// The policy of the [`LimitSpec`](crate::LimitSpec) behind a remote limit, which resolves
/// keys only: the server keeps the real one. Never decides.
pub(crate) static UNUSED_POLICY: LazyLock<Policy> =
    LazyLock::new(|| Policy::gcra(Rate::per_second(1).expect("1/s is a valid rate")));

/// A transport to a remote rate limit server: `HttpBackend` (feature `remote-http`) or
/// `GrpcBackend` (feature `remote-grpc`).
///
/// Sealed: its method takes types private to this crate.
#[allow(private_interfaces, private_bounds)]
pub trait RemoteBackend: Send + Sync + 'static {
    /// Asks the server whether one request may pass: one descriptor per key (its entries
    /// are the key's, after the domain), each adding `hits`, all or nothing.
    #[doc(hidden)]
    fn check<'a>(
        &'a self,
        domain: &'a str,
        keys: &'a [Key],
        hits: u64,
    ) -> impl Future<Output = Result<Answer, Failure>> + Send + 'a;
}

/// Why the server gave no usable answer. Each is counted apart (see
/// [`RemoteStats`](super::RemoteStats)); none is logged, and none reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection, or it broke before the answer was complete.
    Unreachable,
    /// No answer within the layer's timeout.
    TimedOut,
    /// An answer that is not a decision: an error status, a body that does not parse, an
    /// unknown code, or not one status per descriptor.
    BadAnswer,
}

/// The server's decision on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Whether any descriptor is over its limit (the request is refused).
    pub(crate) over_limit: bool,
    /// One per descriptor, in request order.
    pub(crate) statuses: Vec<Status>,
}

/// The server's answer for one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) over_limit: bool,
    /// The rule that decided, when one did and it can be shown in headers (not for an
    /// unmatched descriptor, an unlimited rule, a shadow-mode rule or an unknown unit).
    pub(crate) quota: Option<Quota>,
    pub(crate) remaining: u64,
    pub(crate) reset_after: Duration,
    /// When over the limit: how long until the same request may pass; `None` when no
    /// wait helps (the cost exceeds the limit, a blocked descriptor).
    pub(crate) retry_after: Option<Duration>,
}

/// A rule as the headers show it: `quota` units per `window_secs` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) units: u64,
    pub(crate) window_secs: u64,
}

impl Answer {
    /// The answer, if it has one status per descriptor of a request with `descriptors`.
    pub(crate) fn for_descriptors(self, descriptors: usize) -> Result<Self, Failure> {
        if self.statuses.len() == descriptors {
            Ok(self)
        } else {
            Err(Failure::BadAnswer)
        }
    }
}

impl Status {
    /// The status as a sluice decision, for the shared header and problem encoders.
    pub(crate) fn decision(&self) -> Decision {
        let limit = self.quota.map_or(0, |q| q.units);
        match (self.over_limit, self.retry_after) {
            (false, _) => Decision::allow(limit, self.remaining, self.reset_after),
            (true, Some(wait)) => Decision::deny(limit, self.remaining, self.reset_after, wait),
            (true, None) => Decision::exceeds_capacity(limit, self.remaining, self.reset_after),
        }
    }
}

/// The seconds in one `unit` of an Envoy rate limit rule (a month is 30 days and a year
/// 365, as sluice-server and envoyproxy/ratelimit count them).
pub(crate) fn unit_secs(unit: &str) -> Option<u64> {
    Some(match unit {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        "week" => 7 * 86_400,
        "month" => 30 * 86_400,
        "year" => 365 * 86_400,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(over_limit: bool, retry_after: Option<Duration>) -> Status {
        Status {
            over_limit,
            quota: Some(Quota {
                units: 5,
                window_secs: 60,
            }),
            remaining: 0,
            reset_after: Duration::from_secs(60),
            retry_after,
        }
    }

    #[test]
    fn statuses_become_decisions() {
        let reset = Duration::from_secs(60);
        assert_eq!(status(false, None).decision(), Decision::allow(5, 0, reset));
        let wait = Duration::from_secs(12);
        assert_eq!(
            status(true, Some(wait)).decision(),
            Decision::deny(5, 0, reset, wait)
        );
        assert_eq!(
            status(true, None).decision(),
            Decision::exceeds_capacity(5, 0, reset)
        );
    }

    #[test]
    fn an_answer_needs_one_status_per_descriptor() {
        let answer = Answer {
            over_limit: false,
            statuses: vec![status(false, None)],
        };
        assert_eq!(answer.clone().for_descriptors(1), Ok(answer.clone()));
        assert_eq!(answer.for_descriptors(2), Err(Failure::BadAnswer));
    }

    #[test]
    fn units_are_envoys() {
        assert_eq!(unit_secs("minute"), Some(60));
        assert_eq!(unit_secs("year"), Some(365 * 86_400));
        assert_eq!(unit_secs("fortnight"), None);
    }
}
