//! What the egress client costs per call, against the ceiling of calling the upstream
//! directly: an in-process "upstream" that answers a prebuilt 200 at once, so the client's
//! own work is all that differs.
//!
//! - `direct`: the send closure alone (the ceiling);
//! - `execute/unpaced`: the whole client with no known limit (quota, gate, slot, breaker,
//!   classification, header reading);
//! - `execute/paced`: the same with a known limit, so every call also reserves in the
//!   memory store's GCRA bucket;
//! - `circuit_open`: a call refused by an open circuit, the fail-fast path.
//!
//! Run with `cargo bench -p sluice-egress --bench egress`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Response};
use sluice_core::BreakerConfig;
use sluice_egress::classify::ErrorClass;
use sluice_egress::{Egress, EgressConfig, EgressError, Job, SendError};

fn answer() -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(
        br#"{"id":"x","usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}"#,
    ));
    for (name, value) in [
        ("x-ratelimit-limit-requests", "100000000"),
        ("x-ratelimit-remaining-requests", "99999999"),
        ("x-ratelimit-reset-requests", "1ms"),
    ] {
        response
            .headers_mut()
            .insert(name, http::HeaderValue::from_static(value));
    }
    response
}

async fn send(response: &Response<Bytes>) -> Result<Response<Bytes>, SendError> {
    Ok(response.clone())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let response = answer();
    let unlabelled = {
        let mut r = response.clone();
        r.headers_mut().clear();
        r
    };
    let job = Job::new(&Method::GET, 30);
    let mut group = c.benchmark_group("egress");

    group.bench_function("direct", |b| {
        b.iter(|| rt.block_on(async { black_box(send(&response).await) }));
    });

    let unpaced = rt.block_on(async { Egress::new(EgressConfig::new("bench")) });
    let unpaced = unpaced.expect("a valid config");
    group.bench_function("execute/unpaced", |b| {
        b.iter(|| {
            rt.block_on(async { black_box(unpaced.execute(&job, || send(&unlabelled)).await) })
        });
    });

    // A limit far above what the bench can reach: every call reserves, none waits.
    let paced = rt
        .block_on(async { Egress::new(EgressConfig::new("bench")) })
        .expect("a valid config");
    group.bench_function("execute/paced", |b| {
        b.iter(|| rt.block_on(async { black_box(paced.execute(&job, || send(&response)).await) }));
    });

    let mut config = EgressConfig::new("bench");
    config.breaker = BreakerConfig {
        failure_threshold: 1,
        open_for: Duration::from_secs(3600),
        ..BreakerConfig::default()
    };
    config.retry.max_attempts = 1;
    let broken = rt
        .block_on(async { Egress::new(config) })
        .expect("a valid config");
    rt.block_on(async {
        let _ = broken
            .execute(&job, || async {
                Err(SendError {
                    class: ErrorClass::Connect,
                    source: "refused".into(),
                })
            })
            .await;
    });
    let refused = rt.block_on(async { broken.execute(&job, || send(&response)).await });
    assert!(
        matches!(refused, Err(EgressError::CircuitOpen { .. })),
        "{refused:?}"
    );
    group.bench_function("circuit_open", |b| {
        b.iter(|| rt.block_on(async { black_box(broken.execute(&job, || send(&response)).await) }));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
