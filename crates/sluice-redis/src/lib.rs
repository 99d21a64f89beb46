//! sluice-redis: limits shared by many processes through Redis (single node or Redis
//! Cluster).
//!
//! [`RedisStore`] implements sluice-store's `Store` with one Lua function library
//! (`sluice.lua`) that holds every algorithm of sluice-core, mirrored operation for
//! operation: a decision, including a request checked against several limits all or
//! nothing, is one `FCALL` round trip. The library is loaded once per server with
//! `FUNCTION LOAD` and loaded again transparently when a restarted or failed-over server
//! has lost it. It reads Redis `TIME`, so instances whose clocks disagree still agree; tests
//! may pass the time from a [`Clock`](sluice_core::Clock) instead. What happens when Redis is unreachable is not
//! this crate's business: wrap the store in sluice-store's failure handling.
//!
//! [`RedisQueues`] implements sluice-store's queue contract with the same library: waiting
//! in line for limits, one line shared by every process on the Redis.
//!
//! This crate does not pick a failure policy, spawn tasks or read configuration.

mod keys;
mod queue;
mod store;

pub use keys::{HashTag, MAX_SPAN_NANOS};
pub use queue::RedisQueues;
pub use store::{RedisError, RedisStore};
