//! The conformance suite against `RedisStore` on a throwaway `redis-server`: every
//! scenario and generated sequence must decide exactly like the pure model, with the time
//! passed into the script from the suite's manual clock.

use sluice_core::ManualClock;
use sluice_core::{Key, Policy};
use sluice_redis::{HashTag, RedisError, RedisStore};
use sluice_store::conformance::{self, Config};
use sluice_store::{Limit, Store};
use sluice_testkit::{RedisCluster, RedisServer};

async fn store(url: String, clock: ManualClock) -> RedisStore {
    RedisStore::connect(&url)
        .await
        .expect("connect to the test redis-server")
        .with_clock(clock)
        .isolated()
}

#[tokio::test]
async fn redis_store_passes_the_scenarios() {
    let server = RedisServer::spawn().expect("redis-server");
    let url = server.url();
    conformance::run_scenarios(&Config::default(), |clock| store(url.clone(), clock)).await;
}

#[tokio::test]
async fn redis_store_matches_the_model_on_generated_sequences() {
    let server = RedisServer::spawn().expect("redis-server");
    let url = server.url();
    conformance::run_generated(&Config::default(), |clock| store(url.clone(), clock)).await;
}

/// The suite mixes domains in one request, so the cluster store puts every key under one
/// tag; per-domain tags are checked below.
#[tokio::test]
async fn redis_cluster_store_passes_the_conformance_suite() {
    let cluster = RedisCluster::spawn(3).expect("a local redis cluster");
    let urls = cluster.urls();
    let config = Config {
        cases: 16,
        ..Config::default()
    };
    conformance::run_all_with(&config, |clock| {
        let urls = urls.clone();
        async move {
            RedisStore::connect_cluster(&urls)
                .await
                .expect("connect to the test cluster")
                .with_clock(clock)
                .with_hash_tag(HashTag::Constant("conformance".into()))
                .isolated()
        }
    })
    .await;
}

#[tokio::test]
async fn a_cluster_spreads_domains_and_refuses_cross_domain_requests_clearly() {
    let cluster = RedisCluster::spawn(3).expect("a local redis cluster");
    let store = RedisStore::connect_cluster(&cluster.urls())
        .await
        .expect("connect")
        .isolated();
    let p = Policy::parse("gcra", "2/s").expect("test redis");
    let user = Key::new("api", [("user", "1")]).expect("test redis");
    let global = Key::new("api", [("scope", "all")]).expect("test redis");
    let other = Key::new("billing", [("user", "1")]).expect("test redis");
    let same_domain = [Limit::new(&user, &p), Limit::new(&global, &p)];
    assert!(
        store
            .check_all(&same_domain, 1)
            .await
            .expect("test redis")
            .allowed
    );
    assert!(
        store
            .check(Limit::new(&other, &p), 1)
            .await
            .expect("test redis")
            .allowed
    );
    let mixed = [Limit::new(&user, &p), Limit::new(&other, &p)];
    match store.check_all(&mixed, 1).await {
        Err(err @ RedisError::CrossSlot { .. }) => {
            assert!(err.to_string().contains("\"api\" and \"billing\""), "{err}");
        }
        other => panic!("expected CrossSlot, got {other:?}"),
    }
    // Nothing was debited by the refused request.
    let left = store
        .peek(Limit::new(&user, &p))
        .await
        .expect("test redis")
        .remaining;
    assert_eq!(left, 1);
}

#[tokio::test]
async fn redis_queues_match_the_queue_model_on_generated_sequences() {
    let server = RedisServer::spawn().expect("redis-server");
    let url = server.url();
    let config = Config {
        cases: 128,
        max_ops: 80,
        ..Config::default()
    };
    conformance::queue::run(&config, |clock| {
        let url = url.clone();
        async move { sluice_redis::RedisQueues::new(store(url, clock).await) }
    })
    .await;
}

#[tokio::test]
async fn redis_cluster_queues_match_the_queue_model() {
    let cluster = RedisCluster::spawn(3).expect("a local redis cluster");
    let urls = cluster.urls();
    let config = Config {
        cases: 16,
        max_ops: 60,
        ..Config::default()
    };
    conformance::queue::run(&config, |clock| {
        let urls = urls.clone();
        async move {
            sluice_redis::RedisQueues::new(
                RedisStore::connect_cluster(&urls)
                    .await
                    .expect("connect to the test cluster")
                    .with_clock(clock)
                    .with_hash_tag(HashTag::Constant("conformance".into()))
                    .isolated(),
            )
        }
    })
    .await;
}

#[tokio::test]
async fn a_redis_line_serves_tenants_in_turns_one_every_500ms() {
    use sluice_core::queue::{Overflow, QueueConfig};
    use sluice_store::queue::{Joined, Line, QueueStore, Request};

    let server = RedisServer::spawn().expect("redis-server");
    let clock = ManualClock::new(sluice_core::Nanos::new(3_600_000_000_000));
    let queues = sluice_redis::RedisQueues::new(store(server.url(), clock.clone()).await);
    let key = Key::new("api", [("user", "42")]).unwrap();
    let policy = Policy::parse("gcra", "2/s").unwrap();
    let limits = [Limit::new(&key, &policy)];
    let line = Line {
        key: &key,
        limits: &limits,
        config: QueueConfig {
            max_length: 5,
            overflow: Overflow::RejectNew,
        },
    };
    let join = |tenant: &'static str| {
        let queues = &queues;
        async move {
            queues
                .join(
                    line,
                    Request {
                        cost: 1,
                        priority: 0,
                        tenant: Some(tenant),
                        max_wait: std::time::Duration::from_secs(10),
                    },
                )
                .await
                .unwrap()
        }
    };
    // 2/s: two at once, then in line.
    assert!(matches!(join("x").await, Joined::Granted(_)));
    assert!(matches!(join("x").await, Joined::Granted(_)));
    let mut tickets = Vec::new();
    for tenant in ["a", "a", "a", "b"] {
        let Joined::Waiting(ticket) = join(tenant).await else {
            panic!("in line")
        };
        tickets.push(ticket);
    }
    let mut order = Vec::new();
    for _ in 0..4 {
        clock.advance(std::time::Duration::from_millis(500));
        let served = queues.serve(line).await.unwrap();
        assert_eq!(served.granted.len(), 1, "one every 500 ms");
        order.extend(served.granted);
    }
    assert_eq!(
        order,
        [tickets[0], tickets[3], tickets[1], tickets[2]],
        "a, b, then a again"
    );
}
