//! Which forwarded requests may share one upstream call ([`ProxyConfig::coalesce`]), and
//! the key that says two of them are the same.
//!
//! Two requests share a call only if everything the upstream sees is the same: method,
//! path and query, body bytes, and every header as it goes upstream (`Authorization`,
//! `x-api-key`, `api-key`, `anthropic-version`, ... all count, so two API keys never share
//! an answer). Hop-by-hop headers are gone by then, and `x-sluice-*` headers are the
//! proxy's, not the request's, so they do not count.
//!
//! Only requests whose answer may be handed to several callers are candidates:
//!
//! - `GET` and `HEAD`;
//! - `POST` with a JSON body (a `Content-Type` of `application/json` or `…+json`, and a body
//!   that parses): the shape of LLM completion calls, which is what coalescing is for;
//! - never a streamed one (`Accept: text/event-stream`, or a JSON body whose `stream` is
//!   anything but absent, `null` or `false`): a stream cannot be shared;
//! - never any other method (`PUT`, `PATCH`, `DELETE`, ...).
//!
//! The method, path, query, headers and body go into one SHA-256 digest, so a key is a
//! fixed number of bytes whatever the request's size.
//!
//! [`ProxyConfig::coalesce`]: super::ProxyConfig::coalesce

use http::header::ACCEPT;
use http::{HeaderMap, Method, Uri, request};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::forward::is_json;
use crate::coalesce::CoalesceKey;

/// The prefix of the proxy's own request headers, which never count.
const SLUICE_HEADER_PREFIX: &str = "x-sluice-";

/// The key of a request as it goes upstream (`parts` after the headers were rewritten),
/// or `None` when it must make its own call. `base` stands for the upstream in the key:
/// the request's own path and query are inside the digest.
pub(crate) fn key_for(parts: &request::Parts, body: &[u8], base: &Uri) -> Option<CoalesceKey> {
    if !may_share(&parts.method, &parts.headers, body) {
        return None;
    }
    let digest = digest(parts, body);
    Some(CoalesceKey::new(
        &parts.method,
        base,
        &HeaderMap::new(),
        &[],
        &digest,
    ))
}

/// Whether a request's answer may be handed to identical requests.
fn may_share(method: &Method, headers: &HeaderMap, body: &[u8]) -> bool {
    if accepts_event_stream(headers) {
        return false;
    }
    match *method {
        Method::GET | Method::HEAD => !asks_to_stream(body),
        Method::POST => is_json(headers) && parses_without_stream(body),
        _ => false,
    }
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("text/event-stream"))
    })
}

/// The one field of a request body that decides whether its answer streams; serde skips
/// the rest without building it.
#[derive(Deserialize)]
struct StreamFlag {
    #[serde(default)]
    stream: Option<serde_json::Value>,
}

impl StreamFlag {
    fn streams(&self) -> bool {
        !matches!(
            self.stream,
            None | Some(serde_json::Value::Null | serde_json::Value::Bool(false))
        )
    }
}

/// A JSON body that parses and does not ask for a stream.
fn parses_without_stream(body: &[u8]) -> bool {
    serde_json::from_slice::<StreamFlag>(body).is_ok_and(|flag| !flag.streams())
}

/// A body (of a `GET`, say) that is JSON asking for a stream. Anything else, no body
/// included, does not.
fn asks_to_stream(body: &[u8]) -> bool {
    serde_json::from_slice::<StreamFlag>(body).is_ok_and(|flag| flag.streams())
}

