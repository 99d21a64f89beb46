//! The fake upstream's quota buckets: sluice-core's GCRA, one state per dimension.

use std::time::Duration;

use sluice_core::time::duration_nanos;
use sluice_core::{Algorithm, Decision, Gcra, GcraState, Nanos, Policy, Rate};

/// One continuously refilling token bucket of `limit` units per `period`, capacity `limit`
/// (a GCRA policy whose burst is its limit). A limit of zero means no bucket: everything
/// passes and nothing is reported.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    policy: Option<Policy>,
    state: GcraState,
}

/// The GCRA policy for `limit` per `period`; `None` for zero. Limits above one unit per
/// nanosecond (far beyond any test) are clamped to it.
fn policy(limit: u64, period: Duration) -> Option<Policy> {
    if limit == 0 {
        return None;
    }
    let limit = limit.min(duration_nanos(period));
    Rate::new(limit, period).ok().map(Policy::gcra)
}

impl Bucket {
    pub(super) fn new(limit: u64, period: Duration) -> Self {
        Self {
            policy: policy(limit, period),
            state: GcraState::default(),
        }
    }

    /// Changes the limit at `now`, keeping the units in use: a bucket with 100 of 600
    /// units used has 100 of the new limit used (fractions of a unit kept), at most the
    /// whole new capacity (then it is empty and refills at the new rate).
    pub(super) fn set_limit(&mut self, limit: u64, period: Duration, now: Nanos) {
        let new = policy(limit, period);
        if new == self.policy {
            return;
        }
        let state = match (self.policy, new) {
            (Some(old), Some(new)) => {
                let debt = u128::from(duration_nanos(self.state.tat.saturating_since(now)));
                let scaled =
                    debt * u128::from(new.emission_nanos()) / u128::from(old.emission_nanos());
                let capacity = u128::from(new.burst()) * u128::from(new.emission_nanos());
                let debt = u64::try_from(scaled.min(capacity)).unwrap_or(u64::MAX);
                GcraState {
                    tat: now.plus_nanos(debt),
                }
            }
            _ => GcraState::default(),
        };
        self.policy = new;
        self.state = state;
    }

    /// What taking `cost` units at `now` would decide (`None` without a bucket). With
    /// `cost` 0 it describes the bucket as it stands.
    pub(super) fn decide(&self, cost: u64, now: Nanos) -> Option<Decision> {
        self.policy
            .map(|policy| Gcra::decide(&policy, &self.state, cost, now))
    }

    /// Takes `cost` units at `now`; call only after [`decide`](Self::decide) allowed them.
    pub(super) fn apply(&mut self, cost: u64, now: Nanos) {
        if let Some(policy) = self.policy {
            Gcra::apply(&policy, &mut self.state, cost, now, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const T0: Nanos = Nanos::new(1_000_000_000_000);

    #[test]
    fn zero_is_no_bucket() {
        let mut bucket = Bucket::new(0, MINUTE);
        assert_eq!(bucket.decide(1, T0), None);
        bucket.apply(1, T0);
        assert_eq!(bucket.decide(1, T0), None);
    }

    #[test]
    fn a_new_limit_keeps_the_units_in_use() {
        let mut bucket = Bucket::new(600, MINUTE);
        bucket.apply(100, T0);
        assert_eq!(bucket.decide(0, T0).map(|d| d.remaining), Some(500));
        bucket.set_limit(300, MINUTE, T0);
        assert_eq!(bucket.decide(0, T0).map(|d| d.limit), Some(300));
        assert_eq!(bucket.decide(0, T0).map(|d| d.remaining), Some(200));
        bucket.set_limit(50, MINUTE, T0);
        let now = bucket.decide(0, T0).expect("a bucket");
        assert_eq!((now.remaining, now.reset_after), (0, MINUTE));
        bucket.set_limit(0, MINUTE, T0);
        bucket.set_limit(60, MINUTE, T0);
        assert_eq!(bucket.decide(0, T0).map(|d| d.remaining), Some(60));
    }
}
