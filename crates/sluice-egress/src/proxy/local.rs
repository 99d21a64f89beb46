//! The proxy's own endpoints: `/_sluice/healthz` and `/_sluice/metrics` (and `/healthz`,
//! `/metrics` when configured).

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use sluice_store::Store;

use super::LOCAL_PREFIX;
use super::body::ProxyBody;
use super::forward::Shared;
use super::problem::{Reason, problem};

/// The answer of a local endpoint, or `None` for a request to forward.
pub(crate) fn route<S: Store, B>(
    shared: &Shared<S>,
    request: &Request<B>,
) -> Option<Response<ProxyBody>> {
    let path = request.uri().path();
    let name = match path.strip_prefix(LOCAL_PREFIX) {
        Some(name) => name,
        None if shared.config.root_endpoints
            && matches!(*request.method(), Method::GET | Method::HEAD) =>
        {
            match path {
                "/healthz" => "healthz",
                "/metrics" => "metrics",
                _ => return None,
            }
        }
        None => return None,
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = problem(
            Reason::BadRequest,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} answers GET and HEAD only."),
            None,
        );
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    Some(match name {
        "healthz" => {
            let stats = shared.egress.stats();
            let body = json!({
                "status": "ok",
                "upstream": shared.config.upstream.to_string(),
                "circuit": stats.circuit.name(),
                "in_flight": stats.in_flight,
                "waiting": stats.waiting,
            });
            text(body.to_string(), "application/json")
        }
        "metrics" => text(
            shared.metrics.render(&shared.egress.stats()),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => problem(
            Reason::BadRequest,
            StatusCode::NOT_FOUND,
            &format!(
                "{path} is not an endpoint of the proxy: {LOCAL_PREFIX}healthz and {LOCAL_PREFIX}metrics are."
            ),
            None,
        ),
    })
}

fn text(body: String, content_type: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
