//! The HTTP JSON API: `/v1/check`, reservations, the loaded limits, health, metrics and the
//! OpenAPI document.
//!
//! Bodies are read as bytes (bounded) and decoded with `serde_path_to_error`, so a malformed
//! body is answered `400 application/problem+json` naming the field; an oversized one `413`.
//! The `Content-Type` is not required: `curl -d` works as is.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_http::check;

use crate::backend::Backend;
use crate::limiter::{Code, LimitError, Limiter, Status};
use crate::request::{CheckRequest, Descriptor, InvalidRequest};

/// Largest request body accepted, in bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest wait a reservation may ask for.
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(3600);

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// The router of the HTTP API over `limiter`.
pub(crate) fn router<B: Backend>(limiter: Arc<Limiter<B>>) -> Router {
    Router::new()
        .route("/v1/check", post(check::<B>))
        .route("/v1/reserve", post(reserve::<B>))
        .route("/v1/settle", post(settle::<B>))
        .route("/v1/cancel", post(cancel::<B>))
        .route("/v1/limits", get(limits::<B>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<B>))
        .route("/metrics", get(metrics::<B>))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(limiter)
}

async fn check<B: Backend>(
    State(limiter): State<Arc<Limiter<B>>>,
    Json(request): Json<CheckRequest>,
) -> Response {
    match limiter.check(request).await {
        Ok(outcome) => json_response(
            StatusCode::OK,
            &check::CheckResponse {
                overall_code: Cow::Borrowed(outcome.code.as_str()),
                statuses: outcome.statuses.iter().map(status_json).collect(),
            },
        ),
        Err(err) => error_response(&err),
    }
}

/// `POST /v1/reserve`: a check that may wait.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveRequest {
    domain: String,
    descriptors: Vec<Descriptor>,
    #[serde(default)]
    hits: Option<u64>,
    /// The longest wait acceptable, in milliseconds (0: only what is available now).
    #[serde(default)]
    max_wait_ms: u64,
}

async fn reserve<B: Backend>(
    State(limiter): State<Arc<Limiter<B>>>,
    Json(request): Json<ReserveRequest>,
) -> Response {
    let max_wait = Duration::from_millis(request.max_wait_ms);
    if max_wait > MAX_WAIT_LIMIT {
        let invalid = InvalidRequest::new(
            "max_wait_ms",
            format!(
                "at most {}, got {}",
                MAX_WAIT_LIMIT.as_millis(),
                request.max_wait_ms
            ),
        );
        return error_response(&invalid.into());
    }
    let check = CheckRequest {
        domain: request.domain.into(),
        descriptors: request.descriptors,
        hits: request.hits,
    };
    match limiter.reserve(check, max_wait).await {
        Ok(outcome) => json_response(
            StatusCode::OK,
            &json!({
                "granted": outcome.granted,
                "reservation_id": outcome.id,
                "wait_ms": ceil_millis(outcome.wait),
                "statuses": outcome.statuses.iter().map(status_json).collect::<Vec<_>>(),
            }),
        ),
        Err(err) => error_response(&err),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleRequest {
    reservation_id: String,
    /// What the work really used, per limit.
    hits: u64,
}

async fn settle<B: Backend>(
    State(limiter): State<Arc<Limiter<B>>>,
    Json(request): Json<SettleRequest>,
) -> Response {
    match limiter.settle(&request.reservation_id, request.hits).await {
        Ok(()) => json_response(StatusCode::OK, &json!({"settled": true})),
        Err(err) => error_response(&err),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    reservation_id: String,
}

async fn cancel<B: Backend>(
    State(limiter): State<Arc<Limiter<B>>>,
    Json(request): Json<CancelRequest>,
) -> Response {
    match limiter.cancel(&request.reservation_id).await {
        Ok(()) => json_response(StatusCode::OK, &json!({"cancelled": true})),
        Err(err) => error_response(&err),
    }
}

async fn limits<B: Backend>(State(limiter): State<Arc<Limiter<B>>>) -> Response {
    let config = limiter.config();
    json_response(
        StatusCode::OK,
        &json!({"version": limiter.version(), "config": config.to_json()}),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<B: Backend>(State(limiter): State<Arc<Limiter<B>>>) -> Response {
    let health = limiter.backend().health();
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ready",
            "store": limiter.backend().kind(),
            "store_breaker_open": health.breaker_open,
            "config_version": limiter.version(),
        }),
    )
}

async fn metrics<B: Backend>(State(limiter): State<Arc<Limiter<B>>>) -> Response {
    let mut response = limiter.render_metrics().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A descriptor's status as `/v1/check` and `/v1/reserve` answer it.
fn status_json(status: &Status) -> check::Status<'_> {
    let limit = status
        .rule
        .as_deref()
        .filter(|r| !r.is_unlimited())
        .map(|rule| check::Limit {
            requests_per_unit: rule.requests_per_unit,
            unit: Cow::Borrowed(rule.unit.name()),
            unit_multiplier: rule.unit_multiplier,
            name: rule.name.as_deref().map(Cow::Borrowed),
            algorithm: Cow::Borrowed(rule.policy.map_or("blocked", |p| p.algorithm().name())),
            shadow_mode: rule.shadow_mode,
        });
    let decision = status.decision;
    check::Status {
        code: Cow::Borrowed(status.code.as_str()),
        limit,
        limit_remaining: decision.map_or(0, |d| d.remaining),
        duration_until_reset_ms: decision.map_or(0, |d| ceil_millis(d.reset_after)),
        retry_after_ms: match status.code {
            Code::OverLimit => decision.and_then(|d| d.retry_after).map(ceil_millis),
            Code::Ok => None,
        },
    }
}

/// Whole milliseconds, rounded up so that waiting them is never early.
fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            &err.to_string(),
            None,
        ),
    }
}

fn error_response(err: &LimitError) -> Response {
    match err {
        LimitError::Invalid(invalid) => problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &invalid.to_string(),
            Some(invalid),
        ),
        LimitError::Store(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store Unavailable",
            &err.to_string(),
            None,
        ),
        LimitError::UnknownReservation => problem(
            StatusCode::NOT_FOUND,
            "Unknown Reservation",
            &err.to_string(),
            None,
        ),
        LimitError::Full(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too Many Reservations",
            &err.to_string(),
            None,
        ),
    }
}

/// An RFC 9457 problem response; a field error also goes in `invalid-params`.
pub(crate) fn problem(
    status: StatusCode,
    title: &str,
    detail: &str,
    invalid: Option<&InvalidRequest>,
) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(invalid) = invalid {
        body["invalid-params"] = json!([{"name": invalid.field, "reason": invalid.message}]);
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// A JSON body decoded with field paths in its errors, answered as problems.
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = match Bytes::from_request(request, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let detail = format!("the body is larger than {MAX_BODY_BYTES} bytes");
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Content Too Large",
                    &detail,
                    None,
                ));
            }
            Err(rejection) => {
                return Err(problem(
                    rejection.status(),
                    "Bad Request",
                    &rejection.body_text(),
                    None,
                ));
            }
        };
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let decoded = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let field = if path == "." || path == "?" {
                "body".to_owned()
            } else {
                path
            };
            InvalidRequest::new(field, err.into_inner().to_string())
        });
        let decoded = decoded.and_then(|value| match deserializer.end() {
            Ok(()) => Ok(Self(value)),
            Err(err) => Err(InvalidRequest::new("body", err.to_string())),
        });
        decoded.map_err(|invalid| {
            problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &invalid.to_string(),
                Some(&invalid),
            )
        })
    }
}
