//! The https client setup both engines share (features `rustls` for the batch engine and
//! `proxy-tls` for the proxy): rustls with the ring provider, given to the connector only and
//! never installed as the process default (so no aws-lc-sys to build, and other rustls
//! clients in the program keep their own choice), and the platform's certificate roots
//! (with their local additions, such as a company's CA).

use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::ClientConfig;
use rustls_platform_verifier::BuilderVerifierExt as _;

/// A connector for both http:// and https:// URLs.
pub(crate) type Connector = HttpsConnector<HttpConnector>;

/// The HTTP versions a connector offers a TLS server (by ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// HTTP/1.1 only, and no ALPN offered (the batch engine).
    #[cfg(feature = "rustls")]
    Http1,
    /// `h2` then `http/1.1`: HTTP/2 when the server picks it (the proxy).
    #[cfg(feature = "proxy-tls")]
    H2AndHttp1,
}

/// Why the TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// The provider refused the default protocol versions.
    #[error("{0}")]
    Versions(rustls::Error),
    /// The platform verifier could not be set up.
    #[error("certificate roots: {0}")]
    Roots(rustls::Error),
}

/// rustls with the ring provider, the safe default protocol versions, the platform
/// verifier, no client certificate, and no ALPN (the connector sets it).
pub(crate) fn client_config() -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?
        .with_platform_verifier()
        .map_err(TlsError::Roots)?
        .with_no_client_auth())
}

/// Wraps `http` (whose settings, timeouts included, it keeps) into a connector for
/// http:// and https:// URLs with [`client_config`], offering the `alpn` versions.
pub(crate) fn https_connector(mut http: HttpConnector, alpn: Alpn) -> Result<Connector, TlsError> {
    http.enforce_http(false);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(client_config()?)
        .https_or_http();
    Ok(match alpn {
        #[cfg(feature = "rustls")]
        Alpn::Http1 => builder.enable_http1().wrap_connector(http),
        #[cfg(feature = "proxy-tls")]
        Alpn::H2AndHttp1 => builder.enable_all_versions().wrap_connector(http),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_uses_ring_and_offers_no_alpn_of_its_own() {
        let config = client_config().expect("the platform's roots load");
        assert!(config.alpn_protocols.is_empty());
        assert_eq!(
            config.crypto_provider().cipher_suites,
            rustls::crypto::ring::default_provider().cipher_suites
        );
    }

    #[test]
    fn each_engine_builds_its_connector() {
        let alpns = [
            #[cfg(feature = "rustls")]
            Alpn::Http1,
            #[cfg(feature = "proxy-tls")]
            Alpn::H2AndHttp1,
        ];
        for alpn in alpns {
            https_connector(HttpConnector::new(), alpn).unwrap_or_else(|e| panic!("{alpn:?}: {e}"));
        }
    }
}
