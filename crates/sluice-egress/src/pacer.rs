//! Pacing: spend an upstream's quota at the rate it refills, by requests and by tokens.
//!
//! Each dimension (requests, tokens) is a GCRA bucket in a [`Store`]: the in-memory store
//! for one process, the Redis store for several processes sharing one upstream account.
//! A call first *reserves* one request and its estimated tokens (the prompt plus
//! `max_tokens`), waits until the reservation is ready, and after the answer *settles* the
//! tokens to what the upstream reports it used.
//!
//! The rate of each bucket is
//!
//! ```text
//! rate = ceiling × (1 − headroom) × aimd
//! ```
//!
//! - `ceiling` is the upstream's limit per minute: configured when known in advance, and
//!   replaced by what its headers say (`x-ratelimit-limit-*`) as soon as they say it.
//! - `headroom` keeps a small margin for clocks and in-flight calls (2 % by default).
//! - `aimd` is a fraction in `[min, 1]` that halves on a 429 and climbs back by small
//!   steps after runs of successes ([`Aimd`]): it finds the rate that actually works when
//!   the quota is shared with callers sluice cannot see.
//!
//! An upstream that never states its limit is not paced until its first 429; from then
//! on the requests bucket runs at the rate a [`RateProbe`] finds from the 429s alone, and
//! each 429's `Retry-After` pauses every caller. When the headers say a dimension is exhausted, it is
//! held until the upstream says a unit is back.
//!
//! The rate goes into each call's [`Policy`] with a fixed period of one hour, so that a
//! store keeps one state per dimension while the rate changes (stores key state by key
//! and period).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sluice_core::{Aimd, AimdConfig, AimdError, Key, Nanos, Policy, Rate, time::duration_nanos};
use sluice_http::{Dimension, Family, UpstreamSignals};
use sluice_store::{Limit, Reservation, Store};

use crate::probe::RateProbe;

/// How the pacer spends a quota.
#[derive(Clone, Debug, PartialEq)]
pub struct PaceConfig {
    /// The upstream's request limit per minute when known in advance; headers replace it.
    pub requests_per_minute: Option<u64>,
    /// The upstream's token limit per minute when known in advance; headers replace it.
    pub tokens_per_minute: Option<u64>,
    /// The fraction of the ceiling left unused, in `[0, 0.5]`.
    pub headroom: f64,
    /// How much of a rate may go at once after a quiet spell.
    pub burst: Duration,
    /// The adaptive fraction of the ceiling: `max` must be 1 (the ceiling is the
    /// upstream's word), `min` is the floor a run of 429s can push it to.
    pub aimd: AimdConfig,
}

impl Default for PaceConfig {
    /// Unknown limits (learned from headers), 2 % headroom, bursts of one second's worth,
    /// and an AIMD fraction that halves on a 429 (at most once per 2 s) down to 5 %, and
    /// climbs by 2 % after each 5 successes.
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            headroom: 0.02,
            burst: Duration::from_secs(1),
            aimd: AimdConfig {
                min: 0.05,
                max: 1.0,
                increase: 0.02,
                decrease: 0.5,
                successes_per_increase: 5,
                decrease_cooldown: Duration::from_secs(2),
            },
        }
    }
}

impl PaceConfig {
    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> Result<(), PaceConfigError> {
        if !(0.0..=0.5).contains(&self.headroom) {
            return Err(PaceConfigError::Headroom(self.headroom));
        }
        if self.requests_per_minute == Some(0) {
            return Err(PaceConfigError::Zero("requests_per_minute"));
        }
        if self.tokens_per_minute == Some(0) {
            return Err(PaceConfigError::Zero("tokens_per_minute"));
        }
        if self.burst.is_zero() {
            return Err(PaceConfigError::Zero("burst"));
        }
        self.aimd.validate()?;
        if self.aimd.max > 1.0 {
            return Err(PaceConfigError::AimdMax(self.aimd.max));
        }
        Ok(())
    }
}

