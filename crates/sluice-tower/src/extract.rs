//! Key extractors: who a request is counted against.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderName, Request};
use sluice_core::{Key, KeyError};

use crate::cache::{IpKeys, RouteKeys};
use crate::proxy::{TrustedProxies, parse_forwarded_for, parse_xff_hop};

/// Why no key could be taken from a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRejection {
    /// The request does not carry what the extractor reads.
    #[error("the request has no {what}")]
    Missing {
        /// What was looked for (e.g. `header x-api-key`).
        what: String,
    },
    /// What the extractor read could not make a key.
    #[error("invalid key: {0}")]
    Invalid(#[from] KeyError),
}

/// Takes the key of one limit from a request.
///
/// `domain` is the limit's name: every extractor builds its [`Key`] in that domain, so
/// two limits with the same extractor never share a state.
pub trait KeyExtractor<B>: Clone + Send + Sync + 'static {
    /// The key of `req` in `domain`.
    ///
    /// # Errors
    /// [`KeyRejection`] when the request carries no key; the layer then applies the
    /// limit's [`OnMissingKey`](crate::OnMissingKey).
    fn extract(&self, domain: &str, req: &Request<B>) -> Result<Key, KeyRejection>;

    /// Whether every request gets the same key ([`Constant`]): the layer then builds it
    /// once and reuses it. `false` unless overridden.
    fn is_constant(&self) -> bool {
        false
    }
}

/// Which forwarding header a trusted proxy sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The client's IP address, safe by default.
///
/// The socket peer is read from the request extensions: axum's
/// `ConnectInfo<SocketAddr>` (feature `axum`, served with
/// `into_make_service_with_connect_info::<SocketAddr>()`), or else a plain
/// [`SocketAddr`] or [`IpAddr`] extension, which a hyper server loop inserts itself.
///
/// Forwarding headers are believed only when the peer is one of the
/// [`TrustedProxies`]; the chain is then read from the right, skipping trusted hops, and
/// the first untrusted address is the client. A client that sends its own
/// `X-Forwarded-For` straight to the service therefore keeps its own key.
///
/// The key is `<domain>|ip=<address>`, IPv4-mapped IPv6 addresses written as IPv4.
///
/// Each `PeerIp` keeps the keys of its recent clients (256 of them at most, about
/// 12 KiB), so a returning client's key is not built again; a clone starts with an empty
/// cache.
#[derive(Clone, Debug, Default)]
pub struct PeerIp {
    trusted: TrustedProxies,
    header: ForwardedHeader,
    keys: IpKeys,
}

impl PeerIp {
    /// The socket peer; no forwarding header is believed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Believes `header` when the peer is in `trusted`.
    #[must_use]
    pub fn behind(trusted: TrustedProxies, header: ForwardedHeader) -> Self {
        Self {
            trusted,
            header,
            keys: IpKeys::default(),
        }
    }

    /// The client address of `req`, or `None` when its peer address is unknown.
    pub fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = peer_addr(req)?;
        if self.trusted.is_empty() || !self.trusted.contains(peer) {
            return Some(crate::proxy::canonical(peer));
        }
        let mut hops: Vec<Option<IpAddr>> = Vec::new();
        match self.header {
            ForwardedHeader::XForwardedFor => {
                for value in req.headers().get_all("x-forwarded-for") {
                    match value.to_str() {
                        Ok(text) => hops.extend(text.split(',').map(parse_xff_hop)),
                        Err(_) => hops.push(None),
                    }
                }
            }
            ForwardedHeader::Forwarded => {
                for value in req.headers().get_all(http::header::FORWARDED) {
                    match value.to_str() {
                        Ok(text) => hops.extend(text.split(',').map(parse_forwarded_for)),
                        Err(_) => hops.push(None),
                    }
                }
            }
        }
        Some(self.trusted.resolve(peer, &hops))
    }
}

fn peer_addr<B>(req: &Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    #[cfg(feature = "axum")]
    if let Some(info) = ext.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    ext.get::<SocketAddr>()
        .map(SocketAddr::ip)
        .or_else(|| ext.get::<IpAddr>().copied())
}

impl<B> KeyExtractor<B> for PeerIp {
    fn extract(&self, domain: &str, req: &Request<B>) -> Result<Key, KeyRejection> {
        let ip = self.client_ip(req).ok_or_else(|| KeyRejection::Missing {
            what: "peer address".to_owned(),
        })?;
        Ok(self.keys.get(domain, ip, || {
            let mut text = IpText::default();
            Key::new(domain, [("ip", text.format(ip))])
        })?)
    }
}

/// An IP address's text (as `Display` writes it) in a stack buffer: the key of a request
/// costs no allocation for the address.
struct IpText {
    buf: [u8; 48],
    len: usize,
    /// The text when it did not fit (never for an IP address, but `Display` is not ours).
    spilled: String,
}

impl Default for IpText {
    fn default() -> Self {
        Self {
            buf: [0; 48],
            len: 0,
            spilled: String::new(),
        }
    }
}

impl IpText {
    fn format(&mut self, ip: IpAddr) -> &str {
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.byte(b'.');
                    }
                    if octet >= 100 {
                        self.byte(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        self.byte(b'0' + octet / 10 % 10);
                    }
                    self.byte(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::fmt::Write as _;
                if write!(self, "{v6}").is_err() {
                    self.spilled = v6.to_string();
                    return &self.spilled;
                }
            }
        }
        // Only ASCII digits, hex digits, '.' and ':' were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    /// Appends `byte` (at most 15 for an IPv4 address: always room).
    fn byte(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn push(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                self.len = end;
                true
            }
            None => false,
        }
    }
}

