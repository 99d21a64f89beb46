//! sluice-testkit: helpers shared by sluice's tests. A dev-dependency only, never a
//! dependency of a library or the binary.
//!
//! Today it drives time by hand: [`clock_at`] makes a [`ManualClock`] standing at a given
//! second, and [`ClockExt`] moves it in readable steps, returning the new instant so that
//! a test can pass it straight to an algorithm as `now`.
//!
//! ```
//! use sluice_core::{Algorithm, Gcra, GcraState, Policy};
//! use sluice_testkit::{Clock, ClockExt, clock_at};
//!
//! let policy = Policy::parse("gcra", "1/s").unwrap();
//! let mut state = GcraState::default();
//! let clock = clock_at(100);
//! assert!(Gcra::check(&policy, &mut state, 1, clock.now()).allowed);
//! assert!(!Gcra::check(&policy, &mut state, 1, clock.advance_ms(999)).allowed);
//! assert!(Gcra::check(&policy, &mut state, 1, clock.advance_ms(1)).allowed);
//! ```
//!
//! For `sluice-redis` it runs real Redis: [`RedisServer::spawn`] starts a throwaway
//! `redis-server` and [`RedisCluster::spawn`] a throwaway Redis Cluster, on free loopback
//! ports (never 6379) with persistence off, each killed by its process id and its
//! directory removed when dropped. Both need `redis-server` (and, for a cluster,
//! `redis-cli`) on `PATH`; `scripts/test` installs them. Fault tests stop and restart
//! them on the same ports, and drive them with a tiny RESP helper ([`RedisServer::command`])
//! that needs no Redis client crate.
//!
//! ```no_run
//! # fn main() -> Result<(), sluice_testkit::TestkitError> {
//! let redis = sluice_testkit::RedisServer::spawn()?;
//! assert_eq!(redis.command(&["PING"])?, "PONG");
//! let cluster = sluice_testkit::RedisCluster::spawn(3)?; // ready: cluster_state:ok
//! assert_eq!(cluster.urls().len(), 3);
//! # Ok(()) }
//! ```
//!
//! For `sluice-egress` it fakes a quota-limited upstream: [`FakeUpstream`] answers
//! OpenAI-style chat completions under requests-per-minute and tokens-per-minute buckets,
//! with OpenAI's `x-ratelimit-*` headers, 429 bodies and `retry-after-ms`, and injected
//! [`Fault`]s (server errors, timeouts, connection resets). It is a tower `Service` in
//! process, timed by an injected [`Clock`] and tokio's timer so that it runs under paused
//! tokio time, and [`FakeUpstream::serve`] puts it on a loopback port. Its [`stats`] and
//! per-request [`log`] are for assertions. See [`upstream`] for the rules.
//!
//! [`stats`]: FakeUpstream::stats
//! [`log`]: FakeUpstream::log
//!
//! ```
//! use std::sync::Arc;
//! use sluice_testkit::upstream::{FakeUpstream, FakeUpstreamConfig, Fault, chat_request};
//! use sluice_testkit::{ClockExt, clock_at};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let clock = clock_at(100);
//! let config = FakeUpstreamConfig { rpm: 60, ..FakeUpstreamConfig::default() };
//! let upstream = FakeUpstream::new(config, Arc::new(clock.clone()));
//! let ok = upstream.handle(chat_request("Hello", Some(10))).await.unwrap();
//! assert_eq!(ok.status(), 200);
//! assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], "59");
//! assert_eq!(ok.headers()["x-ratelimit-reset-requests"], "1s");
//!
//! upstream.fail_next(1, Fault::server_error(503));
//! clock.advance_ms(500);
//! let failed = upstream.handle(chat_request("Hello", Some(10))).await.unwrap();
//! assert_eq!(failed.status(), 503);
//! assert_eq!(upstream.stats().server_errors, 1);
//! # }
//! ```
//!
//! `sluice-core`'s own unit tests cannot use this crate: through it they would see a
//! second copy of `sluice-core` whose types differ from `crate::*`. Its integration tests
//! (`tests/`) and every other crate's tests can.

use std::time::Duration;

pub use sluice_core::{Clock, ManualClock, Nanos};

mod dir;
mod error;
mod port;
mod redis;
mod resp;
pub mod upstream;

pub use dir::temp_dir;
pub use error::TestkitError;
pub use port::free_port;
pub use redis::{RedisCluster, RedisServer};
pub use resp::Reply;
pub use upstream::{
    FakeServer, FakeStats, FakeUpstream, FakeUpstreamConfig, FakeUpstreamError, Fault, Served,
};

/// Nanoseconds in one second.
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A manual clock standing `secs` seconds after its epoch.
///
/// Starting away from zero keeps tests clear of the epoch, where "the window before this
/// one" or "one period ago" would saturate and hide off-by-one errors.
pub fn clock_at(secs: u64) -> ManualClock {
    ManualClock::new(Nanos::new(secs.saturating_mul(NANOS_PER_SEC)))
}

/// Readable steps for a [`ManualClock`]. Each returns the instant the clock then shows.
pub trait ClockExt {
    /// Moves the clock forward by `ms` milliseconds.
    fn advance_ms(&self, ms: u64) -> Nanos;

    /// Moves the clock forward by `secs` seconds.
    fn advance_secs(&self, secs: u64) -> Nanos;

    /// Sets the clock to `nanos` nanoseconds after its epoch; this may move it backwards,
    /// to test how a limit treats a clock that does not move forward.
    fn at(&self, nanos: u64) -> Nanos;
}

impl ClockExt for ManualClock {
    fn advance_ms(&self, ms: u64) -> Nanos {
        self.advance(Duration::from_millis(ms));
        self.now()
    }

    fn advance_secs(&self, secs: u64) -> Nanos {
        self.advance(Duration::from_secs(secs));
        self.now()
    }

    fn at(&self, nanos: u64) -> Nanos {
        self.set(Nanos::new(nanos));
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_move_every_clone_and_return_the_new_instant() {
        let clock = clock_at(5);
        let store_side = clock.clone();
        assert_eq!(store_side.now(), Nanos::new(5 * NANOS_PER_SEC));
        assert_eq!(clock.advance_ms(250), Nanos::new(5_250_000_000));
        assert_eq!(clock.advance_secs(2), Nanos::new(7_250_000_000));
        assert_eq!(store_side.now(), Nanos::new(7_250_000_000));
        assert_eq!(clock.at(42), Nanos::new(42));
        assert_eq!(store_side.now(), Nanos::new(42));
    }

    #[test]
    fn clock_at_saturates_instead_of_overflowing() {
        assert_eq!(clock_at(u64::MAX).now(), Nanos::MAX);
    }
}
