//! One timed request over a keep-alive loopback client, for the load programs.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;

/// A keep-alive HTTP/1.1 client over loopback.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One chat completion POSTed to `url`, its whole answer read; how long it took. Any
/// status but 200 is an error.
pub(crate) async fn timed(
    client: &HttpClient,
    url: &str,
    body: &Bytes,
) -> Result<Duration, String> {
    let request = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-latency-test")
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    Ok(took)
}
