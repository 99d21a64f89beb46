//! Several `RedisStore` clients, as several servers would be, sharing one limit on a real
//! `redis-server` with Redis `TIME` as the timeline: the total admitted is counted, not
//! estimated, and equals exactly what the policy allows. Plus keys a client controls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_core::{Key, Policy};
use sluice_redis::RedisStore;
use sluice_store::{Limit, Store};
use sluice_testkit::RedisServer;

const CLIENTS: usize = 4;
const TASKS_PER_CLIENT: usize = 16;
const ATTEMPTS_PER_TASK: usize = 25;

/// 64 tasks over 4 clients make 1,600 attempts on a limit of 500 per day: exactly 500 pass
/// (a day-long period means nothing refills while the test runs).
async fn admitted_by_many_clients(policy: Policy) -> u64 {
    let server = RedisServer::spawn().expect("redis-server");
    let prefix = format!("shared-{}", policy.algorithm());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let store = RedisStore::connect(&server.url()).await.expect("connect");
        clients.push(store.with_prefix(&prefix));
    }
    let admitted = Arc::new(AtomicU64::new(0));
    let key = Key::new("api", [("scope", "global")]).expect("test redis");
    let mut tasks = Vec::new();
    for client in &clients {
        for _ in 0..TASKS_PER_CLIENT {
            let (store, admitted, key) = (client.clone(), Arc::clone(&admitted), key.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..ATTEMPTS_PER_TASK {
                    let decision = store
                        .check(Limit::new(&key, &policy), 1)
                        .await
                        .expect("test redis");
                    if decision.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("test redis");
    }
    admitted.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_admit_exactly_the_gcra_burst() {
    let policy = Policy::parse("gcra", "500/d").expect("test redis");
    assert_eq!(admitted_by_many_clients(policy).await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_admit_exactly_the_sliding_log_limit() {
    let policy = Policy::parse("sliding_log", "500/d").expect("test redis");
    assert_eq!(admitted_by_many_clients(policy).await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_hold_at_most_the_concurrency_limit() {
    let policy = Policy::parse("concurrency", "500/d").expect("test redis");
    assert_eq!(admitted_by_many_clients(policy).await, 500);
}

#[tokio::test]
async fn huge_odd_and_empty_descriptor_values_are_bounded_keys() {
    let server = RedisServer::spawn().expect("redis-server");
    let store = RedisStore::connect(&server.url())
        .await
        .expect("test redis");
    let p = Policy::parse("gcra", "2/s").expect("test redis");
    let huge = "v".repeat(1 << 20);
    for value in [huge.as_str(), "", "\u{0}\u{1}|=%{}\n", "ünï©ødé 🚦"] {
        let key = Key::new("api", [("user", value)]).expect("test redis");
        let decision = store
            .check(Limit::new(&key, &p), 1)
            .await
            .expect("test redis");
        assert!(decision.allowed, "{:?}", key.as_str());
        assert!(key.as_str().len() <= 64, "{} bytes", key.as_str().len());
    }
    // Every key the store wrote is short, whatever the client sent.
    let keys = server.command(&["KEYS", "*"]).expect("test redis");
    assert_eq!(keys.lines().count(), 4);
    assert!(keys.lines().all(|k| k.len() < 100), "{keys}");
}
