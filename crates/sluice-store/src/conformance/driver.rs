//! Runs one operation on the store under test and on the model, and compares the answers.

use std::fmt::{self, Debug, Display, Write as _};
use std::future::Future;
use std::time::Duration;

use sluice_core::{Clock, Decision, ManualClock, Nanos, Verdict};

use super::model::Model;
use crate::store::{Limit, Reservation, Store};

/// Why a scenario or a generated sequence failed: a readable report with the steps so far.
pub(super) type Failure = String;

/// A store under test, the model beside it, the clock both read, and the log of every
/// step so far (for failure reports).
pub(super) struct Driver<S> {
    name: String,
    store: S,
    clock: ManualClock,
    model: Model,
    log: Vec<String>,
}

impl<S: Store> Driver<S> {
    /// A fresh store from `make_store`, reading a manual clock that stands at `start`.
    pub(super) async fn start<F, Fut>(name: impl Into<String>, start: Nanos, make_store: &F) -> Self
    where
        F: Fn(ManualClock) -> Fut,
        Fut: Future<Output = S>,
    {
        let clock = ManualClock::new(start);
        let store = make_store(clock.clone()).await;
        Self {
            name: name.into(),
            store,
            clock,
            model: Model::new(),
            log: Vec::new(),
        }
    }

