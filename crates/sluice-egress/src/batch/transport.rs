//! [`HttpTransport`]: one attempt over HTTP/1.1 with hyper-util's client (http://, and
//! https:// with the `rustls` feature).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{BatchError, BoxFuture, Transport};
use crate::SendError;
use crate::classify::ErrorClass;
use crate::layer::ResponseTooLarge;

/// How long connecting may take before the attempt fails as [`ErrorClass::Connect`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle kept-alive connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(feature = "rustls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;

/// Sends attempts with hyper-util's pooled HTTP/1.1 client: redirects are not followed,
/// connections are kept alive, answers are read whole up to a bound. With the `rustls`
/// feature, https uses rustls with the ring provider (given to this client only, never
/// installed as the process default) and the platform's certificate roots; without it,
/// only http.
#[derive(Clone)]
pub struct HttpTransport {
    client: Client<Connector, Full<Bytes>>,
    max_response: usize,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("tls", &cfg!(feature = "rustls"))
            .field("max_response", &self.max_response)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A client that keeps at most `max_response` bytes of an answer.
    ///
    /// # Errors
    ///
    /// [`BatchError::Client`] when the TLS setup (the platform's certificate roots) fails.
    pub fn new(max_response: usize) -> Result<Self, BatchError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        #[cfg(feature = "rustls")]
        let connector = {
            http.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config()?)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        #[cfg(not(feature = "rustls"))]
        let connector = http;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        Ok(Self {
            client,
            max_response,
        })
    }
}

/// rustls with ring and the platform verifier.
#[cfg(feature = "rustls")]
fn tls_config() -> Result<rustls::ClientConfig, BatchError> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BatchError::Client(format!("TLS: {e}")))?
        .with_platform_verifier()
        .map_err(|e| BatchError::Client(format!("TLS certificate roots: {e}")))?
        .with_no_client_auth();
    Ok(config)
}

impl Transport for HttpTransport {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, SendError>> {
        Box::pin(async move {
            let response = self
                .client
                .request(request.map(Full::new))
                .await
                .map_err(|e| SendError {
                    // A connection that was never made never carried the request.
                    class: if e.is_connect() {
                        ErrorClass::Connect
                    } else {
                        ErrorClass::ConnectionReset
                    },
                    source: Box::new(e),
                })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        SendError {
                            class: ErrorClass::NotRetryable,
                            source: Box::new(ResponseTooLarge {
                                limit: self.max_response,
                            }),
                        }
                    } else {
                        SendError {
                            class: ErrorClass::ConnectionReset,
                            source: e,
                        }
                    }
                })?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        })
    }
}
