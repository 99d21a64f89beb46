//! The values of the admin commands' flags (`sluice status`, `reset`, `override`): the
//! server's URL, the admin token, descriptor entries, an override's limit, time-to-live
//! and reason.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::parse_duration;

/// The server's base URL (`--server`): `http://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// The host to connect to (an IPv6 address without its brackets).
    pub(crate) host: String,
    /// The port (80 when the URL names none).
    pub(crate) port: u16,
    /// `HOST[:PORT]` as written, for the `Host` header.
    pub(crate) authority: String,
    /// A path prefix without its trailing slash (empty for none), for a server behind a
    /// reverse proxy.
    pub(crate) prefix: String,
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

impl FromStr for ServerUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err("expected http://HOST[:PORT], e.g. http://127.0.0.1:8080".to_owned());
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(
                "https is not supported yet: give the server's http:// address \
                 (for a remote server, through an SSH tunnel or a TLS-terminating proxy)"
                    .to_owned(),
            );
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!(
                "unsupported scheme {scheme:?}: expected http://HOST[:PORT]"
            ));
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not supported: give the admin token with --token"
                    .to_owned(),
            );
        }
        if path.contains(['?', '#']) {
            return Err("a query or fragment is not supported: give http://HOST[:PORT]".to_owned());
        }
        if !path.chars().all(|c| c.is_ascii_graphic()) {
            return Err("the path may hold only visible ASCII characters".to_owned());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((host, after)) = bracketed.split_once(']') else {
                return Err("an IPv6 address needs its closing ']'".to_owned());
            };
            if !host
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(format!("{host:?} is not an IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("unexpected {after:?} after the IPv6 address")),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("the host is missing: expected http://HOST[:PORT]".to_owned());
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!("{host:?} is not a host name or address"));
        }
        let port = match port {
            None => 80,
            Some(port) => match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("{port:?} is not a port (1 to 65535)")),
                Ok(port) => port,
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// The admin token (`--token`). Its `Debug` form hides it, so it never reaches a log or a
/// message.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

impl FromStr for Token {
    type Err = std::convert::Infallible;

    /// Takes any text, without surrounding white space (a newline from
    /// `$(cat token-file)`): it is checked by [`Token::check`], whose error never repeats it
    /// (clap's own errors quote the value).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.trim().to_owned()))
    }
}

impl Token {
    /// The token, if it can go into a header line: visible ASCII only, so it cannot end the
    /// line. The error does not repeat it.
    pub(crate) fn check(&self) -> Result<&str, &'static str> {
        if self.0.is_empty() {
            return Err("the admin token is empty");
        }
        if !self.0.chars().all(|c| c.is_ascii_graphic()) {
            return Err("the admin token may hold only visible ASCII characters, without spaces");
        }
        Ok(&self.0)
    }
}

/// One descriptor entry (`--key NAME=VALUE`, or `--key NAME` for an empty value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The entry's key.
    pub(crate) key: String,
    /// The entry's value.
    pub(crate) value: String,
}

impl FromStr for Entry {
    type Err = String;

    /// Splits at the first `=`, so a value may itself hold `=`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        if key.is_empty() {
            return Err("the entry's name is empty: expected NAME=VALUE, e.g. user=42".to_owned());
        }
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// An override's limit (`--limit N/UNIT`): `requests_per_unit` per `unit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LimitSpec {
    /// Requests each unit allows, at least 1.
    pub(crate) requests_per_unit: u64,
    /// The unit's name as the admin API spells it: `second`, `minute`, `hour` or `day`.
    pub(crate) unit: &'static str,
}

impl LimitSpec {
    const UNITS: &'static str = "second, minute, hour or day (or s, min, h, d)";
}

impl FromStr for LimitSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((count, unit)) = text.trim().split_once('/') else {
            return Err(format!(
                "expected N/UNIT, e.g. 100/min, with UNIT one of {}",
                Self::UNITS
            ));
        };
        let requests_per_unit = match count.trim().parse::<u64>() {
            Ok(0) => {
                return Err("the count must be at least 1 (to refuse all, use --block)".to_owned());
            }
            Ok(n) => n,
            Err(_) => return Err(format!("{count:?} is not a whole number")),
        };
        let unit = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" | "seconds" => "second",
            "min" | "minute" | "minutes" => "minute",
            "h" | "hour" | "hours" => "hour",
            "d" | "day" | "days" => "day",
            _ => {
                return Err(format!("unknown unit {unit:?}: expected {}", Self::UNITS));
            }
        };
        Ok(Self {
            requests_per_unit,
            unit,
        })
    }
}

/// Longest override time-to-live the admin API takes: ten years.
const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

