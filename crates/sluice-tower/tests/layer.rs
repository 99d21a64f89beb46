//! The layer end to end, on a `service_fn` inner service and a manual clock.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use sluice_core::{Algorithm, Decision, Gcra, GcraState, ManualClock, Nanos, Policy, Verdict};
use sluice_http::{
    HeaderStyle, LegacyHeaders, LimitItem, PolicyItem, RetryAfter, read_limit_header,
    read_policy_header,
};
use sluice_store::{Limit, MemoryStore, Reservation, Store};
use sluice_tower::{
    Constant, ForwardedHeader, Header, LimitSpec, MethodAndPath, OnMissingKey, PeerIp,
    RateLimitLayer, TrustedProxies, from_fn,
};
use tower::{Layer, Service, ServiceExt};

const START: u64 = 1_000_000 * 1_000_000_000;

fn new_store() -> (ManualClock, MemoryStore<ManualClock>) {
    let clock = ManualClock::new(Nanos::new(START));
    (clock.clone(), MemoryStore::with_clock(clock))
}

fn policy(rate: &str) -> Policy {
    Policy::parse("gcra", rate).expect("valid policy")
}

type Inner = tower::util::ServiceFn<
    fn(Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

fn ok_service() -> Inner {
    fn handle(_req: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
    tower::service_fn(handle as fn(_) -> _)
}

fn from_peer(peer: &str) -> Request<()> {
    let mut req = Request::new(());
    let addr: SocketAddr = format!("{peer}:40000").parse().expect("test peer");
    req.extensions_mut().insert(addr);
    req
}

fn with_header(mut req: Request<()>, name: &'static str, value: &str) -> Request<()> {
    req.headers_mut().insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("test header"),
    );
    req
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

async fn body_json<B>(body: B) -> serde_json::Value
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let bytes = body.collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("json body")
}

#[tokio::test]
async fn three_per_minute_per_ip_exact_sequence() {
    let (clock, store) = new_store();
    let layer = RateLimitLayer::new(store)
        .limit(LimitSpec::new("per-ip", policy("3/min"), PeerIp::new()))
        .expect("valid limit");
    let svc = layer.layer(ok_service());

    // GCRA 3/min: one unit every 20 s, burst 3.
    let expected = [("2", "20"), ("1", "40"), ("0", "60")];
    for (remaining, reset) in expected {
        let resp = svc
            .clone()
            .oneshot(from_peer("1.2.3.4"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            header(resp.headers(), "ratelimit-policy"),
            Some(r#""per-ip";q=3;w=60"#)
        );
        assert_eq!(
            header(resp.headers(), "ratelimit"),
            Some(format!(r#""per-ip";r={remaining};t={reset}"#).as_str())
        );
        assert_eq!(header(resp.headers(), "retry-after"), None);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, Bytes::from_static(b"ok"));
    }

    // Half a second later the fourth is refused: the next unit is 19.5 s away.
    clock.advance(Duration::from_millis(500));
    let resp = svc
        .clone()
        .oneshot(from_peer("1.2.3.4"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(resp.headers(), "retry-after"), Some("20"));
    assert_eq!(
        header(resp.headers(), "ratelimit-policy"),
        Some(r#""per-ip";q=3;w=60"#)
    );
    assert_eq!(
        header(resp.headers(), "ratelimit"),
        Some(r#""per-ip";r=0;t=60"#)
    );
    assert_eq!(
        header(resp.headers(), "content-type"),
        Some("application/problem+json")
    );

    // The same instants replayed on the pure algorithm: Retry-After is its retry_after,
    // rounded up.
    let p = policy("3/min");
    let mut state = GcraState::default();
    for _ in 0..3 {
        assert!(Gcra::check(&p, &mut state, 1, Nanos::new(START)).allowed);
    }
    let core = Gcra::check(&p, &mut state, 1, Nanos::new(START + 500_000_000));
    assert_eq!(core.retry_after, Some(Duration::from_millis(19_500)));
    let retry = RetryAfter::parse(header(resp.headers(), "retry-after").expect("retry-after"))
        .expect("parses");
    assert_eq!(retry, RetryAfter::Delay(Duration::from_secs(20)));

    let problem = body_json(resp.into_body()).await;
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["title"], "Too Many Requests");
    assert_eq!(problem["type"], "https://sluice.dev/problems/rate-limited");
    assert_eq!(problem["violated-policies"], serde_json::json!(["per-ip"]));
    assert_eq!(
        problem["detail"],
        r#"Rate limit "per-ip" exceeded; retry in 20 seconds."#
    );

    // Another client is not affected.
    let other = svc
        .clone()
        .oneshot(from_peer("5.6.7.8"))
        .await
        .expect("infallible");
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(
        header(other.headers(), "ratelimit"),
        Some(r#""per-ip";r=2;t=20"#)
    );

    // 19.5 s later one unit is back, and only one.
    clock.advance(Duration::from_millis(19_500));
    let resp = svc
        .clone()
        .oneshot(from_peer("1.2.3.4"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(resp.headers(), "ratelimit"),
        Some(r#""per-ip";r=0;t=60"#)
    );
    let resp = svc
        .clone()
        .oneshot(from_peer("1.2.3.4"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(resp.headers(), "retry-after"), Some("20"));
}

#[tokio::test]
async fn several_limits_are_all_or_nothing() {
    let (clock, store) = new_store();
    let layer = RateLimitLayer::new(store)
        .limit(LimitSpec::new(
            "per-user",
            policy("5/h"),
            Header(HeaderName::from_static("x-user")),
        ))
        .and_then(|l| {
            l.limit(LimitSpec::new(
                "global",
                policy("2/min"),
                Constant::new("all"),
            ))
        })
        .expect("valid limits");
    let svc = layer.layer(ok_service());
    let user = |name: &str| with_header(Request::new(()), "x-user", name);

    // 5/h is one unit every 12 min; 2/min one every 30 s.
    let expected = [
        r#""per-user";r=4;t=720, "global";r=1;t=30"#,
        r#""per-user";r=3;t=1440, "global";r=0;t=60"#,
    ];
    for ratelimit in expected {
        let resp = svc.clone().oneshot(user("a")).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            header(resp.headers(), "ratelimit-policy"),
            Some(r#""per-user";q=5;w=3600, "global";q=2;w=60"#)
        );
        assert_eq!(header(resp.headers(), "ratelimit"), Some(ratelimit));
    }

    // User b is refused by the global limit alone; its own limit reports what it would
    // have admitted and is not debited.
    let resp = svc.clone().oneshot(user("b")).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(resp.headers(), "retry-after"), Some("30"));
    assert_eq!(
        header(resp.headers(), "ratelimit"),
        Some(r#""per-user";r=4;t=720, "global";r=0;t=60"#)
    );
    let problem = body_json(resp.into_body()).await;
    assert_eq!(problem["violated-policies"], serde_json::json!(["global"]));

    // 30 s later the global limit has one unit again. Had b been debited at the start,
    // its per-user limit would now show r=3 after this request; it shows r=4.
    clock.advance(Duration::from_secs(30));
    let resp = svc.clone().oneshot(user("b")).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let limits = read_limit_header(resp.headers()).expect("parses");
    assert_eq!(limits[0].name, "per-user");
    assert_eq!(limits[0].remaining, 4);
    assert_eq!(limits[1].remaining, 0);
}

#[tokio::test]
async fn an_untrusted_peer_cannot_spoof_its_key() {
    let (_clock, store) = new_store();
    let trusted = TrustedProxies::parse(["10.0.0.0/8", "192.0.2.1"]).expect("valid");
    let extractor = PeerIp::behind(trusted, ForwardedHeader::XForwardedFor);
    let layer = RateLimitLayer::new(store)
        .limit(LimitSpec::new("per-ip", policy("3/min"), extractor))
        .expect("valid limit");
    let svc = layer.layer(ok_service());

    // 9.9.9.9 claims to be 1.2.3.4 (and then 4.4.4.4): every request counts against
    // 9.9.9.9.
    for (n, claimed) in ["1.2.3.4", "4.4.4.4", "1.2.3.4"].iter().enumerate() {
        let req = with_header(from_peer("9.9.9.9"), "x-forwarded-for", claimed);
        let resp = svc.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            header(resp.headers(), "ratelimit"),
            Some(format!(r#""per-ip";r={};t={}"#, 2 - n, 20 * (n + 1)).as_str())
        );
    }
    let req = with_header(from_peer("9.9.9.9"), "x-forwarded-for", "8.8.8.8");
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

    // Through a trusted proxy, the forwarded 1.2.3.4 is believed: a fresh key.
    let req = with_header(from_peer("10.1.2.3"), "x-forwarded-for", "1.2.3.4");
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(resp.headers(), "ratelimit"),
        Some(r#""per-ip";r=2;t=20"#)
    );

    // The chain is read from the right: trusted hops are skipped, and the first untrusted
    // one (9.9.9.9, already spent) is the client, whatever it put on the left.
    let req = with_header(
        from_peer("192.0.2.1"),
        "x-forwarded-for",
        "1.2.3.4, 9.9.9.9, 10.0.0.7",
    );
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn peer_ip_reads_forwarded_and_ignores_garbage() {
    let trusted = TrustedProxies::parse(["10.0.0.0/8"]).expect("valid");
    let forwarded = PeerIp::behind(trusted.clone(), ForwardedHeader::Forwarded);
    let req = with_header(
        from_peer("10.0.0.1"),
        "forwarded",
        r#"for=1.2.3.4, for="[2001:db8::1]:4711";proto=https, for=10.0.0.9"#,
    );
    assert_eq!(
        forwarded.client_ip(&req),
        Some("2001:db8::1".parse().expect("ip"))
    );

    let xff = PeerIp::behind(trusted, ForwardedHeader::XForwardedFor);
    // No header: the trusted proxy itself.
    assert_eq!(
        xff.client_ip(&from_peer("10.0.0.1")),
        Some("10.0.0.1".parse().expect("ip"))
    );
    // An unreadable hop stops the walk at the last good address.
    let req = with_header(
        from_peer("10.0.0.1"),
        "x-forwarded-for",
        "1.2.3.4, nonsense",
    );
    assert_eq!(xff.client_ip(&req), Some("10.0.0.1".parse().expect("ip")));
    // No peer address at all.
    assert_eq!(xff.client_ip(&Request::new(())), None);
    // A dual-stack listener's mapped address keys like the IPv4 one.
    let mut req = Request::new(());
    let mapped: SocketAddr = "[::ffff:1.2.3.4]:1".parse().expect("addr");
    req.extensions_mut().insert(mapped);
    assert_eq!(
        PeerIp::new().client_ip(&req),
        Some("1.2.3.4".parse().expect("ip"))
    );
}

#[tokio::test]
async fn a_request_without_a_key_gets_the_configured_outcome() {
    let api_key = || Header(HeaderName::from_static("x-api-key"));
    let (_clock, store) = new_store();
    let svc = RateLimitLayer::new(store)
        .limit(LimitSpec::new("per-key", policy("3/min"), api_key()))
        .expect("valid")
        .layer(ok_service());
    let resp = svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        header(resp.headers(), "content-type"),
        Some("application/problem+json")
    );
    let problem = body_json(resp.into_body()).await;
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["type"], sluice_tower::MISSING_KEY_PROBLEM_TYPE);
    assert_eq!(
        problem["detail"],
        r#"Rate limit "per-key" cannot identify the client: the request has no header x-api-key."#
    );
    // An empty value is no key either; a present one is.
    let req = with_header(Request::new(()), "x-api-key", " ");
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let req = with_header(Request::new(()), "x-api-key", "k1");
    assert_eq!(
        svc.clone().oneshot(req).await.expect("infallible").status(),
        StatusCode::OK
    );

    let (_clock, store) = new_store();
    let svc = RateLimitLayer::new(store)
        .limit(
            LimitSpec::new("per-key", policy("3/min"), api_key())
                .on_missing_key(OnMissingKey::Unauthorized),
        )
        .expect("valid")
        .layer(ok_service());
    let resp = svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(resp.into_body()).await["status"], 401);

    // A fallback key: all keyless requests share one budget.
    let (_clock, store) = new_store();
    let svc = RateLimitLayer::new(store)
        .limit(
            LimitSpec::new("per-key", policy("3/min"), api_key())
                .on_missing_key(OnMissingKey::Fallback("anonymous".into())),
        )
        .expect("valid")
        .layer(ok_service());
    for remaining in [2, 1, 0] {
        let resp = svc
            .clone()
            .oneshot(Request::new(()))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            read_limit_header(resp.headers()).expect("parses")[0].remaining,
            remaining
        );
    }
    let resp = svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let req = with_header(Request::new(()), "x-api-key", "k1");
    assert_eq!(
        svc.clone().oneshot(req).await.expect("infallible").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_401_carries_a_www_authenticate_challenge() {
    let api_key = || Header(HeaderName::from_static("x-api-key"));
    let unauthorized = |spec: LimitSpec<Header>| {
        let (_clock, store) = new_store();
        RateLimitLayer::new(store)
            .limit(spec.on_missing_key(OnMissingKey::Unauthorized))
            .expect("valid")
            .layer(ok_service())
    };

    // The default challenge.
    let svc = unauthorized(LimitSpec::new("per-key", policy("3/min"), api_key()));
    let resp = svc.oneshot(Request::new(())).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(resp.headers(), "www-authenticate"), Some("Bearer"));
    assert_eq!(
        header(resp.headers(), "content-type"),
        Some("application/problem+json")
    );

    // A configured one; a request with a key passes without any challenge.
    let challenge = r#"ApiKey realm="api", header="x-api-key""#;
    let svc = unauthorized(
        LimitSpec::new("per-key", policy("3/min"), api_key())
            .www_authenticate(HeaderValue::from_static(challenge)),
    );
    let resp = svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenges: Vec<_> = resp.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(challenges, [challenge]);
    let problem = body_json(resp.into_body()).await;
    assert_eq!(problem["status"], 401);
    assert_eq!(problem["title"], "Unauthorized");
    let resp = svc
        .oneshot(with_header(Request::new(()), "x-api-key", "k1"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(resp.headers(), "www-authenticate"), None);

    // A 400 (the default outcome) has none: it is not about credentials.
    let (_clock, store) = new_store();
    let svc = RateLimitLayer::new(store)
        .limit(
            LimitSpec::new("per-key", policy("3/min"), api_key())
                .www_authenticate(HeaderValue::from_static(challenge)),
        )
        .expect("valid")
        .layer(ok_service());
    let resp = svc.oneshot(Request::new(())).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(resp.headers(), "www-authenticate"), None);
}

/// A body of several data frames and trailers, each frame handed out after one
/// `Pending`, like a body fed by a slow producer.
struct Chunked {
    frames: VecDeque<Frame<Bytes>>,
    pending: bool,
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.pending {
            self.pending = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending = false;
        Poll::Ready(self.frames.pop_front().map(Ok))
    }
}

#[tokio::test]
async fn a_streaming_body_passes_through_untouched() {
    let (_clock, store) = new_store();
    let svc = RateLimitLayer::new(store)
        .limit(LimitSpec::new("per-ip", policy("3/min"), PeerIp::new()))
        .expect("valid")
        .layer(tower::service_fn(|_req: Request<()>| async {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc"));
            let frames = VecDeque::from([
                Frame::data(Bytes::from_static(b"one ")),
                Frame::data(Bytes::from_static(b"two ")),
                Frame::data(Bytes::from_static(b"three")),
                Frame::trailers(trailers),
            ]);
            let mut resp = Response::new(Chunked {
                frames,
                pending: false,
            });
            resp.headers_mut()
                .insert("x-inner", HeaderValue::from_static("yes"));
            Ok::<_, Infallible>(resp)
        }));
    let resp = svc.oneshot(from_peer("1.2.3.4")).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(resp.headers(), "x-inner"), Some("yes"));
    assert_eq!(
        header(resp.headers(), "ratelimit"),
        Some(r#""per-ip";r=2;t=20"#)
    );
    let mut body = resp.into_body();
    let mut chunks = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("infallible");
        match frame.into_data() {
            Ok(data) => chunks.push(data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    assert_eq!(
        chunks,
        ["one ", "two ", "three"].map(|s: &'static str| Bytes::from_static(s.as_bytes()))
    );
    assert_eq!(
        trailers.as_ref().and_then(|t| t.get("x-checksum")),
        Some(&HeaderValue::from_static("abc"))
    );
}

#[tokio::test]
async fn every_emitted_header_parses_back_to_the_same_values() {
    let (clock, store) = new_store();
    let user_policy = policy("4/10s");
    let route_policy = policy("3/1m30s");
    let svc = RateLimitLayer::new(store)
        .limit(LimitSpec::new(
            "per-user",
            user_policy,
            from_fn(|req: &Request<()>| {
                req.headers()
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            }),
        ))
        .and_then(|l| {
            l.limit(LimitSpec::new(
                "per-route",
                route_policy,
                MethodAndPath::new(),
            ))
        })
        .expect("valid")
        .header_style(HeaderStyle::Both)
        .layer(ok_service());

    // The same requests on the pure algorithm give the decisions the headers must carry.
    let mut user_state = GcraState::default();
    let mut route_state = GcraState::default();
    for step in 0..6u64 {
        let now = Nanos::new(START + step * 700_000_000);
        clock.set(now);
        let user = Gcra::decide(&user_policy, &user_state, 1, now);
        let route = Gcra::decide(&route_policy, &route_state, 1, now);
        let verdict = Verdict::from_decisions(vec![user, route]);
        if verdict.allowed {
            Gcra::check(&user_policy, &mut user_state, 1, now);
            Gcra::check(&route_policy, &mut route_state, 1, now);
        }
        let req = with_header(Request::new(()), "x-user", "alice");
        let resp = svc.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status().is_success(), verdict.allowed, "step {step}");
        let headers = resp.headers();
        assert_eq!(
            read_policy_header(headers).expect("parses"),
            vec![
                PolicyItem::new("per-user", &user_policy, &user),
                PolicyItem::new("per-route", &route_policy, &route)
            ]
        );
        assert_eq!(
            read_limit_header(headers).expect("parses"),
            vec![
                LimitItem::new("per-user", &user),
                LimitItem::new("per-route", &route)
            ]
        );
        let most: Decision = verdict.decision().expect("two limits");
        assert_eq!(
            LegacyHeaders::read(headers).expect("parses"),
            Some(LegacyHeaders::new(&most))
        );
        let retry = headers
            .get("retry-after")
            .map(|v| RetryAfter::parse(v.to_str().expect("ascii")).expect("parses"));
        let wait = [user, route]
            .iter()
            .filter(|d| !d.allowed)
            .filter_map(|d| d.retry_after)
            .max()
            .map(|d| {
                RetryAfter::Delay(Duration::from_secs(
                    d.as_secs() + u64::from(d.subsec_nanos() > 0),
                ))
            });
        assert_eq!(retry, wait, "step {step}");
    }
}

#[tokio::test]
async fn a_cost_closure_charges_several_units() {
    let (_clock, store) = new_store();
    let svc = RateLimitLayer::new(store)
        .limit(LimitSpec::new("per-ip", policy("5/min"), PeerIp::new()))
        .expect("valid")
        .cost(|req: &Request<()>| {
            req.headers()
                .get("x-cost")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
        })
        .layer(ok_service());
    let req = with_header(from_peer("1.2.3.4"), "x-cost", "3");
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    assert_eq!(
        read_limit_header(resp.headers()).expect("parses")[0].remaining,
        2
    );
    let req = with_header(from_peer("1.2.3.4"), "x-cost", "3");
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let resp = svc
        .clone()
        .oneshot(from_peer("1.2.3.4"))
        .await
        .expect("infallible");
    assert_eq!(
        read_limit_header(resp.headers()).expect("parses")[0].remaining,
        1
    );
    // More than the limit can ever admit: refused, and no Retry-After.
    let req = with_header(from_peer("5.5.5.5"), "x-cost", "6");
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(resp.headers(), "retry-after"), None);
}

#[tokio::test]
async fn header_styles() {
    for (style, ietf, legacy) in [
        (HeaderStyle::Off, false, false),
        (HeaderStyle::Ietf, true, false),
        (HeaderStyle::Legacy, false, true),
        (HeaderStyle::Both, true, true),
    ] {
        let (_clock, store) = new_store();
        let svc = RateLimitLayer::new(store)
            .limit(LimitSpec::new("per-ip", policy("1/min"), PeerIp::new()))
            .expect("valid")
            .header_style(style)
            .layer(ok_service());
        let resp = svc
            .clone()
            .oneshot(from_peer("1.2.3.4"))
            .await
            .expect("infallible");
        assert_eq!(resp.headers().contains_key("ratelimit"), ietf);
        assert_eq!(resp.headers().contains_key("x-ratelimit-limit"), legacy);
        let resp = svc
            .clone()
            .oneshot(from_peer("1.2.3.4"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            header(resp.headers(), "retry-after"),
            Some("60"),
            "{style:?}"
        );
        assert_eq!(resp.headers().contains_key("ratelimit-policy"), ietf);
    }
}

#[test]
fn bad_limit_names_are_refused() {
    let (_clock, store) = new_store();
    let err = RateLimitLayer::new(store)
        .limit(LimitSpec::new(
            "caf\u{e9}",
            policy("1/s"),
            Constant::new("all"),
        ))
        .expect_err("non-ASCII name");
    assert!(matches!(err, sluice_tower::ConfigError::InvalidName { .. }));
    let (_clock, store) = new_store();
    let err = RateLimitLayer::new(store)
        .limit(LimitSpec::new("a", policy("1/s"), Constant::new("all")))
        .and_then(|l| l.limit(LimitSpec::new("a", policy("1/h"), Constant::new("all"))))
        .expect_err("duplicate");
    assert_eq!(
        err,
        sluice_tower::ConfigError::DuplicateName { name: "a".into() }
    );
}

/// A store whose every call fails.
#[derive(Debug)]
struct Broken;

#[derive(Debug, thiserror::Error)]
#[error("store down at 10.9.8.7:6379")]
struct Down;

impl Store for Broken {
    type Error = Down;
    async fn check(&self, _: Limit<'_>, _: u64) -> Result<Decision, Down> {
        Err(Down)
    }
    async fn check_all(&self, _: &[Limit<'_>], _: u64) -> Result<Verdict, Down> {
        Err(Down)
    }
    async fn peek(&self, _: Limit<'_>) -> Result<Decision, Down> {
        Err(Down)
    }
    async fn reserve(&self, _: &[Limit<'_>], _: u64, _: Duration) -> Result<Reservation, Down> {
        Err(Down)
    }
    async fn cancel(&self, _: &Reservation) -> Result<(), Down> {
        Err(Down)
    }
    async fn settle(&self, _: &Reservation, _: u64) -> Result<(), Down> {
        Err(Down)
    }
    async fn reset(&self, _: Limit<'_>) -> Result<(), Down> {
        Err(Down)
    }
}

#[tokio::test]
async fn a_failed_store_gives_503_without_internals() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = RateLimitLayer::new(Broken)
        .limit(LimitSpec::new(
            "global",
            policy("1/s"),
            Constant::new("all"),
        ))
        .expect("valid")
        .layer(tower::service_fn(move |_req: Request<()>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))))
        }));
    let resp = svc.oneshot(Request::new(())).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("10.9.8.7"), "{text}");
    assert!(text.contains(sluice_tower::UNAVAILABLE_PROBLEM_TYPE));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    let (_clock, store) = new_store();
    let mut svc = RateLimitLayer::new(store)
        .limit(LimitSpec::new("per-ip", policy("1/min"), PeerIp::new()))
        .expect("valid")
        .layer(ok_service());
    // Refused or not, readiness never waits for capacity.
    for _ in 0..3 {
        let ready = svc.ready().await.expect("infallible");
        let _ = ready.call(from_peer("1.2.3.4")).await.expect("infallible");
    }
}
