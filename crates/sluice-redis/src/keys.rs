//! Redis key names and the policies a Redis store can hold.
//!
//! A limit's state lives at `<prefix>:{<tag>}:<algorithm><period>:<key>`: the algorithm's
//! letter, the period in nanoseconds in base 36, and the canonical key without the part the
//! tag already says (short names keep a GCRA key under 100 bytes of Redis memory). By
//! default the hash tag is the key's domain (the part before the first `|`), so every limit
//! of one request in one domain lands on one cluster slot and a multi-limit check stays one
//! function call, while different domains spread over the cluster. Canonical keys escape `{`
//! and `}`, so a client cannot move the tag.

use sluice_core::{AlgorithmKind, Key, Policy};

/// The longest span (period, or burst × emission interval) a Redis-held policy may have:
/// 2^52 ns, about 52 days. The script computes in Lua numbers, which are exact integers
/// only below 2^53.
pub const MAX_SPAN_NANOS: u64 = 1 << 52;

/// The one-letter code the script uses for an algorithm.
pub(crate) fn code(kind: AlgorithmKind) -> &'static str {
    match kind {
        AlgorithmKind::Gcra => "g",
        AlgorithmKind::FixedWindow => "f",
        AlgorithmKind::SlidingWindow => "s",
        AlgorithmKind::SlidingLog => "l",
        AlgorithmKind::Concurrency => "c",
    }
}

/// Which cluster slot a limit's state goes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HashTag {
    /// The key's domain: the limits of one request must share a domain (in a cluster; a
    /// single server takes any mix).
    #[default]
    Domain,
    /// One tag for every key of the store: any mix of limits in one request, at the price
    /// of one cluster node holding every limit.
    Constant(String),
}

impl HashTag {
    /// The tag of `key`.
    pub(crate) fn of<'a>(&'a self, key: &'a Key) -> &'a str {
        match self {
            Self::Domain => {
                let canonical = key.as_str();
                canonical.split('|').next().unwrap_or(canonical)
            }
            Self::Constant(tag) => tag,
        }
    }
}

/// The Redis key of `policy`'s state for `key`.
pub(crate) fn redis_key(prefix: &str, tag: &HashTag, key: &Key, policy: &Policy) -> String {
    let canonical = key.as_str();
    let tag_text = tag.of(key);
    // The tag already names the domain; the rest of the canonical key tells keys apart.
    let rest = match tag {
        HashTag::Domain => canonical.strip_prefix(tag_text).unwrap_or(canonical),
        HashTag::Constant(_) => canonical,
    };
    format!(
        "{prefix}:{{{tag_text}}}:{}{}:{rest}",
        code(policy.algorithm()),
        base36(policy.period_nanos())
    )
}

/// The Redis key of the line named `key`: under the same hash tag as the key's limits, so
/// that a line and the limits it guards live on one cluster slot.
pub(crate) fn line_key(prefix: &str, tag: &HashTag, key: &Key) -> String {
    let canonical = key.as_str();
    let tag_text = tag.of(key);
    let rest = match tag {
        HashTag::Domain => canonical.strip_prefix(tag_text).unwrap_or(canonical),
        HashTag::Constant(_) => canonical,
    };
    format!("{prefix}:{{{tag_text}}}:q:{rest}")
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[usize::try_from(n % 36).unwrap_or(0)]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Whether the script can compute `policy` exactly.
pub(crate) fn supported(policy: &Policy) -> Result<(), &'static str> {
    let capacity = u128::from(policy.burst()) * u128::from(policy.emission_nanos());
    if policy.period_nanos() >= MAX_SPAN_NANOS {
        Err("period is longer than the Redis store's 52 days")
    } else if capacity >= u128::from(MAX_SPAN_NANOS) {
        Err("burst × emission interval is longer than the Redis store's 52 days")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_domain_hash_tag() {
        let p = Policy::parse("gcra", "10/s").unwrap();
        let user = Key::new("api", [("user", "42")]).unwrap();
        let global = Key::new("api", [("scope", "all")]).unwrap();
        assert_eq!(
            redis_key("sl", &HashTag::Domain, &user, &p),
            "sl:{api}:ggjdgxs:|user=42"
        );
        assert!(redis_key("sl", &HashTag::Domain, &global, &p).starts_with("sl:{api}:"));
        let named = Key::named("global");
        assert_eq!(
            redis_key("sl", &HashTag::Domain, &named, &p),
            "sl:{global}:ggjdgxs:"
        );
        let constant = HashTag::Constant("all".into());
        assert_eq!(
            redis_key("sl", &constant, &user, &p),
            "sl:{all}:ggjdgxs:api|user=42"
        );
        let sneaky = Key::new("a}b{c", [("k", "v")]).unwrap();
        assert_eq!(
            redis_key("x", &HashTag::Domain, &sneaky, &p),
            "x:{a%7Db%7Bc}:ggjdgxs:|k=v"
        );
    }

    #[test]
    fn long_spans_are_refused() {
        assert!(supported(&Policy::parse("gcra", "10/d").unwrap()).is_ok());
        assert!(supported(&Policy::parse("fixed_window", "10/60d").unwrap()).is_err());
    }
}
