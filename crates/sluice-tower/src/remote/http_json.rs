//! A client of `sluice serve`'s HTTP JSON API: `POST /v1/check`.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_core::Key;
use sluice_http::check::{
    CODE_OK, CODE_OVER_LIMIT, CheckRequest, CheckResponse, Descriptor, Entry, Status as StatusJson,
};

use super::EndpointError;
use super::check::{Answer, Failure, Quota, RemoteBackend, Status, unit_secs};

/// The largest answer read: 64 descriptors' statuses take a few KiB.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Idle pooled connections are closed after this long (below the usual server and
/// load balancer idle timeouts, so a request rarely meets a connection closing under it).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `sluice serve`'s HTTP JSON API as the layer's transport: one `POST /v1/check` per
/// request over pooled keep-alive HTTP/1.1 connections (hyper-util's client).
///
/// Plain `http://` only; put the server on the same host or a trusted network.
#[derive(Clone, Debug)]
pub struct HttpBackend {
    client: Client<HttpConnector, Full<Bytes>>,
    check_uri: Uri,
}

impl HttpBackend {
    /// A client of the server at `base_url` (`http://host:port`, optionally with a path
    /// prefix the API is mounted under). Connects on first use.
    ///
    /// # Errors
    /// [`EndpointError`] when `base_url` is not an `http://` URL with a host, or has a
    /// query.
    pub fn new(base_url: &str) -> Result<Self, EndpointError> {
        let invalid = |reason: &str| EndpointError::new(base_url, reason);
        let base: Uri = base_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        if base.scheme_str() != Some("http") {
            return Err(invalid("only http:// is supported"));
        }
        let authority = base.authority().ok_or_else(|| invalid("no host"))?;
        if base.query().is_some() {
            return Err(invalid("a base URL has no query"));
        }
        let path = base.path().trim_end_matches('/');
        let check_uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(format!("{path}/v1/check"))
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        let mut connector = HttpConnector::new();
        // Checks are small request/answer pairs: Nagle would only delay them.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Self { client, check_uri })
    }

    /// The URL every check is posted to.
    pub fn check_uri(&self) -> &Uri {
        &self.check_uri
    }

    async fn post(&self, body: Vec<u8>) -> Result<Answer, Failure> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.check_uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Failure::BadAnswer)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|_| Failure::Unreachable)?;
        if !response.status().is_success() {
            return Err(Failure::BadAnswer);
        }
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    Failure::BadAnswer
                } else {
                    Failure::Unreachable
                }
            })?
            .to_bytes();
        let answer: CheckResponse<'static> =
            serde_json::from_slice(&bytes).map_err(|_| Failure::BadAnswer)?;
        into_answer(answer)
    }
}

// The answer types are private to this crate: the trait is sealed.
#[allow(private_interfaces)]
impl RemoteBackend for HttpBackend {
    async fn check<'a>(
        &'a self,
        domain: &'a str,
        keys: &'a [Key],
        hits: u64,
    ) -> Result<Answer, Failure> {
        let body = CheckRequest {
            domain: domain.into(),
            descriptors: keys
                .iter()
                .map(|key| Descriptor {
                    entries: key
                        .entries()
                        .map(|(key, value)| Entry {
                            key: key.into(),
                            value: value.into(),
                        })
                        .collect(),
                    hits: None,
                })
                .collect(),
            hits: Some(hits),
        };
        let body = serde_json::to_vec(&body).map_err(|_| Failure::BadAnswer)?;
        self.post(body).await
    }
}

/// The server's decision in an answer; fields this layer does not use are ignored, so a
/// newer server still parses.
fn into_answer(answer: CheckResponse<'_>) -> Result<Answer, Failure> {
    let statuses = answer
        .statuses
        .into_iter()
        .map(into_status)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Answer {
        over_limit: over_limit(&answer.overall_code)?,
        statuses,
    })
}

fn into_status(status: StatusJson<'_>) -> Result<Status, Failure> {
    let over_limit = over_limit(&status.code)?;
    // A shadow-mode rule only observes: the client is not shown it.
    let quota = status.limit.filter(|l| !l.shadow_mode).and_then(|limit| {
        let window_secs = unit_secs(&limit.unit)?.saturating_mul(limit.unit_multiplier);
        Some(Quota {
            units: limit.requests_per_unit,
            window_secs,
        })
    });
    Ok(Status {
        over_limit,
        quota,
        remaining: status.limit_remaining,
        reset_after: Duration::from_millis(status.duration_until_reset_ms),
        retry_after: status
            .retry_after_ms
            .filter(|_| over_limit)
            .map(Duration::from_millis),
    })
}

/// `OVER_LIMIT` or `OK`; anything else (Envoy's `UNKNOWN`) is not a decision.
fn over_limit(code: &str) -> Result<bool, Failure> {
    match code {
        CODE_OK => Ok(false),
        CODE_OVER_LIMIT => Ok(true),
        _ => Err(Failure::BadAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let check = |url: &str| HttpBackend::new(url).map(|b| b.check_uri().to_string());
        assert_eq!(
            check("http://127.0.0.1:8081").as_deref(),
            Ok("http://127.0.0.1:8081/v1/check")
        );
        assert_eq!(
            check("http://limits.internal/sluice/").as_deref(),
            Ok("http://limits.internal/sluice/v1/check")
        );
        for bad in ["https://x", "127.0.0.1:8081", "http://x/?q=1", "not a url"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_parse_into_decisions() {
        let json = r#"{"overall_code":"OVER_LIMIT","statuses":[
            {"code":"OVER_LIMIT","limit":{"requests_per_unit":5,"unit":"minute","unit_multiplier":2,"name":"x","algorithm":"gcra"},
             "limit_remaining":0,"duration_until_reset_ms":119001,"retry_after_ms":23500},
            {"code":"OK","limit":null,"limit_remaining":0,"duration_until_reset_ms":0,"retry_after_ms":null},
            {"code":"OK","limit":{"requests_per_unit":1,"unit":"hour","algorithm":"gcra","shadow_mode":true},
             "limit_remaining":0,"duration_until_reset_ms":5,"retry_after_ms":null,"future_field":1}
        ],"future_field":true}"#;
        let answer: CheckResponse<'_> = serde_json::from_str(json).expect("parses");
        let answer = into_answer(answer).expect("a decision");
        assert!(answer.over_limit);
        assert_eq!(
            answer.statuses[0],
            Status {
                over_limit: true,
                quota: Some(Quota {
                    units: 5,
                    window_secs: 120
                }),
                remaining: 0,
                reset_after: Duration::from_millis(119_001),
                retry_after: Some(Duration::from_millis(23_500)),
            }
        );
        assert_eq!(answer.statuses[1].quota, None);
        assert_eq!(answer.statuses[2].quota, None, "shadow mode is not shown");
    }

    #[test]
    fn unknown_codes_are_not_decisions() {
        let json = r#"{"overall_code":"UNKNOWN","statuses":[]}"#;
        let answer: CheckResponse<'_> = serde_json::from_str(json).expect("parses");
        assert_eq!(into_answer(answer), Err(Failure::BadAnswer));
    }
}