/// A [`PaceConfig`] that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum PaceConfigError {
    /// `headroom` outside `[0, 0.5]`.
    #[error("pace.headroom must be within [0, 0.5], got {0}")]
    Headroom(f64),
    /// A limit or duration of zero.
    #[error("pace.{0} must be more than 0")]
    Zero(&'static str),
    /// The AIMD fraction may not exceed the ceiling.
    #[error("pace.aimd.max is a fraction of the upstream's limit and must be at most 1, got {0}")]
    AimdMax(f64),
    /// The AIMD settings.
    #[error("pace.{0}")]
    Aimd(#[from] AimdError),
}

/// Which quota dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaceDimension {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl PaceDimension {
    /// `requests` or `tokens`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// What one dimension of the pacer stands at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DimensionPace {
    /// The upstream's limit per minute, when known.
    pub ceiling_per_minute: Option<f64>,
    /// Whether the ceiling came from the upstream's headers (else from the config).
    pub learned: bool,
    /// The AIMD fraction of the ceiling in use.
    pub fraction: f64,
    /// The rate paced at, per minute; `None` when not paced.
    pub rate_per_minute: Option<f64>,
    /// Held (exhausted, or told to retry later) until this instant.
    pub held_until: Option<Nanos>,
}

/// The reservations one call took, to settle or cancel after the call.
#[derive(Debug)]
#[must_use = "settle or cancel the reservation after the call"]
pub(crate) struct Paced {
    /// How long to wait before sending.
    pub wait: Duration,
    requests: Option<Reservation>,
    tokens: Option<Reservation>,
}

/// Why the pacer did not reserve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaceError {
    /// The call would have to wait longer than it may.
    #[error(
        "{dimension} quota: the next slot is in {wait:?}, beyond the {max_wait:?} this call may wait"
    )]
    WouldWait {
        /// The dimension that would make it wait.
        dimension: &'static str,
        /// How long it would wait, at least.
        wait: Duration,
        /// How long it may wait.
        max_wait: Duration,
    },
    /// The call needs more tokens than the bucket can ever hold at once.
    #[error(
        "a call estimated at {estimate} tokens exceeds the upstream's {limit} tokens per minute"
    )]
    TooLarge {
        /// The call's estimate.
        estimate: u64,
        /// The limit per minute.
        limit: u64,
    },
    /// The store failed.
    #[error("pacing store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The per-dimension state behind the lock.
#[derive(Debug)]
struct Lane {
    key: Key,
    configured: Option<f64>,
    learned: Option<f64>,
    aimd: Aimd,
    /// The rate found from 429s alone while no ceiling is known.
    probe: RateProbe,
    held_until: Option<Nanos>,
}

impl Lane {
    fn new(
        upstream: &str,
        dimension: PaceDimension,
        configured: Option<u64>,
        aimd: &AimdConfig,
    ) -> Self {
        Self {
            key: Key::named(&format!("sluice-egress|{upstream}|{}", dimension.name())),
            #[allow(
                clippy::cast_precision_loss,
                reason = "limits per minute are far below 2^52"
            )]
            configured: configured.map(|n| n as f64),
            learned: None,
            aimd: Aimd::new(aimd.clone(), aimd.max),
            probe: RateProbe::default(),
            held_until: None,
        }
    }

    fn ceiling(&self) -> Option<f64> {
        self.learned.or(self.configured)
    }

    fn rate_per_minute(&self, headroom: f64) -> Option<f64> {
        match self.ceiling() {
            Some(c) => Some(c * (1.0 - headroom) * self.aimd.value()),
            None => self.probe.rate_per_minute(),
        }
    }

    fn on_success(&mut self, now: Nanos) {
        self.probe.on_success(now);
        self.aimd.on_success(now);
    }

    fn on_congestion(&mut self, now: Nanos) {
        if self.ceiling().is_some() {
            self.aimd.on_congestion(now);
        } else {
            self.probe.on_rate_limited(now);
        }
    }

    fn view(&self, headroom: f64, now: Nanos) -> DimensionPace {
        DimensionPace {
            ceiling_per_minute: self.ceiling(),
            learned: self.learned.is_some(),
            fraction: self.aimd.value(),
            rate_per_minute: self.rate_per_minute(headroom),
            held_until: self.held_until.filter(|&t| t > now),
        }
    }

    /// The GCRA policy for this lane now, able to take `cost` at once; `None` when unpaced.
    fn policy(&self, headroom: f64, burst: Duration, cost: u64) -> Option<Policy> {
        let per_minute = self.rate_per_minute(headroom)?;
        let per_hour = whole_units(per_minute * 60.0).max(1);
        let rate = Rate::new(per_hour, HOUR).ok()?;
        let burst_units = whole_units(per_minute / 60.0 * burst.as_secs_f64())
            .max(cost)
            .max(1);
        Policy::gcra(rate).with_burst(burst_units).ok()
    }

    /// Takes what the upstream said about this dimension.
    fn observe(&mut self, dimension: &Dimension, now: Nanos) {
        if let Some(limit) = dimension.limit {
            let window = dimension.window.unwrap_or(MINUTE);
            if !window.is_zero() {
                #[allow(clippy::cast_precision_loss, reason = "limits are far below 2^52")]
                let per_minute = limit as f64 * MINUTE.as_secs_f64() / window.as_secs_f64();
                self.learned = Some(per_minute);
            }
        }
        if dimension.remaining == Some(0)
            && let Some(reset) = dimension.reset_after
        {
            // OpenAI's buckets refill continuously and say when they are full again, so one
            // unit is back after reset / limit; a window (legacy, IETF) refills all at once.
            let back_in = match (dimension.source, dimension.limit) {
                (Some(Family::OpenAi), Some(limit)) if limit > 0 => {
                    Duration::from_nanos(duration_nanos(reset) / limit)
                }
                _ => reset,
            };
            self.hold(now.plus_nanos(duration_nanos(back_in)));
        }
    }

    fn hold(&mut self, until: Nanos) {
        self.held_until = Some(self.held_until.map_or(until, |t| t.max(until)));
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Rounds a non-negative rate to whole units, saturating.
fn whole_units(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped above"
    )]
    let units = x.round().min(9.0e15) as u64;
    units
}

