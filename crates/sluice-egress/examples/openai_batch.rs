//! A batch of chat completions paced against a quota-limited, OpenAI-style upstream.
//!
//! It starts sluice-testkit's fake upstream on a loopback port (600 requests a minute by
//! default, with OpenAI's `x-ratelimit-*` headers and 429s), then sends the batch through a
//! reqwest client with sluice's [`EgressMiddleware`] from 16 workers, printing what the
//! client knows every few seconds. Without sluice those workers would flood the upstream
//! with 429s; with it they spend the quota at the rate it refills.
//!
//! ```text
//! cargo run -p sluice-egress --features reqwest --example openai_batch
//! SLUICE_EXAMPLE_REQUESTS=500 SLUICE_EXAMPLE_RPM=1200 cargo run -p sluice-egress --features reqwest --example openai_batch
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_core::Clock;
use sluice_egress::reqwest::EgressMiddleware;
use sluice_egress::{Egress, EgressConfig, TokioClock};
use sluice_testkit::upstream::{FakeUpstream, FakeUpstreamConfig, chat_body};

#[path = "support/mod.rs"]
mod support;

use support::env_number;

const WORKERS: usize = 16;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests = usize::try_from(env_number("SLUICE_EXAMPLE_REQUESTS", 200)?)?;
    let rpm = env_number("SLUICE_EXAMPLE_RPM", 600)?;

    let clock = TokioClock::new();
    let upstream = FakeUpstream::new(
        FakeUpstreamConfig {
            rpm,
            latency: Duration::from_millis(300),
            ..FakeUpstreamConfig::default()
        },
        Arc::new(clock),
    );
    let server = upstream.serve().await?;
    println!(
        "fake upstream at {} allows {rpm} requests a minute; sending {requests} chat completions from {WORKERS} workers",
        server.url()
    );

    let egress = Egress::new(EgressConfig::new("fake-openai"))?;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(EgressMiddleware::new(egress.clone()))
        .build();
    let url = format!("{}/v1/chat/completions", server.url());
    let started = clock.now();

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, url, next, done) = (client.clone(), url.clone(), next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let body = chat_body("Write a haiku about a sluice gate.", Some(60));
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                match answer {
                    Ok(answer) if answer.status().is_success() => {}
                    Ok(answer) => failures.push(format!("HTTP {}", answer.status())),
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }

    let progress = {
        let (egress, done) = (egress.clone(), done.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3));
            tick.tick().await;
            loop {
                tick.tick().await;
                let stats = egress.stats();
                let (_, requests_pace) = &stats.pace[0];
                println!(
                    "  {:>5} done · pace {} · in flight {}/{} · 429s {} · waiting {}",
                    done.load(Ordering::Relaxed),
                    requests_pace
                        .rate_per_minute
                        .map_or("not yet known".to_owned(), |r| format!("{r:.0}/min")),
                    stats.in_flight,
                    stats.concurrency_limit,
                    stats.rate_limited,
                    stats.waiting,
                );
            }
        })
    };

    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await?);
    }
    progress.abort();
    let elapsed = clock.now().saturating_since(started).as_secs_f64();
    let fake = upstream.stats();
    println!(
        "done: {requests} calls in {elapsed:.1} s ({:.0} a minute, {:.0} % of the quota: a short run gains from the first answers and the one-second burst); the upstream answered {} 429s; {} calls failed",
        requests as f64 / elapsed * 60.0,
        requests as f64 / elapsed * 60.0 / rpm as f64 * 100.0,
        fake.rate_limited,
        failures.len()
    );
    for failure in failures.iter().take(5) {
        println!("  failure: {failure}");
    }
    server.shutdown().await;
    Ok(())
}
