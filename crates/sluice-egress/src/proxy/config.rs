//! What a proxy is configured with, and its upstream's base URL.

use std::fmt;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};

/// The default bound on a request body: 8 MiB (an LLM request with a long context and a
/// few images fits; a larger one gets 413).
pub const DEFAULT_MAX_REQUEST_BODY: usize = 8 << 20;

/// The default bound on an answer the proxy reads whole (errors, JSON): 32 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 32 << 20;

/// The base URL every request is forwarded to: `http://` or `https://`, a host, an
/// optional port and an optional path prefix, without credentials, query or fragment.
///
/// A request for `/chat/completions?x=1` to a proxy of `https://api.openai.com/v1` goes to
/// `https://api.openai.com/v1/chat/completions?x=1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    scheme: Scheme,
    authority: Authority,
    /// The path prefix without its trailing slash: empty or `/v1`.
    prefix: String,
}

impl UpstreamUrl {
    /// Parses and checks a base URL.
    ///
    /// # Errors
    ///
    /// [`ProxyConfigError::Upstream`] naming the URL and what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, ProxyConfigError> {
        let error = |reason: &str| ProxyConfigError::Upstream {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e: http::uri::InvalidUri| error(&e.to_string()))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| error("needs a scheme: http:// or https://"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(error("the scheme must be http or https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| error("needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(error(
                "must not hold credentials: clients send their own Authorization header",
            ));
        }
        if authority.host().is_empty() {
            return Err(error("needs a host"));
        }
        if uri.query().is_some() {
            return Err(error("must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            prefix,
        })
    }

    /// Whether it is an `https://` URL.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// Its host and port, as the `Host` header of forwarded requests (and the default name
    /// of the upstream's pacing state).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The URL a request for `path_and_query` goes to.
    pub(crate) fn join(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let tail = path_and_query.map_or("/", PathAndQuery::as_str);
        let tail = if tail.starts_with('/') { tail } else { "/" };
        let joined = format!("{}{tail}", self.prefix);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(joined)
            .build()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// A URL as it may be shown: without anything between `://` and `@`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://***{}", &url[..start], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// How a proxy forwards requests.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where requests go.
    pub upstream: UpstreamUrl,
    /// The largest request body accepted; larger ones get 413 before anything is sent.
    pub max_request_body: usize,
    /// The largest answer read whole (errors, JSON). A success larger than this (by its
    /// `Content-Length`) is streamed through instead; one that turns out larger while read
    /// gets 502.
    pub max_response_body: usize,
    /// How long an attempt may wait for the upstream's answer to begin (its status and
    /// headers) before it counts as a timeout. A stream may then take as long as it takes.
    pub attempt_timeout: Duration,
    /// How long connecting to the upstream may take.
    pub connect_timeout: Duration,
    /// Also answer `GET /healthz` and `GET /metrics` (always under [`super::LOCAL_PREFIX`]).
    pub root_endpoints: bool,
    /// How long requests in flight may take to finish after the shutdown future resolves,
    /// before their connections are closed.
    pub shutdown_grace: Duration,
    /// Let identical requests in flight at the same moment share one upstream call and its
    /// answer (off by default). Identical means the same method, path, query, body and
    /// headers (credentials included); only `GET`, `HEAD` and JSON `POST`s that do not ask
    /// for a stream qualify (see the [module docs](super#coalescing)). Their answer is read
    /// whole: one larger than [`max_response_body`](Self::max_response_body) is a 502.
    pub coalesce: bool,
}

impl ProxyConfig {
    /// Defaults for the upstream at `url`: bodies of 8 MiB in and 32 MiB out, 10 minutes
    /// for an answer to begin (LLM answers are slow), 10 s to connect, the root endpoints
    /// on, 30 s to finish on shutdown, no coalescing.
    ///
    /// # Errors
    ///
    /// [`ProxyConfigError::Upstream`] when `url` is not a usable base URL, and
    /// [`ProxyConfigError::TlsNotBuilt`] for an `https://` URL without the `proxy-tls`
    /// feature.
    pub fn new(url: &str) -> Result<Self, ProxyConfigError> {
        let upstream = UpstreamUrl::parse(url)?;
        let config = Self {
            upstream,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            attempt_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            root_endpoints: true,
            shutdown_grace: Duration::from_secs(30),
            coalesce: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every field; the error names the first bad one.
    ///
    /// # Errors
    ///
    /// A [`ProxyConfigError`] naming the field and its value.
    pub fn validate(&self) -> Result<(), ProxyConfigError> {
        if self.upstream.is_https() && !cfg!(feature = "proxy-tls") {
            return Err(ProxyConfigError::TlsNotBuilt {
                url: self.upstream.to_string(),
            });
        }
        for (field, value) in [
            ("max_request_body", self.max_request_body),
            ("max_response_body", self.max_response_body),
        ] {
            if value == 0 {
                return Err(ProxyConfigError::Zero { field });
            }
        }
        for (field, value) in [
            ("attempt_timeout", self.attempt_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(ProxyConfigError::Zero { field });
            }
        }
        Ok(())
    }
}

/// A proxy configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyConfigError {
    /// The upstream URL.
    #[error("invalid upstream URL {url:?}: {reason}")]
    Upstream {
        /// The URL, credentials hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An https upstream in a build without TLS.
    #[error(
        "upstream {url} is https, but this build has no TLS (enable the proxy-tls feature of sluice-egress)"
    )]
    TlsNotBuilt {
        /// The URL.
        url: String,
    },
    /// A bound or timeout of zero.
    #[error("{field} must be more than zero")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// The TLS setup failed.
    #[error("cannot set up TLS for the upstream: {0}")]
    Tls(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(base: &str, tail: &str) -> String {
        let url = UpstreamUrl::parse(base).expect("a valid URL");
        let pq: PathAndQuery = tail.parse().expect("a path");
        url.join(Some(&pq)).expect("joins").to_string()
    }

    #[test]
    fn joins_the_prefix_and_the_request_path() {
        assert_eq!(
            join("http://127.0.0.1:8080", "/v1/chat/completions?x=1"),
            "http://127.0.0.1:8080/v1/chat/completions?x=1"
        );
        assert_eq!(
            join("http://h/v1/", "/chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert_eq!(join("http://h/v1", "/"), "http://h/v1/");
    }

    #[test]
    fn refuses_urls_that_cannot_be_a_base() {
        for (url, part) in [
            ("127.0.0.1:8080", "scheme"),
            ("ftp://h", "scheme"),
            ("http://user:secret@h", "credentials"),
            ("http://h/v1?x=1", "query"),
            ("not a url", "invalid"),
        ] {
            let error = UpstreamUrl::parse(url).unwrap_err().to_string();
            assert!(error.contains(part), "{url}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