/// Paces calls to one upstream by requests and tokens. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Pacer<S> {
    store: S,
    headroom: f64,
    burst: Duration,
    lanes: Mutex<[Lane; 2]>,
}

impl<S: Store> Pacer<S> {
    /// A pacer for the upstream named `upstream` (its state's key in `store`).
    pub(crate) fn new(
        store: S,
        upstream: &str,
        config: &PaceConfig,
    ) -> Result<Self, PaceConfigError> {
        config.validate()?;
        Ok(Self {
            store,
            headroom: config.headroom,
            burst: config.burst,
            lanes: Mutex::new([
                Lane::new(
                    upstream,
                    PaceDimension::Requests,
                    config.requests_per_minute,
                    &config.aimd,
                ),
                Lane::new(
                    upstream,
                    PaceDimension::Tokens,
                    config.tokens_per_minute,
                    &config.aimd,
                ),
            ]),
        })
    }

    fn lanes(&self) -> MutexGuard<'_, [Lane; 2]> {
        // The lanes hold plain numbers: a panic elsewhere cannot leave them inconsistent.
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where each dimension stands at `now`.
    pub(crate) fn view(&self, now: Nanos) -> [(PaceDimension, DimensionPace); 2] {
        let lanes = self.lanes();
        [
            (PaceDimension::Requests, lanes[0].view(self.headroom, now)),
            (PaceDimension::Tokens, lanes[1].view(self.headroom, now)),
        ]
    }

    /// Reserves one request and `tokens` estimated tokens, for the earliest instant both
    /// are available, if that is at most `max_wait` after `now`.
    pub(crate) async fn reserve(
        &self,
        tokens: u64,
        max_wait: Duration,
        now: Nanos,
    ) -> Result<Paced, PaceError> {
        let (requests_policy, tokens_policy, held_until) = {
            let lanes = self.lanes();
            let held = lanes
                .iter()
                .filter_map(|l| l.held_until)
                .max()
                .filter(|&t| t > now);
            (
                lanes[0].policy(self.headroom, self.burst, 1),
                if tokens > 0 {
                    lanes[1].policy(self.headroom, self.burst, tokens)
                } else {
                    None
                },
                held,
            )
        };
        let held_wait = held_until.map_or(Duration::ZERO, |t| t.saturating_since(now));
        if held_wait > max_wait {
            return Err(PaceError::WouldWait {
                dimension: "upstream",
                wait: held_wait,
                max_wait,
            });
        }
        let keys = {
            let lanes = self.lanes();
            [lanes[0].key.clone(), lanes[1].key.clone()]
        };
        let requests = match &requests_policy {
            Some(policy) => Some(
                self.reserve_one(&keys[0], policy, 1, max_wait, "requests")
                    .await?,
            ),
            None => None,
        };
        let tokens = match &tokens_policy {
            Some(policy) => match self
                .reserve_one(&keys[1], policy, tokens, max_wait, "tokens")
                .await
            {
                Ok(r) => Some(r),
                Err(e) => {
                    if let Some(r) = &requests {
                        self.store.cancel(r).await.map_err(store_error)?;
                    }
                    return Err(e);
                }
            },
            None => None,
        };
        let wait = [&requests, &tokens]
            .into_iter()
            .flatten()
            .map(|r| r.wait)
            .chain([held_wait])
            .max()
            .unwrap_or_default();
        Ok(Paced {
            wait,
            requests,
            tokens,
        })
    }

