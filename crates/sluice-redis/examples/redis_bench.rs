//! RedisStore against a throwaway local `redis-server`: Redis CPU per decision for every
//! algorithm (from `INFO commandstats`), `FCALL`s per decision, decisions per second
//! with 1, 16 and 256 concurrent tasks beside `redis-benchmark` calling the same script with
//! the same arguments (the ceiling), and latency percentiles.
//!
//! `cargo run --release -p sluice-redis --example redis_bench`

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::{AlgorithmKind, Clock, Key, MonotonicClock, Policy, Rate};
use sluice_redis::RedisStore;
use sluice_store::{Limit, Store};
use sluice_testkit::RedisServer;

const KEYS: usize = 1000;

fn policy(kind: AlgorithmKind) -> Policy {
    // Generous limits: the benchmark measures the admitting path.
    let rate = match kind {
        AlgorithmKind::SlidingLog => Rate::new(100, Duration::from_millis(1)),
        AlgorithmKind::Concurrency => Rate::new(1_000_000, Duration::from_millis(1)),
        _ => Rate::new(1_000_000, Duration::from_secs(1)),
    };
    Policy::new(kind, rate.expect("valid rate"))
}

/// Runs `total` checks from `tasks` concurrent tasks; returns decisions per second and the
/// sorted per-call latencies in microseconds.
async fn run(store: &RedisStore, policy: Policy, tasks: usize, total: usize) -> (f64, Vec<f64>) {
    let keys: Arc<Vec<Key>> = Arc::new(
        (0..KEYS)
            .map(|i| Key::new("bench", [("user", i.to_string())]).expect("key"))
            .collect(),
    );
    let clock = MonotonicClock::new();
    let start = clock.now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (store, keys, clock) = (store.clone(), Arc::clone(&keys), clock.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = t;
            while i < total {
                let key = &keys[(i * 7919) % KEYS];
                let began = clock.now();
                store
                    .check(Limit::new(key, &policy), 1)
                    .await
                    .expect("decision");
                latencies.push(clock.now().saturating_since(began).as_secs_f64() * 1e6);
                i += tasks;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.expect("task"));
    }
    let secs = clock.now().saturating_since(start).as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (total as f64 / secs, latencies)
}

fn percentile(sorted: &[f64], per_mille: usize) -> f64 {
    sorted[(sorted.len() - 1) * per_mille / 1000]
}

/// `redis-benchmark` calling the function directly with the arguments RedisStore sends for
/// a GCRA check on one of `KEYS` random keys: requests per second.
fn ceiling(server: &RedisServer, clients: usize) -> f64 {
    let p = policy(AlgorithmKind::Gcra);
    let out = Command::new("redis-benchmark")
        .args(["-p", &server.port().to_string(), "-c", &clients.to_string()])
        .args(["-n", "200000", "-r", &KEYS.to_string(), "-q"])
        .args([
            "FCALL",
            "sluice",
            "1",
            "sl:{bench}:ggjdgxs:|user=__rand_int__",
        ])
        .args(["check", "", "1", "0", "0", "1", "g"])
        .args([p.limit(), p.period_nanos(), p.burst(), p.emission_nanos()].map(|n| n.to_string()))
        .output()
        .expect("redis-benchmark on PATH");
    // "FCALL ...: 123456.79 requests per second, p50=..."
    let text = String::from_utf8_lossy(&out.stdout);
    let before = text.split(" requests per second").next().unwrap_or("");
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let server = RedisServer::spawn().expect("redis-server on PATH");
    let store = RedisStore::connect(&server.url()).await.expect("connect");

    println!(
        "Redis CPU per decision (INFO commandstats), 20,000 checks over {KEYS} keys, 16 tasks:"
    );
    println!(
        "  {:<15} {:>14} {:>17}",
        "algorithm", "usec_per_call", "fcall/decision"
    );
    for kind in AlgorithmKind::ALL {
        server.command(&["CONFIG", "RESETSTAT"]).expect("RESETSTAT");
        run(&store, policy(kind), 16, 20_000).await;
        let (calls, usec) = server.command_stats("fcall").expect("INFO");
        println!(
            "  {:<15} {:>14.2} {:>17.3}   ({calls} fcall)",
            kind.name(),
            usec,
            calls as f64 / 20_000.0
        );
    }

    // One GCRA key that stays (10 per hour): what a limit costs Redis while it is live.
    let hourly = Policy::parse("gcra", "10/h").expect("policy");
    let user = Key::new("api", [("user", "1234567")]).expect("key");
    store
        .check(Limit::new(&user, &hourly), 1)
        .await
        .expect("decision");
    let key = "sl:{api}:g19xtf1ts0:|user=1234567";
    let bytes = server
        .command(&["MEMORY", "USAGE", key])
        .expect("MEMORY USAGE");
    println!(
        "\nRedis memory of one GCRA key ({key}): {} bytes",
        bytes.trim()
    );

    println!("\nGCRA decisions per second, 100,000 checks over {KEYS} keys:");
    println!(
        "  {:<10} {:>12} {:>10} {:>10}",
        "tasks", "decisions/s", "p50 us", "p99 us"
    );
    for tasks in [1, 16, 256] {
        let (rate, latencies) = run(&store, policy(AlgorithmKind::Gcra), tasks, 100_000).await;
        println!(
            "  {tasks:<10} {rate:>12.0} {:>10.0} {:>10.0}",
            percentile(&latencies, 500),
            percentile(&latencies, 990)
        );
    }
    for clients in [1, 16, 256] {
        println!(
            "  redis-benchmark FCALL -c {clients}: {:.0} requests/s",
            ceiling(&server, clients)
        );
    }
}
