//! RedisQueues under load on a throwaway local `redis-server`: N waiters (tasks of this
//! process, each with its own `acquire`) wait in one line on a `10/s` limit for a few
//! seconds. Reports grants per second, `FCALL`s per grant and per second, Redis CPU per
//! call (from `INFO commandstats`), and the line's Redis memory per waiter (`MEMORY USAGE`).
//!
//! `cargo run --release -p sluice-redis --example queue_load`
//! `SLUICE_EXAMPLE_WAITERS=1000 SLUICE_EXAMPLE_POLL_MS=100 cargo run --release -p sluice-redis --example queue_load`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_core::queue::{Overflow, QueueConfig};
use sluice_core::{Key, Policy};
use sluice_redis::{RedisQueues, RedisStore};
use sluice_store::Limit;
use sluice_store::queue::{Line, Request, acquire};
use sluice_testkit::RedisServer;
use tokio::time::Instant;

fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|e| format!("{name}={value:?} is not a whole number: {e}")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let waiters = usize::try_from(env_number("SLUICE_EXAMPLE_WAITERS", 1000)?)?;
    let seconds = env_number("SLUICE_EXAMPLE_SECONDS", 5)?;
    let poll = Duration::from_millis(env_number("SLUICE_EXAMPLE_POLL_MS", 100)?);
    let server = RedisServer::spawn()?;
    let store = RedisStore::connect(&server.url()).await?;
    let queues = Arc::new(RedisQueues::new(store));
    let key = Arc::new(Key::new("queue-load", [("line", "one")])?);
    let policy = Arc::new(Policy::parse("gcra", "10/s")?);
    let wall = Instant::now();

    println!(
        "{waiters} waiters in one Redis line on a 10/s GCRA limit for {seconds} s, polling at most every {poll:?}"
    );
    let granted = Arc::new(AtomicU64::new(0));
    let (before_calls, _) = server.command_stats("fcall")?;
    let mut tasks = Vec::new();
    for i in 0..waiters {
        let (queues, key, policy, granted) = (
            Arc::clone(&queues),
            Arc::clone(&key),
            Arc::clone(&policy),
            Arc::clone(&granted),
        );
        let tenant = format!("tenant-{}", i % 10);
        tasks.push(tokio::spawn(async move {
            let limits = [Limit::new(&key, &policy)];
            let line = Line {
                key: &key,
                limits: &limits,
                config: QueueConfig {
                    max_length: 100_000,
                    overflow: Overflow::RejectNew,
                },
            };
            let request = Request {
                cost: 1,
                priority: 0,
                tenant: Some(&tenant),
                max_wait: Duration::from_secs(seconds),
            };
            let sleep = tokio::time::sleep;
            if acquire(&*queues, line, request, poll, sleep).await.is_ok() {
                granted.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The line's size once everyone has joined.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let memory: f64 = ["m", "w", "r", "t", "f", "d", "i", "p", "c", "o", "l"]
        .iter()
        .map(|part| {
            let key = format!("sl:{{queue-load}}:q:|line=one:{part}");
            server
                .command(&["MEMORY", "USAGE", &key, "SAMPLES", "0"])
                .unwrap_or_default()
                .trim()
                .parse::<f64>()
                .unwrap_or(0.0)
        })
        .sum();
    for task in tasks {
        task.await?;
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let (after_calls, usec_per_call) = server.command_stats("fcall")?;
    let calls = after_calls - before_calls;
    let grants = granted.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss, reason = "figures for a table")]
    let (per_grant, per_second) = (calls as f64 / grants.max(1) as f64, calls as f64 / elapsed);
    #[allow(clippy::cast_precision_loss, reason = "figures for a table")]
    let per_waiter = memory / waiters.max(1) as f64;
    println!();
    println!(
        "| waiters | grants | grants/s | FCALLs | FCALLs/grant | FCALLs/s | Redis µs/FCALL | line bytes/waiter |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    #[allow(clippy::cast_precision_loss, reason = "figures for a table")]
    let rate = grants as f64 / elapsed;
    println!(
        "| {waiters} | {grants} | {rate:.1} | {calls} | {per_grant:.1} | {per_second:.0} | {usec_per_call:.1} | {per_waiter:.0} |"
    );
    Ok(())
}