    async fn reserve_one(
        &self,
        key: &Key,
        policy: &Policy,
        cost: u64,
        max_wait: Duration,
        dimension: &'static str,
    ) -> Result<Reservation, PaceError> {
        let reservation = self
            .store
            .reserve(&[Limit::new(key, policy)], cost, max_wait)
            .await
            .map_err(store_error)?;
        if reservation.granted() {
            return Ok(reservation);
        }
        let decision = reservation.verdict.decision();
        if decision.is_some_and(|d| d.cost_exceeds_capacity) {
            return Err(PaceError::TooLarge {
                estimate: cost,
                limit: policy.limit() / 60,
            });
        }
        let wait = decision.and_then(|d| d.retry_after).unwrap_or(max_wait);
        Err(PaceError::WouldWait {
            dimension,
            wait,
            max_wait,
        })
    }

    /// Corrects the tokens `paced` took to `actual`.
    pub(crate) async fn settle(&self, paced: &Paced, actual_tokens: u64) -> Result<(), PaceError> {
        if let Some(tokens) = &paced.tokens {
            self.store
                .settle(tokens, actual_tokens)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// Gives back everything `paced` took (the call was never sent).
    pub(crate) async fn cancel(&self, paced: &Paced) -> Result<(), PaceError> {
        for reservation in [&paced.requests, &paced.tokens].into_iter().flatten() {
            self.store.cancel(reservation).await.map_err(store_error)?;
        }
        Ok(())
    }

    /// Learns from an upstream's answer: its limits, what is exhausted, and how long it
    /// asked every caller to wait.
    pub(crate) fn observe(&self, signals: &UpstreamSignals, now: Nanos) {
        let mut lanes = self.lanes();
        lanes[0].observe(&signals.requests, now);
        lanes[1].observe(&signals.tokens, now);
        // A 429's Retry-After speaks for the whole account, so every caller waits it out.
        if let Some(wait) = signals
            .retry_after
            .filter(|_| signals.status.as_u16() == 429)
        {
            let until = now.plus_nanos(duration_nanos(wait));
            for lane in lanes.iter_mut() {
                lane.hold(until);
            }
        }
    }

    /// Holds every dimension until `until` (the upstream said its quota is exhausted).
    pub(crate) fn hold(&self, until: Nanos) {
        for lane in self.lanes().iter_mut() {
            lane.hold(until);
        }
    }

    /// A call succeeded: the AIMD fractions may climb.
    pub(crate) fn on_success(&self, now: Nanos) {
        for lane in self.lanes().iter_mut() {
            lane.on_success(now);
        }
    }

    /// The upstream said 429: slow the dimension it ran out of (both when it did not say).
    pub(crate) fn on_rate_limited(&self, signals: &UpstreamSignals, now: Nanos) {
        let mut lanes = self.lanes();
        let requests_out = signals.requests.remaining == Some(0);
        let tokens_out = signals.tokens.remaining == Some(0);
        let both = requests_out == tokens_out;
        if requests_out || both {
            lanes[0].on_congestion(now);
        }
        // The tokens a call uses are not known before its answer, so an upstream that
        // states no limit is probed by requests only.
        if (tokens_out || both) && lanes[1].ceiling().is_some() {
            lanes[1].on_congestion(now);
        }
    }
}

fn store_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> PaceError {
    PaceError::Store(Box::new(e))
}