impl fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.push(s.as_bytes()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// The value of one request header (an API key, a tenant id). Several lines are joined
/// with `,`. An absent or empty header is [`KeyRejection::Missing`]. Values longer than
/// a key component are hashed by [`Key`], so a client cannot grow the key.
#[derive(Clone, Debug)]
pub struct Header(pub HeaderName);

impl<B> KeyExtractor<B> for Header {
    fn extract(&self, domain: &str, req: &Request<B>) -> Result<Key, KeyRejection> {
        let all = req.headers().get_all(&self.0);
        let mut lines = all.iter();
        let value: Cow<'_, str> = match (lines.next(), lines.next()) {
            (None, _) => Cow::Borrowed(""),
            // One line (the common case) is read in place.
            (Some(line), None) => String::from_utf8_lossy(line.as_bytes()),
            (Some(_), Some(_)) => {
                let mut joined = String::new();
                for (i, line) in all.iter().enumerate() {
                    if i > 0 {
                        joined.push(',');
                    }
                    joined.push_str(&String::from_utf8_lossy(line.as_bytes()));
                }
                Cow::Owned(joined)
            }
        };
        if value.trim().is_empty() {
            return Err(KeyRejection::Missing {
                what: format!("header {}", self.0),
            });
        }
        Ok(Key::new(domain, [(self.0.as_str(), value)])?)
    }
}

/// The same key for every request: a global limit. The name tells several constants
/// of one limit apart (usually one is enough: `Constant::new("all")`).
#[derive(Clone, Debug)]
pub struct Constant(pub String);

impl Constant {
    /// The constant named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
}

impl<B> KeyExtractor<B> for Constant {
    fn extract(&self, domain: &str, _req: &Request<B>) -> Result<Key, KeyRejection> {
        Ok(Key::new(domain, [("const", self.0.as_str())])?)
    }

    fn is_constant(&self) -> bool {
        true
    }
}

/// Method and route: `GET /users/{id}` counts every user id together. The route is
/// axum's `MatchedPath` when present (feature `axum`), else the URI path (without the
/// query). Without a router that records the matched route, every distinct path is its
/// own key.
///
/// Each `MethodAndPath` keeps the keys of its recent routes (64 of them at most; a path
/// longer than 256 bytes is never kept), so a busy route's key is not built again; a
/// clone starts with an empty cache.
///
/// ```
/// use sluice_tower::MethodAndPath;
///
/// let per_route = MethodAndPath::new();
/// # let _ = per_route;
/// ```
#[derive(Clone, Debug, Default)]
pub struct MethodAndPath {
    keys: RouteKeys,
}

impl MethodAndPath {
    /// Method and route, with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<B> KeyExtractor<B> for MethodAndPath {
    fn extract(&self, domain: &str, req: &Request<B>) -> Result<Key, KeyRejection> {
        let method = req.method();
        #[cfg(feature = "axum")]
        if let Some(path) = req.extensions().get::<axum::extract::MatchedPath>() {
            return Ok(self.keys.get(domain, method, "route", path.as_str(), || {
                Key::new(
                    domain,
                    [("method", method.as_str()), ("route", path.as_str())],
                )
            })?);
        }
        let path = req.uri().path();
        Ok(self.keys.get(domain, method, "path", path, || {
            Key::new(domain, [("method", method.as_str()), ("path", path)])
        })?)
    }
}

/// A closure returning the key's value (an authenticated user id from the request
/// extensions, a tenant from the host), or `None` when the request has none. The key is
/// `<domain>|id=<value>`.
#[derive(Clone)]
pub struct FromFn<F>(pub F);

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromFn(..)")
    }
}

/// A [`FromFn`] extractor from `f`.
pub fn from_fn<F>(f: F) -> FromFn<F> {
    FromFn(f)
}

impl<B, F, T> KeyExtractor<B> for FromFn<F>
where
    F: Fn(&Request<B>) -> Option<T> + Clone + Send + Sync + 'static,
    T: AsRef<str>,
{
    fn extract(&self, domain: &str, req: &Request<B>) -> Result<Key, KeyRejection> {
        let value = (self.0)(req).ok_or_else(|| KeyRejection::Missing {
            what: "key (closure returned none)".to_owned(),
        })?;
        Ok(Key::new(domain, [("id", value)])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_what_display_writes() {
        let ips = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "192.0.2.7",
            "1.20.199.250",
            "::",
            "::1",
            "2001:db8::1",
            "2001:db8:0:1:1:1:1:1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:1.2.3.4",
            "fe80::1%1",
        ];
        for text in ips {
            // `fe80::1%1` has a zone, which `IpAddr` does not: skip what does not parse.
            let Ok(ip) = text.parse::<IpAddr>() else {
                continue;
            };
            let mut buf = IpText::default();
            assert_eq!(buf.format(ip), ip.to_string());
        }
        for n in (0..=u32::MAX).step_by(16_777_259) {
            let ip = IpAddr::from(n.to_be_bytes());
            let mut buf = IpText::default();
            assert_eq!(buf.format(ip), ip.to_string());
        }
    }
}
