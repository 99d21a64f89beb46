//! The fake upstream's `Idempotency-Key` store: a request that repeats the key of an
//! earlier successful one gets that answer again, without being processed a second time.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};

/// How many keys the store remembers: the oldest are forgotten first (a request with a
/// forgotten key is processed again, as a real API's store expires).
pub const IDEMPOTENCY_CAPACITY: usize = 100_000;

/// What the store knows of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyUse {
    /// How many requests with this key were processed: answered 2xx and charged to the
    /// quota. With the store working, at most 1 while the key is remembered.
    pub processed: u64,
    /// How many requests with this key got the stored answer again (not charged).
    pub replayed: u64,
}

/// A stored answer.
#[derive(Clone)]
struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

struct Entry {
    answer: Option<Stored>,
    usage: KeyUse,
}

/// Keys in order of first use, bounded by [`IDEMPOTENCY_CAPACITY`].
#[derive(Default)]
pub(super) struct IdempotencyStore {
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
}

impl IdempotencyStore {
    /// The stored answer of `key`, counted as a replay; `None` when the key has none.
    pub(super) fn replay(&mut self, key: &str) -> Option<Response<Bytes>> {
        let entry = self.entries.get_mut(key)?;
        let stored = entry.answer.as_ref()?;
        entry.usage.replayed += 1;
        let mut response = Response::new(stored.body.clone());
        *response.status_mut() = stored.status;
        *response.headers_mut() = stored.headers.clone();
        Some(response)
    }

    /// Records the answer to a request with `key`: a 2xx is stored (and counted as
    /// processed); anything else was not processed and is not stored, so a retry with the
    /// same key is processed.
    pub(super) fn record(&mut self, key: &str, response: &Response<Bytes>) {
        if !response.status().is_success() {
            return;
        }
        if !self.entries.contains_key(key) {
            if self.order.len() >= IDEMPOTENCY_CAPACITY
                && let Some(oldest) = self.order.pop_front()
            {
                self.entries.remove(&oldest);
            }
            self.order.push_back(key.to_owned());
            self.entries.insert(
                key.to_owned(),
                Entry {
                    answer: None,
                    usage: KeyUse::default(),
                },
            );
        }
        if let Some(entry) = self.entries.get_mut(key) {
            entry.usage.processed += 1;
            entry.answer = Some(Stored {
                status: response.status(),
                headers: response.headers().clone(),
                body: response.body().clone(),
            });
        }
    }

    /// Every remembered key and its use.
    pub(super) fn usage(&self) -> HashMap<String, KeyUse> {
        self.entries
            .iter()
            .map(|(key, entry)| (key.clone(), entry.usage.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::HeaderValue;

    use super::*;
    use crate::clock_at;
    use crate::upstream::{FakeUpstream, FakeUpstreamConfig, Fault, chat_request, json_request};

    fn keyed(key: &'static str) -> http::Request<http_body_util::Full<Bytes>> {
        let mut request = chat_request("Hello", Some(10));
        request
            .headers_mut()
            .insert("idempotency-key", HeaderValue::from_static(key));
        request
    }

    #[tokio::test]
    async fn a_repeated_key_replays_the_answer_without_charging() {
        let upstream = FakeUpstream::new(FakeUpstreamConfig::default(), Arc::new(clock_at(100)));
        let first = upstream.handle(keyed("k1")).await.unwrap();
        let again = upstream.handle(keyed("k1")).await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(
            again.body(),
            first.body(),
            "the same completion, id included"
        );
        assert_eq!(
            again.headers()["x-request-id"],
            first.headers()["x-request-id"]
        );
        let other = upstream.handle(keyed("k2")).await.unwrap();
        assert_ne!(other.body(), first.body());
        upstream
            .handle(chat_request("Hello", Some(10)))
            .await
            .unwrap();

        let stats = upstream.stats();
        assert_eq!((stats.requests, stats.ok, stats.replayed), (4, 3, 1));
        let keys = upstream.idempotency_keys();
        assert_eq!(
            keys["k1"],
            KeyUse {
                processed: 1,
                replayed: 1
            }
        );
        assert_eq!(keys["k2"].processed, 1);
        assert_eq!(keys.len(), 2, "requests without a key are not stored");
    }

    #[tokio::test]
    async fn failures_are_not_stored_and_faults_come_first() {
        let upstream = FakeUpstream::new(FakeUpstreamConfig::default(), Arc::new(clock_at(100)));
        upstream.fail_next(1, Fault::server_error(500));
        assert_eq!(upstream.handle(keyed("k")).await.unwrap().status(), 500);
        assert!(upstream.idempotency_keys().is_empty());
        assert_eq!(upstream.handle(keyed("k")).await.unwrap().status(), 200);
        upstream.fail_next(1, Fault::server_error(503));
        assert_eq!(upstream.handle(keyed("k")).await.unwrap().status(), 503);
        assert_eq!(upstream.handle(keyed("k")).await.unwrap().status(), 200);
        let mut bad = json_request(
            http::Method::POST,
            "/v1/chat/completions",
            &serde_json::json!({}),
        );
        bad.headers_mut()
            .insert("idempotency-key", HeaderValue::from_static("bad"));
        assert_eq!(upstream.handle(bad).await.unwrap().status(), 400);
        assert!(!upstream.idempotency_keys().contains_key("bad"));
        assert_eq!(upstream.stats().replayed, 1);
    }
}
