//! Request coalescing under paused tokio time: identical concurrent calls share one
//! upstream call, different ones never do, and a leader that is cancelled or panics hands
//! the call to a follower.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderValue};
use http::{HeaderMap, HeaderName, Method, Response, Uri};
use proptest::prelude::*;
use serde_json::Value;
use sluice_core::Nanos;
use sluice_egress::TokioClock;
use sluice_egress::{CoalesceKey, Coalesced, Coalescer};
use sluice_testkit::upstream::{FakeUpstream, FakeUpstreamConfig, json_request};
use tokio::task::{JoinHandle, JoinSet};

const CALL_TIME: Duration = Duration::from_secs(1);

fn uri() -> Uri {
    Uri::from_static("https://api.example.com/v1/chat/completions")
}

fn key(method: &Method, body: &[u8]) -> CoalesceKey {
    CoalesceKey::new(method, &uri(), &HeaderMap::new(), &[AUTHORIZATION], body)
}

fn key_with_auth(auth: &'static str) -> CoalesceKey {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_static(auth));
    CoalesceKey::new(&Method::GET, &uri(), &headers, &[AUTHORIZATION], b"")
}

/// A call that counts itself in `calls`, takes [`CALL_TIME`] and returns `answer`.
async fn counted(calls: Arc<AtomicUsize>, answer: u64) -> u64 {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(CALL_TIME).await;
    answer
}

/// Spawns a caller of `coalescer.run(key, ..)` whose call counts itself and returns
/// `answer`.
fn spawn_caller(
    coalescer: &Arc<Coalescer<u64>>,
    calls: &Arc<AtomicUsize>,
    key: CoalesceKey,
    answer: u64,
) -> JoinHandle<Coalesced<u64>> {
    let coalescer = Arc::clone(coalescer);
    let calls = Arc::clone(calls);
    tokio::spawn(async move { coalescer.run(key, || counted(calls, answer)).await })
}

