//! `max_wait`: a burst beyond the limit is delayed, not refused, on paused tokio time.
//!
//! Each scenario runs twice: on the in-memory store (decided synchronously in `call`, a
//! dropped wait cancelled in `Drop`) and on an asynchronous store (the same in-memory store
//! behind futures that really suspend, as a remote store's do: decided in the boxed future,
//! a dropped wait cancelled by a spawned task). The store's manual clock stands still while
//! tokio's paused clock jumps from timer to timer, so every request is reserved at the
//! instant it arrives and each delay is exact.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use sluice_core::{Decision, ManualClock, Nanos, Policy, Verdict};
use sluice_store::{Limit, MemoryStore, Reservation, Store};
use sluice_tower::{LimitSpec, PeerIp, RateLimitLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const START: u64 = 1_000_000 * 1_000_000_000;

fn from_peer(peer: &str) -> Request<()> {
    let mut req = Request::new(());
    let addr: SocketAddr = format!("{peer}:40000").parse().expect("test peer");
    req.extensions_mut().insert(addr);
    req
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

/// The in-memory store behind futures that suspend once before answering.
#[derive(Debug)]
struct Remote(MemoryStore<ManualClock>);

impl Store for Remote {
    type Error = Infallible;
    async fn check(&self, limit: Limit<'_>, cost: u64) -> Result<Decision, Infallible> {
        tokio::task::yield_now().await;
        self.0.check(limit, cost).await
    }
    async fn check_all(&self, limits: &[Limit<'_>], cost: u64) -> Result<Verdict, Infallible> {
        tokio::task::yield_now().await;
        self.0.check_all(limits, cost).await
    }
    async fn peek(&self, limit: Limit<'_>) -> Result<Decision, Infallible> {
        tokio::task::yield_now().await;
        self.0.peek(limit).await
    }
    async fn reserve(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> Result<Reservation, Infallible> {
        tokio::task::yield_now().await;
        self.0.reserve(limits, cost, max_wait).await
    }
    async fn cancel(&self, reservation: &Reservation) -> Result<(), Infallible> {
        tokio::task::yield_now().await;
        self.0.cancel(reservation).await
    }
    async fn settle(&self, reservation: &Reservation, actual: u64) -> Result<(), Infallible> {
        tokio::task::yield_now().await;
        self.0.settle(reservation, actual).await
    }
    async fn reset(&self, limit: Limit<'_>) -> Result<(), Infallible> {
        tokio::task::yield_now().await;
        self.0.reset(limit).await
    }
}

/// When (on tokio's clock, since the test's start) the inner service was called.
type Calls = Arc<Mutex<Vec<Duration>>>;

/// An inner service that records when it is called.
#[derive(Clone)]
struct Recording {
    start: Instant,
    calls: Calls,
}

impl tower::Service<Request<()>> for Recording {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        self.calls
            .lock()
            .expect("not poisoned")
            .push(self.start.elapsed());
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

fn recording(start: Instant) -> (Calls, Recording) {
    let calls = Calls::default();
    (calls.clone(), Recording { start, calls })
}

/// GCRA 3/min (one unit every 20 s, burst 3), waiting up to 60 s.
fn layer<S: Store>(store: S) -> sluice_tower::WithLimit<S, (), PeerIp, sluice_tower::UnitCost> {
    RateLimitLayer::new(store)
        .limit(LimitSpec::new(
            "per-ip",
            Policy::parse("gcra", "3/min").expect("valid policy"),
            PeerIp::new(),
        ))
        .expect("valid limit")
        .max_wait(Duration::from_secs(60))
}

/// Seven requests at once: three pass at once, the next three 20, 40 and 60 s later, in
/// order, and the seventh (80 s away, past `max_wait`) is refused at once.
async fn burst_is_delayed<S: Store>(store: S) {
    let start = Instant::now();
    let (calls, inner) = recording(start);
    let svc = layer(store).layer(inner);
    let mut tasks = Vec::new();
    for _ in 0..7 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let resp = svc.oneshot(from_peer("1.2.3.4")).await.expect("infallible");
            (start.elapsed(), resp)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        let (at, resp) = task.await.expect("task");
        let ratelimit = header(resp.headers(), "ratelimit").map(str::to_owned);
        let retry = header(resp.headers(), "retry-after").map(str::to_owned);
        results.push((at.as_secs(), resp.status().as_u16(), ratelimit, retry));
    }
    // Tasks may reach the store in any order (an asynchronous store suspends): sort by
    // answer time, then status.
    results.sort();
    let some = |s: &str| Some(s.to_owned());
    // Six units are taken (three now, three reserved), so the bucket is full again only
    // 120 s from now.
    let refused = (0, 429, some(r#""per-ip";r=0;t=120"#), some("20"));
    let mut immediate: Vec<_> = results.iter().filter(|r| r.1 == 200 && r.0 == 0).collect();
    immediate.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        immediate.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        [
            some(r#""per-ip";r=0;t=60"#),
            some(r#""per-ip";r=1;t=40"#),
            some(r#""per-ip";r=2;t=20"#),
        ],
        "three pass at once"
    );
    // The seventh is 80 s away, 60 s of which it would have waited: retrying in 20 s (and
    // waiting the rest) gets it through. It is answered at once.
    assert!(results.contains(&refused), "{results:?}");
    // The delayed ones are let through 20, 40 and 60 s later, when the bucket is empty
    // and full again 60 s later.
    let delayed: Vec<_> = results.iter().filter(|r| r.0 > 0).cloned().collect();
    assert_eq!(
        delayed,
        [20, 40, 60].map(|at| (at, 200, some(r#""per-ip";r=0;t=60"#), None)),
    );
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(
        *calls.lock().expect("not poisoned"),
        [0, 0, 0, 20, 40, 60].map(secs),
        "the inner service is called once per admitted request, when its wait is over"
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_beyond_the_limit_is_delayed_not_refused() {
    let clock = ManualClock::new(Nanos::new(START));
    burst_is_delayed(MemoryStore::with_clock(clock)).await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_beyond_the_limit_is_delayed_with_an_async_store() {
    let clock = ManualClock::new(Nanos::new(START));
    burst_is_delayed(Remote(MemoryStore::with_clock(clock))).await;
}

/// A request dropped while it waits gives its unit back: the next one waits 15 s, not 35.
async fn dropped_wait_is_cancelled<S: Store>(clock: ManualClock, store: S) {
    let start = Instant::now();
    let (calls, inner) = recording(start);
    let svc = layer(store).layer(inner);
    for _ in 0..3 {
        let resp = svc
            .clone()
            .oneshot(from_peer("1.2.3.4"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // The fourth would pass at 20 s; its caller gives up after 5.
    let gave_up = tokio::time::timeout(
        Duration::from_secs(5),
        svc.clone().oneshot(from_peer("1.2.3.4")),
    )
    .await;
    assert!(gave_up.is_err(), "still waiting after 5 s");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    // An asynchronous store's cancel runs in a spawned task: let it.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(5));
    let resp = svc
        .clone()
        .oneshot(from_peer("1.2.3.4"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(20),
        "waited 15 s, not 35"
    );
    assert_eq!(
        calls.lock().expect("not poisoned").len(),
        4,
        "the dropped request never reached the inner service"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_wait_gives_its_reservation_back() {
    let clock = ManualClock::new(Nanos::new(START));
    let store = MemoryStore::with_clock(clock.clone());
    dropped_wait_is_cancelled(clock, store).await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_wait_gives_its_reservation_back_with_an_async_store() {
    let clock = ManualClock::new(Nanos::new(START));
    let store = Remote(MemoryStore::with_clock(clock.clone()));
    dropped_wait_is_cancelled(clock, store).await;
}

/// Without `max_wait`, the same burst is refused as before: nothing waits.
#[tokio::test(start_paused = true)]
async fn without_max_wait_nothing_waits() {
    let clock = ManualClock::new(Nanos::new(START));
    let start = Instant::now();
    let (calls, inner) = recording(start);
    let svc = RateLimitLayer::new(MemoryStore::with_clock(clock))
        .limit(LimitSpec::new(
            "per-ip",
            Policy::parse("gcra", "3/min").expect("valid policy"),
            PeerIp::new(),
        ))
        .expect("valid limit")
        .layer(inner);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = svc
            .clone()
            .oneshot(from_peer("1.2.3.4"))
            .await
            .expect("infallible");
        statuses.push(resp.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.lock().expect("not poisoned").len(), 3);
}