/// Longest override reason the admin API keeps, in bytes.
const MAX_REASON: usize = 512;

/// An override's time-to-live in whole seconds, at least one, in the core's duration
/// grammar.
pub(crate) fn parse_ttl(text: &str) -> Result<u64, String> {
    let ttl = parse_duration(text)?;
    if ttl < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    if ttl.subsec_nanos() != 0 {
        return Err("must be a whole number of seconds (e.g. 90s, 1m30s)".to_owned());
    }
    match ttl.as_secs() {
        secs if secs > MAX_TTL_S => Err(format!("must be at most ten years ({MAX_TTL_S}s)")),
        secs => Ok(secs),
    }
}

/// An override's reason, at most [`MAX_REASON`] bytes.
pub(crate) fn parse_reason(text: &str) -> Result<String, String> {
    if text.len() > MAX_REASON {
        return Err(format!("at most {MAX_REASON} bytes, got {}", text.len()));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_http_only() {
        let url: ServerUrl = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 8080));
        assert_eq!(url.to_string(), "http://127.0.0.1:8080");
        let url: ServerUrl = "HTTP://example.com/sluice/".parse().unwrap();
        assert_eq!((url.port, url.prefix.as_str()), (80, "/sluice"));
        let url: ServerUrl = "http://[::1]:9000".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9000));
        assert_eq!(url.authority, "[::1]:9000");
        for (bad, part) in [
            ("https://example.com", "https is not supported yet"),
            ("127.0.0.1:8080", "expected http://"),
            ("ftp://x", "unsupported scheme"),
            ("http://", "host is missing"),
            ("http://x:0", "not a port"),
            ("http://x:99999", "not a port"),
            ("http://user:pw@x", "--token"),
            ("http://x/a?b", "query"),
            ("http://x y", "not a host"),
        ] {
            let err = bad.parse::<ServerUrl>().unwrap_err();
            assert!(err.contains(part), "{bad}: {err}");
        }
    }

    #[test]
    fn tokens_are_trimmed_and_never_shown() {
        let token = |text: &str| text.parse::<Token>().unwrap();
        assert_eq!(token(" s3cret\n").check(), Ok("s3cret"));
        assert!(!format!("{:?}", token("s3cret")).contains("s3cret"));
        let err = token("sec ret").check().unwrap_err();
        assert!(!err.contains("sec"), "{err}");
        assert!(token("\u{7}x").check().is_err());
        assert!(token(" ").check().is_err());
    }

    #[test]
    fn entries_split_at_the_first_equals_sign() {
        let entry: Entry = "path=/a=b".parse().unwrap();
        assert_eq!((entry.key.as_str(), entry.value.as_str()), ("path", "/a=b"));
        let entry: Entry = "user".parse().unwrap();
        assert_eq!((entry.key.as_str(), entry.value.as_str()), ("user", ""));
        assert!("=42".parse::<Entry>().is_err());
    }

    #[test]
    fn limits_take_long_and_short_units() {
        for (text, n, unit) in [
            ("100/min", 100, "minute"),
            ("100/minute", 100, "minute"),
            ("5/s", 5, "second"),
            ("5/second", 5, "second"),
            ("1/h", 1, "hour"),
            ("2/Day", 2, "day"),
            ("3/d", 3, "day"),
        ] {
            assert_eq!(
                text.parse::<LimitSpec>(),
                Ok(LimitSpec {
                    requests_per_unit: n,
                    unit
                }),
                "{text}"
            );
        }
        for (bad, part) in [
            ("100", "expected N/UNIT"),
            ("x/min", "not a whole number"),
            ("0/min", "at least 1"),
            ("10/fortnight", "unknown unit \"fortnight\""),
            ("10/m", "unknown unit"),
        ] {
            let err = bad.parse::<LimitSpec>().unwrap_err();
            assert!(err.contains(part), "{bad}: {err}");
        }
    }

    #[test]
    fn ttls_are_whole_seconds_from_one_second() {
        assert_eq!(parse_ttl("1s"), Ok(1));
        assert_eq!(parse_ttl("1h30m"), Ok(5400));
        assert!(parse_ttl("0").unwrap_err().contains("at least 1s"));
        assert!(parse_ttl("500ms").unwrap_err().contains("at least 1s"));
        assert!(parse_ttl("1.5s").unwrap_err().contains("whole number"));
        assert!(parse_ttl("1x").is_err());
        assert!(parse_ttl("20000d").unwrap_err().contains("ten years"));
    }

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(parse_reason("paid plan"), Ok("paid plan".to_owned()));
        assert!(
            parse_reason(&"x".repeat(513))
                .unwrap_err()
                .contains("at most 512 bytes")
        );
    }
}
