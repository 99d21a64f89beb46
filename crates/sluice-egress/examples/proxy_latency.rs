//! What `sluice proxy` adds to a request's latency: N sequential chat completions straight
//! to sluice-testkit's fake upstream and N through the proxy in front of it, interleaved in
//! one run over keep-alive loopback connections, with the percentiles of each side by side.
//!
//! The fake answers at once (no latency) with a quota far above the load, so the proxy
//! never waits for pace: what is measured is its own work per request (reading the body,
//! estimating tokens, the egress client's admission and accounting, a second HTTP hop).
//!
//! ```text
//! cargo run --release -p sluice-egress --features proxy --example proxy_latency
//! SLUICE_EXAMPLE_REQUESTS=10000 cargo run --release -p sluice-egress --features proxy --example proxy_latency
//! ```

use std::net::Ipv4Addr;
use std::sync::Arc;

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_egress::proxy::{self, ProxyConfig};
use sluice_egress::{Egress, EgressConfig, TokioClock};
use sluice_testkit::upstream::{FakeUpstream, FakeUpstreamConfig, chat_body};
use tokio::net::TcpListener;

#[path = "support/mod.rs"]
mod support;
#[path = "support/http.rs"]
mod support_http;

use support::{env_number, micros, percentile};
use support_http::{HttpClient, timed};

const WARMUP: usize = 200;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests = usize::try_from(env_number("SLUICE_EXAMPLE_REQUESTS", 2_000)?)?;

    let upstream = FakeUpstream::new(
        FakeUpstreamConfig {
            rpm: 10_000_000,
            tpm: 0,
            ..FakeUpstreamConfig::default()
        },
        Arc::new(TokioClock::new()),
    );
    let server = upstream.serve().await?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let proxy_addr = listener.local_addr()?;
    let egress = Egress::new(EgressConfig::new("fake-openai"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(proxy::serve(
        ProxyConfig::new(&server.url())?,
        listener,
        egress.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let direct_url = format!("{}/v1/chat/completions", server.url());
    let proxy_url = format!("http://{proxy_addr}/v1/chat/completions");
    let body = Bytes::from(chat_body("How fast is the proxy?", Some(16)).to_string());
    // One client per path, so each keeps its own keep-alive connection.
    let direct_client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let proxy_client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    println!(
        "{requests} sequential POST /v1/chat/completions each way (after {WARMUP} warm-up), interleaved: \
         direct to the fake upstream at {} and through the proxy at http://{proxy_addr}",
        server.url()
    );
    for _ in 0..WARMUP {
        timed(&direct_client, &direct_url, &body).await?;
        timed(&proxy_client, &proxy_url, &body).await?;
    }
    let mut direct = Vec::with_capacity(requests);
    let mut proxied = Vec::with_capacity(requests);
    for _ in 0..requests {
        direct.push(timed(&direct_client, &direct_url, &body).await?);
        proxied.push(timed(&proxy_client, &proxy_url, &body).await?);
    }
    direct.sort();
    proxied.sort();

    println!();
    println!("| path | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, sorted) in [("direct", &direct), ("through sluice proxy", &proxied)] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            micros(percentile(sorted, 0.50)),
            micros(percentile(sorted, 0.90)),
            micros(percentile(sorted, 0.99)),
            micros(sorted[sorted.len() - 1]),
        );
    }
    let added = |p: f64| {
        percentile(&proxied, p)
            .checked_sub(percentile(&direct, p))
            .unwrap_or_default()
    };
    println!(
        "| added by the proxy | {} | {} | {} | |",
        micros(added(0.50)),
        micros(added(0.90)),
        micros(added(0.99))
    );
    let stats = egress.stats();
    println!(
        "\nthe fake upstream answered {} requests, {} refused; the proxy's egress client made {} attempts, {} retries",
        upstream.stats().requests,
        upstream.stats().rate_limited,
        stats.attempts,
        stats.retried
    );

    let _ = stop.send(());
    proxy.await??;
    Ok(())
}
