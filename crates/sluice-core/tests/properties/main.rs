//! Property tests of sluice-core's algorithms (proptest).
//!
//! Random small policies (limits and periods of a few nanoseconds, so that windows roll,
//! buckets refill and leases expire within a short run) drive random operation sequences
//! (checks, reservations, refunds, charges) against every algorithm. The modules check:
//!
//! - [`bounds`]: exactly the admission bound stated in each algorithm's module doc, by
//!   replaying the admissions against a naive checker;
//! - [`gcra_model`]: GCRA decides exactly like a naive token bucket counted in nanoseconds;
//! - [`laws`]: the contract every algorithm shares: exact `retry_after`, cancel restores,
//!   settle semantics, `check == decide + apply`, `remaining` predicts admission, waiting
//!   never hurts, `reset_after` reaches full capacity.
//!
//! - [`parsers`]: the parsers of outside input (rates, algorithm names, durations, keys)
//!   never panic, name the bad part of the input, and parse back what they print.
//!
//! [`support`] holds the strategies and the driver that turns operations into a trace.

mod bounds;
mod gcra_model;
mod laws;
mod parsers;
mod support;
