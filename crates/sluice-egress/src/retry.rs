//! Whether and when to try a failed call again: the one retry policy of the client, the
//! proxy and the batch engine.
//!
//! Pure: [`RetryConfig::next_step`] takes the failure, the attempts so far, the time spent
//! and a random number, and says what to do. The upstream's `Retry-After` wins when it gave
//! one (plus a small random spread); otherwise each class of failure backs off on its own
//! schedule ([`ClassBackoff`]): a rate limit waits a minute or more, a spent quota much
//! longer, a server error a moment.

use std::time::Duration;

use sluice_core::Backoff;
use sluice_core::backoff::after_hint;

use crate::classify::{ErrorClass, Idempotency, RetryRules, may_retry};

/// How retries are made.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included. 1 means never retry.
    pub max_attempts: u32,
    /// No retry starts later than this after the call began.
    pub max_elapsed: Duration,
    /// The backoff of each class of failure, when the upstream gave no hint.
    pub backoff: ClassBackoff,
    /// Added at random (up to this much) to an upstream's `Retry-After`, so that many
    /// clients told the same instant do not all return at it. Zero honours it exactly.
    pub retry_after_spread: Duration,
    /// Retry non-idempotent requests (POST) after failures that may have been processed
    /// (5xx, timeouts, broken connections). Off: only a 429 or a refused connection, which
    /// the upstream guarantees it did not process, are retried.
    pub retry_non_idempotent: bool,
    /// How long one attempt may take before it counts as a timeout.
    pub attempt_timeout: Duration,
    /// Keep trying a call the upstream turned away without doing it (429, an exhausted
    /// quota, 503 or 529, a refused connection, an open circuit) until `max_elapsed`,
    /// whatever `max_attempts` says: for work that must get through in the end, such as a
    /// batch. Other failures still stop at `max_attempts`.
    pub until_processed: bool,
}

impl Default for RetryConfig {
    /// 5 attempts within 10 minutes, the default [`ClassBackoff`], Retry-After plus up to
    /// 250 ms, POST not retried after a 5xx, 10 minutes per attempt (LLM answers are slow).
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(600),
            backoff: ClassBackoff::default(),
            retry_after_spread: Duration::from_millis(250),
            retry_non_idempotent: false,
            attempt_timeout: Duration::from_secs(600),
            until_processed: false,
        }
    }
}

/// Backoff schedules by class of failure. Retry number `n` (0 for the first) waits between
/// half and all of its class's `min(max, base × 2^n)`, at random: never the instant retry
/// that full jitter may draw, and spread so that callers that failed together return apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassBackoff {
    /// After a 429 without `Retry-After`.
    pub rate_limited: Backoff,
    /// After the upstream said its quota is spent (billing, a daily limit).
    pub quota_exhausted: Backoff,
    /// After anything else: 5xx, 503/529, timeouts, connections refused or broken.
    pub server_error: Backoff,
}

impl Default for ClassBackoff {
    /// Rate limited 60 s → 300 s, quota exhausted 300 s → 3600 s, server errors
    /// 500 ms → 4 s.
    fn default() -> Self {
        Self {
            rate_limited: Backoff {
                base: Duration::from_secs(60),
                max: Duration::from_secs(300),
            },
            quota_exhausted: Backoff {
                base: Duration::from_secs(300),
                max: Duration::from_secs(3600),
            },
            server_error: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(4),
            },
        }
    }
}

impl ClassBackoff {
    /// The schedule of `class`.
    pub fn of(&self, class: ErrorClass) -> Backoff {
        match class {
            ErrorClass::RateLimited => self.rate_limited,
            ErrorClass::QuotaExhausted => self.quota_exhausted,
            _ => self.server_error,
        }
    }

    /// The wait before retry number `retry` (0 for the first) after a failure of `class`,
    /// with `unit` a random number in `[0, 1)`: between half and all of the ceiling.
    pub fn wait(&self, class: ErrorClass, retry: u32, unit: f64) -> Duration {
        self.of(class).equal_jitter(retry, unit)
    }
}

/// A failed attempt, as the retry policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Why it failed.
    pub class: ErrorClass,
    /// Whether sending the request twice is harmless.
    pub idempotency: Idempotency,
    /// The upstream's `Retry-After` (or `retry-after-ms`).
    pub retry_after: Option<Duration>,
    /// The upstream's `x-should-retry`.
    pub should_retry: Option<bool>,
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// It succeeded.
    Done,
    /// Try again after this wait.
    RetryAfter(Duration),
    /// It failed, and another attempt is not allowed or not worth it.
    GiveUp,
}

/// Whether the upstream turned the call away without doing it, so that sending it again
/// is always safe and, given time, should work.
fn turned_away(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::RateLimited
            | ErrorClass::QuotaExhausted
            | ErrorClass::Overloaded
            | ErrorClass::Connect
    )
}