/// SHA-256 over the method, path and query, the headers that count (sorted by name, each
/// name's values in order) and the body, every field length-prefixed so that no two
/// different requests feed the hash the same bytes.
fn digest(parts: &request::Parts, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(parts.method.as_str().as_bytes());
    field(
        parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes(),
    );
    let mut names: Vec<&str> = parts
        .headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|name| !name.starts_with(SLUICE_HEADER_PREFIX))
        .collect();
    names.sort_unstable();
    field(&(names.len() as u64).to_be_bytes());
    for name in names {
        field(name.as_bytes());
        let values = parts.headers.get_all(name);
        field(&(values.iter().count() as u64).to_be_bytes());
        for value in values {
            field(value.as_bytes());
        }
    }
    field(body);
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Uri {
        Uri::from_static("http://upstream.test/")
    }

    fn parts(
        method: Method,
        uri: &str,
        headers: &[(&'static str, &'static str)],
    ) -> request::Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("a request").into_parts().0
    }

    fn post(headers: &[(&'static str, &'static str)], body: &str) -> Option<CoalesceKey> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        key_for(
            &parts(Method::POST, "/v1/chat/completions", &all),
            body.as_bytes(),
            &base(),
        )
    }

    const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn identical_requests_have_one_key() {
        let auth = [("authorization", "Bearer sk-a")];
        assert!(post(&auth, CHAT).is_some());
        assert_eq!(post(&auth, CHAT), post(&auth, CHAT));
        // The proxy's own headers are not the request's.
        assert_eq!(
            post(
                &[("authorization", "Bearer sk-a"), ("x-sluice-trace", "1")],
                CHAT
            ),
            post(&auth, CHAT)
        );
    }

    #[test]
    fn credentials_body_path_and_headers_tell_requests_apart() {
        let a = post(&[("authorization", "Bearer sk-a")], CHAT);
        for other in [
            post(&[("authorization", "Bearer sk-b")], CHAT),
            post(&[], CHAT),
            post(&[("x-api-key", "k")], CHAT),
            post(&[("authorization", "Bearer sk-a"), ("api-key", "k")], CHAT),
            post(
                &[
                    ("authorization", "Bearer sk-a"),
                    ("anthropic-version", "2023-06-01"),
                ],
                CHAT,
            ),
            post(
                &[("authorization", "Bearer sk-a")],
                &CHAT.replace("hi", "ho"),
            ),
            key_for(
                &parts(
                    Method::POST,
                    "/v1/chat/completions?x=1",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", "Bearer sk-a"),
                    ],
                ),
                CHAT.as_bytes(),
                &base(),
            ),
        ] {
            assert!(other.is_some());
            assert_ne!(a, other);
        }
        // Two values of one header, in another order, are another request.
        let one = parts(Method::GET, "/v1/models", &[("x-tag", "1"), ("x-tag", "2")]);
        let two = parts(Method::GET, "/v1/models", &[("x-tag", "2"), ("x-tag", "1")]);
        assert_ne!(key_for(&one, b"", &base()), key_for(&two, b"", &base()));
    }

    #[test]
    fn streams_are_never_shared() {
        assert!(post(&[], r#"{"model":"m","stream":true}"#).is_none());
        assert!(post(&[], r#"{"model":"m","stream":"yes"}"#).is_none());
        assert!(post(&[], r#"{"model":"m","stream":false}"#).is_some());
        assert!(post(&[], r#"{"model":"m","stream":null}"#).is_some());
        assert!(post(&[("accept", "text/event-stream")], CHAT).is_none());
        assert!(post(&[("accept", "application/json, Text/Event-Stream")], CHAT).is_none());
        let get = parts(
            Method::GET,
            "/v1/events",
            &[("accept", "text/event-stream")],
        );
        assert!(key_for(&get, b"", &base()).is_none());
        let get = parts(Method::GET, "/v1/models", &[]);
        assert!(key_for(&get, br#"{"stream":true}"#, &base()).is_none());
    }

    #[test]
    fn only_reads_and_json_posts_are_shared() {
        for method in [Method::GET, Method::HEAD] {
            assert!(key_for(&parts(method, "/v1/models", &[]), b"", &base()).is_some());
        }
        for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS] {
            let request = parts(
                method,
                "/v1/files/1",
                &[("content-type", "application/json")],
            );
            assert!(key_for(&request, CHAT.as_bytes(), &base()).is_none());
        }
        let form = parts(
            Method::POST,
            "/v1/files",
            &[("content-type", "multipart/form-data; boundary=x")],
        );
        assert!(key_for(&form, b"--x--", &base()).is_none());
        assert!(post(&[], "not json").is_none());
        assert!(post(&[], "").is_none());
        let problem = parts(
            Method::POST,
            "/v1/x",
            &[("content-type", "application/vnd.api+json; charset=utf-8")],
        );
        assert!(key_for(&problem, CHAT.as_bytes(), &base()).is_some());
    }
}
