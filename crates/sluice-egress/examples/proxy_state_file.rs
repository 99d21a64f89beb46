//! Whether `--state-file` costs the proxy latency: a steady load of chat completions (a
//! few thousand a second) straight to sluice-testkit's fake upstream, through a proxy, and
//! through a proxy that keeps its quota state in a file (rewritten every second), in
//! alternating rounds of one run, with the median of each round's percentiles.
//!
//! The fake answers at once with a quota far above the load, so the proxy never waits for
//! pace: a difference between the two proxies is the state file's cost. (Before the state
//! file had its own writer thread, the client wrote and fsynced it under its lock once a
//! second, and every request in flight waited for the disk.)
//!
//! ```text
//! cargo run --release -p sluice-egress --features proxy --example proxy_state_file
//! SLUICE_EXAMPLE_RATE=4000 SLUICE_EXAMPLE_ROUNDS=7 SLUICE_EXAMPLE_SECONDS=4 \
//!     cargo run --release -p sluice-egress --features proxy --example proxy_state_file
//! ```

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_egress::proxy::{self, ProxyConfig};
use sluice_egress::{Egress, EgressConfig, TokioClock};
use sluice_testkit::upstream::{FakeUpstream, FakeUpstreamConfig, chat_body};
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;

#[path = "support/mod.rs"]
mod support;
#[path = "support/http.rs"]
mod support_http;

use support::{env_number, micros, percentile};
use support_http::{HttpClient, timed};

/// Requests in flight at once, each worker sending at its share of the rate.
const WORKERS: u32 = 8;

/// `rate` requests a second to `url` for `seconds`, from [`WORKERS`] workers on fixed
/// ticks; every latency, sorted.
async fn round(
    client: &HttpClient,
    url: &str,
    body: &Bytes,
    rate: u64,
    seconds: u64,
) -> Result<Vec<Duration>, String> {
    let per_worker = Duration::from_secs_f64(f64::from(WORKERS) / rate.max(1) as f64);
    let ticks = seconds * rate / u64::from(WORKERS);
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(per_worker);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut took = Vec::new();
                for _ in 0..ticks {
                    tick.tick().await;
                    took.push(timed(&client, &url, &body).await?);
                }
                Ok::<_, String>(took)
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.map_err(|e| e.to_string())??);
    }
    all.sort();
    Ok(all)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// A proxy in front of `upstream`, with its quota state in `state_file` if given.
async fn start_proxy(
    upstream: &str,
    state_file: Option<std::path::PathBuf>,
) -> Result<(String, Egress, tokio::sync::oneshot::Sender<()>), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let mut config = EgressConfig::new("fake-openai");
    config.state_file = state_file;
    let egress = Egress::new(config)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy::serve(
        ProxyConfig::new(upstream)?,
        listener,
        egress.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    Ok((format!("http://{addr}/v1/chat/completions"), egress, stop))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rate = env_number("SLUICE_EXAMPLE_RATE", 3_000)?;
    let rounds = env_number("SLUICE_EXAMPLE_ROUNDS", 5)?.max(1);
    let seconds = env_number("SLUICE_EXAMPLE_SECONDS", 3)?.max(1);

    let upstream = FakeUpstream::new(
        FakeUpstreamConfig {
            rpm: 100_000_000,
            tpm: 0,
            ..FakeUpstreamConfig::default()
        },
        Arc::new(TokioClock::new()),
    );
    let server = upstream.serve().await?;
    let dir = std::env::temp_dir().join(format!("sluice-proxy-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let state_file = dir.join("quota.json");
    let (plain_url, _plain, stop_plain) = start_proxy(&server.url(), None).await?;
    let (state_url, with_state, stop_state) =
        start_proxy(&server.url(), Some(state_file.clone())).await?;
    let direct_url = format!("{}/v1/chat/completions", server.url());
    let body = Bytes::from(chat_body("How fast is the proxy?", Some(16)).to_string());
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let paths = [
        ("direct", direct_url.as_str()),
        ("proxy", plain_url.as_str()),
        ("proxy --state-file", state_url.as_str()),
    ];
    println!(
        "{rounds} rounds of {seconds} s at {rate} requests/s ({WORKERS} workers) on each of: {}; \
         the paths alternate, their order rotating each round",
        paths.map(|(name, _)| name).join(", ")
    );
    // Warm-up: connections, allocators, the proxies' first state-file write.
    for (_, url) in paths {
        round(&client, url, &body, rate, 1).await?;
    }
    let mut results: Vec<Vec<[Duration; 4]>> = vec![Vec::new(); paths.len()];
    for r in 0..usize::try_from(rounds)? {
        for i in 0..paths.len() {
            let index = (i + r) % paths.len();
            let sorted = round(&client, paths[index].1, &body, rate, seconds).await?;
            results[index].push([
                percentile(&sorted, 0.50),
                percentile(&sorted, 0.99),
                percentile(&sorted, 0.999),
                sorted[sorted.len() - 1],
            ]);
        }
    }
    let medians: Vec<[Duration; 4]> = results
        .iter()
        .map(|rounds| std::array::from_fn(|k| median(rounds.iter().map(|r| r[k]).collect())))
        .collect();

    println!();
    println!("| path (median of {rounds} rounds) | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|");
    for ((name, _), m) in paths.iter().zip(&medians) {
        println!(
            "| {name} | {} | {} | {} | {} |",
            micros(m[0]),
            micros(m[1]),
            micros(m[2]),
            micros(m[3])
        );
    }
    let added = |path: usize, k: usize| medians[path][k].saturating_sub(medians[0][k]);
    for (path, name) in [(1, "proxy"), (2, "proxy --state-file")] {
        println!(
            "| added by {name} | {} | {} | {} | |",
            micros(added(path, 0)),
            micros(added(path, 1)),
            micros(added(path, 2)),
        );
    }
    let (plain, state) = (added(1, 1), added(2, 1));
    #[allow(clippy::cast_precision_loss, reason = "a ratio of microseconds")]
    let ratio = state.as_nanos() as f64 / plain.as_nanos().max(1) as f64;
    println!("\np99 added with --state-file / without: {ratio:.2}");
    with_state.flush()?;
    println!(
        "the state file {} holds {} bytes; the fake upstream answered {} requests",
        state_file.display(),
        std::fs::metadata(&state_file)?.len(),
        upstream.stats().requests
    );
    let _ = stop_plain.send(());
    let _ = stop_state.send(());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