impl RetryConfig {
    /// What to do after attempt number `attempts` (1 for the first) failed with `failure`,
    /// `elapsed` after the call began; `unit` is a random number in `[0, 1)`.
    pub fn next_step(
        &self,
        failure: &Failure,
        attempts: u32,
        elapsed: Duration,
        unit: f64,
    ) -> NextStep {
        let rules = RetryRules {
            retry_non_idempotent: self.retry_non_idempotent,
        };
        let persist = self.until_processed && turned_away(failure.class);
        let retryable = if persist {
            failure.should_retry != Some(false)
        } else {
            may_retry(
                failure.class,
                failure.idempotency,
                &rules,
                failure.should_retry,
            )
        };
        let wait = match failure.retry_after {
            Some(hint) => after_hint(hint, self.retry_after_spread, unit),
            None => self
                .backoff
                .wait(failure.class, attempts.saturating_sub(1), unit),
        };
        let out_of_attempts = !persist && attempts >= self.max_attempts;
        if !retryable || out_of_attempts || elapsed.saturating_add(wait) > self.max_elapsed {
            return NextStep::GiveUp;
        }
        NextStep::RetryAfter(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(class: ErrorClass) -> Failure {
        Failure {
            class,
            idempotency: Idempotency::NotIdempotent,
            retry_after: None,
            should_retry: None,
        }
    }

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn each_class_backs_off_on_its_own_schedule_between_half_and_all_of_it() {
        let b = ClassBackoff::default();
        let waits =
            |class, unit| -> Vec<Duration> { (0..5).map(|r| b.wait(class, r, unit)).collect() };
        assert_eq!(
            waits(ErrorClass::RateLimited, 0.0),
            [30, 60, 120, 150, 150].map(secs)
        );
        assert_eq!(
            waits(ErrorClass::RateLimited, 1.0),
            [60, 120, 240, 300, 300].map(secs)
        );
        assert_eq!(
            waits(ErrorClass::QuotaExhausted, 1.0),
            [300, 600, 1200, 2400, 3600].map(secs)
        );
        assert_eq!(
            waits(ErrorClass::ServerError, 1.0),
            [500, 1000, 2000, 4000, 4000].map(Duration::from_millis)
        );
        assert_eq!(
            b.wait(ErrorClass::Timeout, 0, 0.5),
            Duration::from_millis(375),
            "transport failures back off as server errors"
        );
    }

    #[test]
    fn retry_after_wins_over_the_schedule() {
        let config = RetryConfig::default();
        let mut f = failure(ErrorClass::RateLimited);
        f.retry_after = Some(secs(2));
        assert_eq!(
            config.next_step(&f, 1, Duration::ZERO, 0.0),
            NextStep::RetryAfter(secs(2))
        );
        assert_eq!(
            config.next_step(&f, 1, Duration::ZERO, 1.0),
            NextStep::RetryAfter(Duration::from_millis(2250))
        );
    }

    #[test]
    fn gives_up_when_not_retryable_out_of_attempts_or_out_of_time() {
        let config = RetryConfig::default();
        let step = |class, attempts, elapsed| {
            config.next_step(&failure(class), attempts, secs(elapsed), 0.0)
        };
        assert_eq!(
            step(ErrorClass::RateLimited, 1, 0),
            NextStep::RetryAfter(secs(30))
        );
        assert_eq!(
            step(ErrorClass::RateLimited, 5, 0),
            NextStep::GiveUp,
            "5 of 5"
        );
        assert_eq!(
            step(ErrorClass::RateLimited, 1, 571),
            NextStep::GiveUp,
            "beyond 600 s"
        );
        assert_eq!(step(ErrorClass::QuotaExhausted, 1, 0), NextStep::GiveUp);
        assert_eq!(step(ErrorClass::NotRetryable, 1, 0), NextStep::GiveUp);
        assert_eq!(
            step(ErrorClass::ServerError, 1, 0),
            NextStep::GiveUp,
            "a POST may have been processed"
        );
        assert_eq!(
            step(ErrorClass::Connect, 1, 0),
            NextStep::RetryAfter(Duration::from_millis(250)),
            "never sent"
        );
    }

    #[test]
    fn until_processed_keeps_trying_what_the_upstream_turned_away() {
        let config = RetryConfig {
            until_processed: true,
            max_elapsed: secs(7200),
            ..RetryConfig::default()
        };
        let step = |class, attempts| config.next_step(&failure(class), attempts, secs(0), 0.0);
        assert_eq!(
            step(ErrorClass::RateLimited, 50),
            NextStep::RetryAfter(secs(150))
        );
        assert_eq!(
            step(ErrorClass::QuotaExhausted, 1),
            NextStep::RetryAfter(secs(150))
        );
        assert!(matches!(
            step(ErrorClass::Overloaded, 50),
            NextStep::RetryAfter(_)
        ));
        assert_eq!(
            step(ErrorClass::ServerError, 1),
            NextStep::GiveUp,
            "a failure the upstream may have processed still follows the usual rules"
        );
        assert_eq!(
            config.next_step(&failure(ErrorClass::RateLimited), 50, secs(7100), 0.0),
            NextStep::GiveUp,
            "but never past max_elapsed"
        );
    }
}
