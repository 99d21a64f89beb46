//! Trusted proxies: which peers may tell us who the client is.

use std::net::IpAddr;
use std::str::FromStr;

/// Why a trusted proxy entry could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("trusted proxy {input:?}: {address:?} is not an IP address")]
    InvalidAddress {
        /// The whole entry.
        input: String,
        /// The address part.
        address: String,
    },
    /// The prefix length is not a number, or is longer than the address (32 or 128).
    #[error("trusted proxy {input:?}: prefix {prefix:?} is not a length from 0 to {max}")]
    InvalidPrefix {
        /// The whole entry.
        input: String,
        /// The prefix part.
        prefix: String,
        /// The longest prefix for that address family.
        max: u8,
    },
}

/// One network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`) or one exact address
/// (`192.0.2.7`, which is `/32` or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// is compared as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ProxyError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        let (address, prefix) = match trimmed.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (trimmed, None),
        };
        let network = address
            .parse::<IpAddr>()
            .map_err(|_| ProxyError::InvalidAddress {
                input: input.to_owned(),
                address: address.to_owned(),
            })
            .map(canonical)?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| {
                ProxyError::InvalidPrefix {
                    input: input.to_owned(),
                    prefix: p.to_owned(),
                    max,
                }
            })?,
        };
        Ok(Self { network, prefix })
    }
}

/// The proxies whose forwarding headers are believed.
///
/// Empty by default: then no forwarding header is ever believed and the client is the
/// socket peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<Cidr>,
}

impl TrustedProxies {
    /// No trusted proxy.
    pub fn none() -> Self {
        Self::default()
    }

    /// The proxies in `entries` (each a CIDR or an exact address).
    ///
    /// # Errors
    /// The first entry that does not parse, as a [`ProxyError`] naming it.
    pub fn parse<I, T>(entries: I) -> Result<Self, ProxyError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let networks = entries
            .into_iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(Self { networks })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The client address given the socket `peer` and the forwarding chain `hops` (in
    /// header order, leftmost = farthest from us; `None` for an entry that is not an IP
    /// address).
    ///
    /// When `peer` is not trusted, it is the client, whatever the headers say. Otherwise
    /// the chain is read from the right, skipping trusted hops: the first untrusted address
    /// is the client. An unreadable entry stops the walk at the last address known good;
    /// a chain of only trusted hops gives its leftmost one.
    pub fn resolve(&self, peer: IpAddr, hops: &[Option<IpAddr>]) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(*ip);
                    if !self.contains(client) {
                        return client;
                    }
                }
                None => return client,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so a dual-stack listener keys `::ffff:1.2.3.4`
/// and `1.2.3.4` alike.
#[inline]
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port or in brackets.
pub(crate) fn parse_xff_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239): `192.0.2.60`,
/// `"[2001:db8::1]:4711"`, `"192.0.2.60:80"`. `unknown` and obfuscated identifiers give
/// `None`; an element with no `for=` gives `None` too.
pub(crate) fn parse_forwarded_for(element: &str) -> Option<IpAddr> {
    for pair in element.split(';') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        let value = value.trim().trim_matches('"');
        if let Some(rest) = value.strip_prefix('[') {
            let inner = rest.split(']').next()?;
            return inner.parse().ok();
        }
        return parse_xff_hop(value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn cidr_contains() {
        let net: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(net.contains(ip("10.200.1.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        let one: Cidr = "192.0.2.7".parse().expect("ip");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains(ip("2001:db8:1::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
    }

    #[test]
    fn cidr_errors_name_the_part() {
        assert_eq!(
            "10.0.0/8".parse::<Cidr>(),
            Err(ProxyError::InvalidAddress {
                input: "10.0.0/8".into(),
                address: "10.0.0".into()
            })
        );
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(ProxyError::InvalidPrefix { max: 32, .. })
        ));
    }

    #[test]
    fn resolve_reads_from_the_right() {
        let trusted = TrustedProxies::parse(["10.0.0.0/8"]).expect("valid");
        let hops = [
            Some(ip("6.6.6.6")),
            Some(ip("1.2.3.4")),
            Some(ip("10.0.0.5")),
        ];
        assert_eq!(trusted.resolve(ip("10.0.0.1"), &hops), ip("1.2.3.4"));
        assert_eq!(trusted.resolve(ip("9.9.9.9"), &hops), ip("9.9.9.9"));
        let garbage = [Some(ip("1.2.3.4")), None, Some(ip("10.0.0.5"))];
        assert_eq!(trusted.resolve(ip("10.0.0.1"), &garbage), ip("10.0.0.5"));
        assert_eq!(trusted.resolve(ip("10.0.0.1"), &[]), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_elements() {
        assert_eq!(
            parse_forwarded_for("for=192.0.2.60;proto=http"),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            parse_forwarded_for("For=\"[2001:db8:cafe::17]:4711\""),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(parse_forwarded_for("for=unknown"), None);
        assert_eq!(parse_forwarded_for("proto=https"), None);
        assert_eq!(parse_xff_hop(" 1.2.3.4:80 "), Some(ip("1.2.3.4")));
    }
}