    /// The instant the store and the model see.
    pub(super) fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// Moves the shared clock forward.
    pub(super) fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.log.push(format!("advance {by:?}"));
    }

    /// Checks one limit on both; returns the store's decision.
    pub(super) async fn check(&mut self, limit: Limit<'_>, cost: u64) -> Result<Decision, Failure> {
        let op = format!("check {} cost {cost}", describe(limit));
        let expected = self.model.check(limit, cost, self.now());
        let actual = self.store.check(limit, cost).await;
        self.compare(op, actual, expected, |d: &Decision| {
            ShortDecision(d).to_string()
        })
    }

    /// Checks several limits all or nothing on both; returns the store's verdict.
    pub(super) async fn check_all(
        &mut self,
        limits: &[Limit<'_>],
        cost: u64,
    ) -> Result<Verdict, Failure> {
        let op = format!("check_all [{}] cost {cost}", describe_all(limits));
        let expected = self.model.check_all(limits, cost, self.now());
        let actual = self.store.check_all(limits, cost).await;
        self.compare(op, actual, expected, |v: &Verdict| {
            ShortVerdict(v).to_string()
        })
    }

    /// Peeks one limit on both; returns the store's decision.
    pub(super) async fn peek(&mut self, limit: Limit<'_>) -> Result<Decision, Failure> {
        let op = format!("peek {}", describe(limit));
        let expected = self.model.peek(limit, self.now());
        let actual = self.store.peek(limit).await;
        self.compare(op, actual, expected, |d: &Decision| {
            ShortDecision(d).to_string()
        })
    }

    /// Reserves on both; returns the store's reservation.
    pub(super) async fn reserve(
        &mut self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> Result<Reservation, Failure> {
        let op = format!(
            "reserve [{}] cost {cost} max_wait {max_wait:?}",
            describe_all(limits)
        );
        let expected = self.model.reserve(limits, cost, max_wait, self.now());
        let actual = self.store.reserve(limits, cost, max_wait).await;
        self.compare(op, actual, expected, |r: &Reservation| {
            ShortReservation(r).to_string()
        })
    }

    /// Cancels on both, then peeks every limit the reservation held.
    pub(super) async fn cancel(&mut self, reservation: &Reservation) -> Result<(), Failure> {
        let op = format!("cancel {}", ShortReservation(reservation));
        self.model.cancel(reservation, self.now());
        let actual = self.store.cancel(reservation).await;
        self.compare(op, actual, (), |_: &()| "ok".to_owned())?;
        self.peek_holds(reservation).await
    }

    /// Settles on both, then peeks every limit the reservation held.
    pub(super) async fn settle(
        &mut self,
        reservation: &Reservation,
        actual: u64,
    ) -> Result<(), Failure> {
        let op = format!("settle {} to {actual}", ShortReservation(reservation));
        self.model.settle(reservation, actual, self.now());
        let result = self.store.settle(reservation, actual).await;
        self.compare(op, result, (), |_: &()| "ok".to_owned())?;
        self.peek_holds(reservation).await
    }

    /// Resets one limit on both, then peeks it.
    pub(super) async fn reset(&mut self, limit: Limit<'_>) -> Result<(), Failure> {
        let op = format!("reset {}", describe(limit));
        self.model.reset(limit);
        let actual = self.store.reset(limit).await;
        self.compare(op, actual, (), |_: &()| "ok".to_owned())?;
        self.peek(limit).await.map(drop)
    }

    /// Fails with the log unless `actual == expected`: a scenario's own expectation, which
    /// holds the model to the documented numbers as well as the store.
    pub(super) fn expect<T: Debug + PartialEq>(
        &self,
        what: &str,
        actual: T,
        expected: T,
    ) -> Result<(), Failure> {
        if actual == expected {
            Ok(())
        } else {
            Err(self.failure(
                &format!("expectation `{what}`"),
                format_args!("got:      {actual:?}\nexpected: {expected:?}"),
            ))
        }
    }

    fn compare<T, E>(
        &mut self,
        op: String,
        actual: Result<T, E>,
        expected: T,
        short: impl Fn(&T) -> String,
    ) -> Result<T, Failure>
    where
        T: Debug + PartialEq,
        E: Display,
    {
        match actual {
            Err(error) => Err(self.failure(&op, format_args!("the store failed: {error}"))),
            Ok(actual) if actual == expected => {
                self.log.push(format!("{op} -> {}", short(&actual)));
                Ok(actual)
            }
            Ok(actual) => Err(self.failure(
                &op,
                format_args!(
                    "the store and the model disagree\nstore: {actual:#?}\nmodel: {expected:#?}"
                ),
            )),
        }
    }

    async fn peek_holds(&mut self, reservation: &Reservation) -> Result<(), Failure> {
        for (i, hold) in reservation.holds.iter().enumerate() {
            let seen = reservation.holds[..i]
                .iter()
                .any(|h| h.key == hold.key && h.policy.algorithm() == hold.policy.algorithm());
            if !seen {
                self.peek(Limit::new(&hold.key, &hold.policy)).await?;
            }
        }
        Ok(())
    }

    fn failure(&self, op: &str, detail: fmt::Arguments<'_>) -> Failure {
        let mut report = format!(
            "conformance `{}` failed at step #{} ({}): {op}\n{detail}\nsteps:\n",
            self.name,
            self.log.len(),
            Instant(self.now()),
        );
        for (i, line) in self.log.iter().enumerate() {
            let _ = writeln!(report, "  #{i:<3} {line}");
        }
        let _ = writeln!(report, "  #{:<3} {op}  <- failed here", self.log.len());
        report
    }
}

fn describe(limit: Limit<'_>) -> String {
    format!("{}[{}]", limit.key, limit.policy)
}

fn describe_all(limits: &[Limit<'_>]) -> String {
    limits
        .iter()
        .map(|&l| describe(l))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An instant as seconds with nanosecond digits.
struct Instant(Nanos);

impl Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.as_u64();
        write!(f, "{}.{:09}s", n / 1_000_000_000, n % 1_000_000_000)
    }
}

/// Compact renderings for the step log.
struct ShortDecision<'a>(&'a Decision);
struct ShortVerdict<'a>(&'a Verdict);
struct ShortReservation<'a>(&'a Reservation);

impl Display for ShortDecision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let word = if d.allowed {
            "allow"
        } else if d.cost_exceeds_capacity {
            "exceeds"
        } else {
            "deny"
        };
        write!(
            f,
            "{word} {}/{} reset_after {:?}",
            d.remaining, d.limit, d.reset_after
        )?;
        if let Some(retry) = d.retry_after {
            write!(f, " retry_after {retry:?}")?;
        }
        Ok(())
    }
}

impl Display for ShortVerdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.allowed { "allowed" } else { "refused" })?;
        for d in &self.0.decisions {
            write!(f, " ({})", ShortDecision(d))?;
        }
        Ok(())
    }
}

impl Display for ShortReservation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "{{{} ", ShortVerdict(&r.verdict))?;
        write!(
            f,
            "ready_at {} wait {:?} holds [",
            Instant(r.ready_at),
            r.wait
        )?;
        for (i, h) in r.holds.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(
                f,
                "{sep}{}[{}] cost {} at {} lease {}",
                h.key,
                h.policy,
                h.ticket.cost,
                Instant(h.ticket.at),
                h.ticket.lease
            )?;
        }
        f.write_str("]}")
    }
}