/// Lets every spawned task run until it waits on a timer or a channel.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn fifty_identical_calls_coalesce_into_one() {
    let coalescer = Arc::new(Coalescer::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for i in 0..50 {
        let (coalescer, calls) = (Arc::clone(&coalescer), Arc::clone(&calls));
        set.spawn(async move {
            coalescer
                .run(key(&Method::GET, b"same"), || counted(calls, i))
                .await
        });
    }
    settle().await;
    assert_eq!(coalescer.in_flight(), 1);
    let start = tokio::time::Instant::now();
    let results = set.join_all().await;

    assert_eq!(start.elapsed(), CALL_TIME);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let leaders: Vec<_> = results.iter().filter(|r| !r.shared).collect();
    assert_eq!(leaders.len(), 1);
    assert_eq!(results.iter().filter(|r| r.shared).count(), 49);
    // Everyone got the leader's answer.
    assert!(results.iter().all(|r| r.value == leaders[0].value));
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn different_requests_never_coalesce() {
    let coalescer = Arc::new(Coalescer::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = [
        key(&Method::GET, b""),
        key(&Method::HEAD, b""),
        key(&Method::GET, b"one body"),
        key(&Method::GET, b"another body"),
        key_with_auth("Bearer sk-alice"),
        key_with_auth("Bearer sk-bob"),
        CoalesceKey::new(
            &Method::GET,
            &Uri::from_static("https://api.example.com/v1/models"),
            &HeaderMap::new(),
            &[],
            b"",
        ),
    ];
    let handles: Vec<_> = keys
        .iter()
        .zip(0..)
        .map(|(key, answer)| spawn_caller(&coalescer, &calls, key.clone(), answer))
        .collect();
    settle().await;
    assert_eq!(coalescer.in_flight(), keys.len());
    for (handle, answer) in handles.into_iter().zip(0..) {
        let result = handle.await.unwrap();
        assert_eq!(
            result,
            Coalesced {
                value: answer,
                shared: false
            }
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), keys.len());
}

#[tokio::test(start_paused = true)]
async fn the_same_authorization_coalesces() {
    let coalescer = Arc::new(Coalescer::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let first = spawn_caller(&coalescer, &calls, key_with_auth("Bearer sk-alice"), 1);
    let second = spawn_caller(&coalescer, &calls, key_with_auth("Bearer sk-alice"), 2);
    let other = spawn_caller(&coalescer, &calls, key_with_auth("Bearer sk-bob"), 3);
    assert_eq!(
        first.await.unwrap(),
        Coalesced {
            value: 1,
            shared: false
        }
    );
    assert_eq!(
        second.await.unwrap(),
        Coalesced {
            value: 1,
            shared: true
        }
    );
    assert_eq!(
        other.await.unwrap(),
        Coalesced {
            value: 3,
            shared: false
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn coalesce_key_ignores_unnamed_headers_and_the_order_of_vary() {
    let x_request_id = HeaderName::from_static("x-request-id");
    let mut one = HeaderMap::new();
    one.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-alice"));
    one.insert(x_request_id.clone(), HeaderValue::from_static("1"));
    let mut two = one.clone();
    two.insert(x_request_id.clone(), HeaderValue::from_static("2"));
    let vary = [AUTHORIZATION];
    assert_eq!(
        CoalesceKey::new(&Method::GET, &uri(), &one, &vary, b"{}"),
        CoalesceKey::new(&Method::GET, &uri(), &two, &vary, b"{}"),
    );

    // Named, it counts; the order and repetition of the names do not.
    let both = [AUTHORIZATION, x_request_id.clone()];
    let reversed = [x_request_id.clone(), AUTHORIZATION, x_request_id.clone()];
    assert_ne!(
        CoalesceKey::new(&Method::GET, &uri(), &one, &both, b"{}"),
        CoalesceKey::new(&Method::GET, &uri(), &two, &both, b"{}"),
    );
    assert_eq!(
        CoalesceKey::new(&Method::GET, &uri(), &one, &both, b"{}"),
        CoalesceKey::new(&Method::GET, &uri(), &one, &reversed, b"{}"),
    );

    // Absent differs from empty, and every value of a repeated header counts.
    let mut empty = HeaderMap::new();
    empty.insert(AUTHORIZATION, HeaderValue::from_static(""));
    assert_ne!(
        CoalesceKey::new(&Method::GET, &uri(), &HeaderMap::new(), &vary, b""),
        CoalesceKey::new(&Method::GET, &uri(), &empty, &vary, b""),
    );
    let mut repeated = empty.clone();
    repeated.append(AUTHORIZATION, HeaderValue::from_static("x"));
    assert_ne!(
        CoalesceKey::new(&Method::GET, &uri(), &empty, &vary, b""),
        CoalesceKey::new(&Method::GET, &uri(), &repeated, &vary, b""),
    );

    // A header's value does not run into the body.
    let mut a = HeaderMap::new();
    a.insert(AUTHORIZATION, HeaderValue::from_static("ab"));
    let mut ab = HeaderMap::new();
    ab.insert(AUTHORIZATION, HeaderValue::from_static("a"));
    assert_ne!(
        CoalesceKey::new(&Method::GET, &uri(), &a, &vary, b"c"),
        CoalesceKey::new(&Method::GET, &uri(), &ab, &vary, b"bc"),
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_after_completion_is_not_coalesced() {
    let coalescer = Coalescer::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = coalescer
        .run(key(&Method::GET, b""), || counted(Arc::clone(&calls), 1))
        .await;
    assert_eq!(coalescer.in_flight(), 0);
    let second = coalescer
        .run(key(&Method::GET, b""), || counted(Arc::clone(&calls), 2))
        .await;
    assert_eq!(
        first,
        Coalesced {
            value: 1,
            shared: false
        }
    );
    assert_eq!(
        second,
        Coalesced {
            value: 2,
            shared: false
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn coalesce_survives_a_cancelled_leader() {
    let coalescer = Arc::new(Coalescer::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = spawn_caller(&coalescer, &calls, key(&Method::GET, b""), 0);
    settle().await;
    let followers: Vec<_> = (1..=10)
        .map(|answer| spawn_caller(&coalescer, &calls, key(&Method::GET, b""), answer))
        .collect();
    tokio::time::sleep(CALL_TIME / 2).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let start = tokio::time::Instant::now();
    let mut results = Vec::new();
    for follower in followers {
        results.push(follower.await.unwrap());
    }

    // A follower ran its own call in full, and the others got its answer.
    assert_eq!(start.elapsed(), CALL_TIME);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let new_leader: Vec<_> = results.iter().filter(|r| !r.shared).collect();
    assert_eq!(new_leader.len(), 1);
    assert_ne!(
        new_leader[0].value, 0,
        "nobody gets the cancelled call's answer"
    );
    assert!(results.iter().all(|r| r.value == new_leader[0].value));
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn coalesce_survives_a_cancelled_follower() {
    let coalescer = Arc::new(Coalescer::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = spawn_caller(&coalescer, &calls, key(&Method::GET, b""), 7);
    settle().await;
    let quitter = spawn_caller(&coalescer, &calls, key(&Method::GET, b""), 8);
    let stayer = spawn_caller(&coalescer, &calls, key(&Method::GET, b""), 9);
    settle().await;
    quitter.abort();
    assert_eq!(
        leader.await.unwrap(),
        Coalesced {
            value: 7,
            shared: false
        }
    );
    assert_eq!(
        stayer.await.unwrap(),
        Coalesced {
            value: 7,
            shared: true
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn coalesce_survives_a_panicking_leader() {
    let coalescer = Arc::new(Coalescer::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let call = |calls: Arc<AtomicUsize>, answer: u64| async move {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(CALL_TIME).await;
        assert!(n > 0, "the first call fails");
        answer
    };
    let mut handles = Vec::new();
    for answer in 0..5 {
        let (coalescer, calls) = (Arc::clone(&coalescer), Arc::clone(&calls));
        handles.push(tokio::spawn(async move {
            coalescer
                .run(key(&Method::GET, b""), || call(calls, answer))
                .await
        }));
        settle().await;
    }
    let mut handles = handles.into_iter();
    let leader = handles.next().unwrap();
    assert!(leader.await.unwrap_err().is_panic());
    let results: Vec<_> = {
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.unwrap());
        }
        results
    };
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(results.iter().filter(|r| !r.shared).count(), 1);
    let value = results[0].value;
    assert_ne!(value, 0, "nobody gets an answer from the panicked call");
    assert!(results.iter().all(|r| r.value == value));
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn upstream_responses_coalesce() {
    let clock = TokioClock::anchored_at(Nanos::new(1_795_694_400_000_000_000));
    let config = FakeUpstreamConfig {
        latency: Duration::from_millis(300),
        ..FakeUpstreamConfig::default()
    };
    let upstream = FakeUpstream::new(config, Arc::new(clock));
    let coalescer: Arc<Coalescer<Result<Response<Bytes>, String>>> = Arc::new(Coalescer::new());
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let (coalescer, upstream) = (Arc::clone(&coalescer), upstream.clone());
        set.spawn(async move {
            let request = json_request(Method::GET, "/v1/models", &Value::Null);
            let key = CoalesceKey::new(
                request.method(),
                request.uri(),
                request.headers(),
                &[AUTHORIZATION],
                b"null",
            );
            coalescer
                .run(key, || async move {
                    upstream.handle(request).await.map_err(|e| e.to_string())
                })
                .await
        });
    }
    let results = set.join_all().await;

    assert_eq!(upstream.stats().requests, 1);
    assert_eq!(results.iter().filter(|r| r.shared).count(), 19);
    let bodies: Vec<Bytes> = results
        .into_iter()
        .map(|r| {
            let response = r.value.expect("an answer");
            assert_eq!(response.status(), 200);
            response.into_body()
        })
        .collect();
    assert!(bodies.iter().all(|body| *body == bodies[0]));
    assert!(!bodies[0].is_empty());

    // Once answered, the same request goes to the upstream again.
    let request = json_request(Method::GET, "/v1/models", &Value::Null);
    let key = CoalesceKey::new(
        request.method(),
        request.uri(),
        request.headers(),
        &[AUTHORIZATION],
        b"null",
    );
    let again = coalescer
        .run(key, || async {
            upstream.handle(request).await.map_err(|e| e.to_string())
        })
        .await;
    assert!(!again.shared);
    assert_eq!(upstream.stats().requests, 2);
}

proptest! {
    /// Keys are equal exactly when method, body and the varied header are.
    #[test]
    fn coalesce_keys_match_exactly_when_requests_do(
        a in (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..8), 0u8..3),
        b in (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..8), 0u8..3),
    ) {
        let build = |(get, body, auth): &(bool, Vec<u8>, u8)| {
            let method = if *get { Method::GET } else { Method::POST };
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static("x-ignored"), HeaderValue::from(u16::from(*auth)));
            if *auth > 0 {
                headers.insert(AUTHORIZATION, HeaderValue::from(u16::from(*auth)));
            }
            CoalesceKey::new(&method, &uri(), &headers, &[AUTHORIZATION], body)
        };
        prop_assert_eq!(build(&a) == build(&b), a == b);
    }
}
