//! The HTTP client to the upstream, and the headers that do not cross the proxy.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, CONNECTION, EXPECT, HOST, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::config::{ProxyConfig, ProxyConfigError};

#[cfg(feature = "proxy-tls")]
type Connector = crate::tls::Connector;
#[cfg(not(feature = "proxy-tls"))]
type Connector = HttpConnector;

/// A pooled keep-alive client (HTTP/1.1; HTTP/2 when a TLS upstream offers it).
#[derive(Clone, Debug)]
pub(crate) struct UpstreamClient {
    client: Client<Connector, Full<Bytes>>,
}

impl UpstreamClient {
    pub(crate) fn new(config: &ProxyConfig) -> Result<Self, ProxyConfigError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = connector(http)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self { client })
    }

    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }
}

/// The crate's shared TLS setup (rustls with the ring provider, given to this client only,
/// never installed as the process default, and the platform's certificate roots), as the
/// batch engine's client has, but offering `h2` as well as `http/1.1` by ALPN.
#[cfg(feature = "proxy-tls")]
fn connector(http: HttpConnector) -> Result<Connector, ProxyConfigError> {
    crate::tls::https_connector(http, crate::tls::Alpn::H2AndHttp1)
        .map_err(|e| ProxyConfigError::Tls(e.to_string()))
}

#[cfg(not(feature = "proxy-tls"))]
#[allow(clippy::unnecessary_wraps, reason = "the TLS build can fail here")]
fn connector(http: HttpConnector) -> Result<Connector, ProxyConfigError> {
    Ok(http)
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// proxy's own credentials: never forwarded, in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
];

/// Removes the hop-by-hop headers, those the `Connection` header names included, and
/// `Upgrade`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(UPGRADE);
}

/// The headers of a request as it goes upstream: hop-by-hop ones removed, `Host` the
/// upstream's, `Expect` dropped (the body is sent whole), and answers asked uncompressed so
/// that their usage can be read. Everything else, `Authorization` included, as sent.
pub(crate) fn outgoing_headers(headers: &mut HeaderMap, host: &str) {
    remove_hop_by_hop(headers);
    headers.remove(EXPECT);
    headers.remove(http::header::CONTENT_LENGTH);
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert(HOST, host);
    }
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "proxy-tls")]
    #[test]
    fn the_client_builds_for_an_https_upstream() {
        let config = ProxyConfig::new("https://api.example.com/v1").expect("a valid config");
        UpstreamClient::new(&config).expect("the client builds");
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stays() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic cHJveHk="),
            ("authorization", "Bearer sk-test"),
            ("host", "127.0.0.1:8090"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        outgoing_headers(&mut headers, "api.example.com");
        let mut left: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                ("accept-encoding".to_owned(), "identity".to_owned()),
                ("authorization".to_owned(), "Bearer sk-test".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
                ("host".to_owned(), "api.example.com".to_owned()),
            ]
        );
    }
}
