//! The conformance suite against `RedisStore` on a throwaway `redis-server`: every
//! scenario and generated sequence must decide exactly like the pure model, with the time
//! passed into the script from the suite's manual clock.

use sluice_core::ManualClock;
use sluice_redis::RedisStore;
use sluice_store::conformance::{self, Config};
use sluice_testkit::RedisServer;

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
