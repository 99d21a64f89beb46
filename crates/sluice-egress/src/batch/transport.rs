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
type Connector = crate::tls::Connector;
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;

/// Sends attempts with hyper-util's pooled HTTP/1.1 client: redirects are not followed,
/// connections are kept alive, answers are read whole up to a bound. With the `rustls`
/// feature, https uses the crate's shared TLS setup (rustls with the ring provider, given to
/// this client only, never installed as the process default, and the platform's
/// certificate roots), offering no ALPN: HTTP/1.1 only; without it, only http.
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
        let connector = crate::tls::https_connector(http, crate::tls::Alpn::Http1)
            .map_err(|e| BatchError::Client(format!("TLS: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_builds_with_its_tls_setup() {
        let transport = HttpTransport::new(1024).expect("the client builds");
        assert_eq!(transport.max_response, 1024);
    }
}
