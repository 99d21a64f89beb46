//! The rate limit headers of one response, encoded without intermediate strings.
//!
//! The output is byte for byte what `sluice_http::write_headers` writes (a unit test
//! compares them), so every header parses back with sluice-http. What does not change from
//! one request to the next is built once per layer: each limit's name as an sf-string and
//! the whole `RateLimit-Policy` value, whose items (`q`, `w`) depend only on the policies.
//! Numbers are written into a stack buffer; a response then costs one allocation per
//! header value that changes (the `RateLimit` value, the legacy remaining and reset).

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use sluice_core::{Decision, Policy};
use sluice_http::{
    HeaderStyle, RATELIMIT, RATELIMIT_POLICY, SF_INTEGER_MAX, X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};

use crate::limits::LimitInfo;

/// What one limit's headers need, computed when the layer is built.
#[derive(Debug)]
struct LimitHeaders {
    /// `"<name>";r=` (the name as an sf-string), the start of its `RateLimit` item.
    limit_prefix: Box<[u8]>,
    /// `"<name>";q=`, the start of its `RateLimit-Policy` item.
    policy_prefix: Box<[u8]>,
    /// The policy's window in whole seconds (at least 1).
    window_secs: u64,
    /// The capacity its decisions report (`Decision::limit`): the policy's burst.
    capacity: u64,
    /// `capacity` as a header value, for `X-RateLimit-Limit`.
    legacy_limit: HeaderValue,
}

/// The headers of every response of one layer.
#[derive(Debug)]
pub(crate) struct Prebuilt {
    style: HeaderStyle,
    limits: Vec<LimitHeaders>,
    /// `RateLimit-Policy` for decisions that report their policies' capacities (always,
    /// with the stores of this workspace); built again per response otherwise.
    policy: Option<HeaderValue>,
}

impl Prebuilt {
    /// The headers of the limits `infos` (names already checked to be valid sf-strings).
    pub(crate) fn new(style: HeaderStyle, infos: &[LimitInfo]) -> Self {
        let limits: Vec<LimitHeaders> = infos
            .iter()
            .map(|info| {
                let mut quoted = Vec::with_capacity(info.name.len() + 5);
                quoted.push(b'"');
                for byte in info.name.bytes() {
                    if matches!(byte, b'"' | b'\\') {
                        quoted.push(b'\\');
                    }
                    quoted.push(byte);
                }
                quoted.push(b'"');
                let with = |param: &[u8]| -> Box<[u8]> { [&quoted[..], param].concat().into() };
                LimitHeaders {
                    limit_prefix: with(b";r="),
                    policy_prefix: with(b";q="),
                    window_secs: window_secs(&info.policy),
                    capacity: info.policy.burst(),
                    legacy_limit: HeaderValue::from(info.policy.burst()),
                }
            })
            .collect();
        let mut prebuilt = Self {
            style,
            limits,
            policy: None,
        };
        if !prebuilt.limits.is_empty() {
            let capacities: Vec<u64> = prebuilt.limits.iter().map(|l| l.capacity).collect();
            prebuilt.policy = prebuilt.policy_value(capacities.into_iter());
        }
        prebuilt
    }

    /// The headers for a request decided by `decisions` (one per limit, in order).
    ///
    /// As `sluice_http::write_headers`: IETF items per limit and the legacy values of the
    /// most restrictive decision ([`retry_after`](Self::retry_after) is apart). Nothing
    /// without limits.
    pub(crate) fn stamp(&self, decisions: &[Decision]) -> Stamp {
        if decisions.is_empty() || decisions.len() != self.limits.len() {
            return Stamp::Off;
        }
        let ietf = || {
            let same = decisions
                .iter()
                .zip(&self.limits)
                .all(|(d, l)| d.limit == l.capacity);
            let policy = match &self.policy {
                Some(prebuilt) if same => Some(prebuilt.clone()),
                _ => self.policy_value(decisions.iter().map(|d| d.limit)),
            };
            let mut limit = Buf::default();
            for (i, (decision, headers)) in decisions.iter().zip(&self.limits).enumerate() {
                if i > 0 {
                    limit.push(b", ");
                }
                limit.push(&headers.limit_prefix);
                limit.push_u64(decision.remaining.min(SF_INTEGER_MAX));
                limit.push(b";t=");
                limit.push_u64(ceil_secs(decision.reset_after).min(SF_INTEGER_MAX));
            }
            policy.zip(limit.value())
        };
        let legacy = || {
            let decision = decisions
                .iter()
                .copied()
                .reduce(|a, b| Decision::most_restrictive(&[a, b]).unwrap_or(a))?;
            let limit = self
                .limits
                .iter()
                .find(|l| l.capacity == decision.limit)
                .map_or_else(
                    || HeaderValue::from(decision.limit),
                    |l| l.legacy_limit.clone(),
                );
            Some([
                limit,
                HeaderValue::from(decision.remaining),
                HeaderValue::from(ceil_secs(decision.reset_after)),
            ])
        };
        match self.style {
            HeaderStyle::Off => Stamp::Off,
            HeaderStyle::Ietf => ietf().map_or(Stamp::Off, |(p, l)| Stamp::Ietf([p, l])),
            HeaderStyle::Legacy => legacy().map_or(Stamp::Off, Stamp::Legacy),
            HeaderStyle::Both => match (ietf(), legacy()) {
                (Some((p, l)), Some([a, b, c])) => Stamp::Both(Box::new([p, l, a, b, c])),
                (Some((p, l)), None) => Stamp::Ietf([p, l]),
                (None, Some(legacy)) => Stamp::Legacy(legacy),
                (None, None) => Stamp::Off,
            },
        }
    }

    /// `Retry-After` for a refusal: the longest wait of the refused decisions, in whole
    /// seconds rounded up; `None` when none can be retried.
    pub(crate) fn retry_after(decisions: &[Decision]) -> Option<HeaderValue> {
        decisions
            .iter()
            .filter(|d| !d.allowed)
            .filter_map(|d| d.retry_after)
            .max()
            .map(|wait| HeaderValue::from(ceil_secs(wait)))
    }

    /// The `RateLimit-Policy` value for these capacities (`q`), one per limit.
    fn policy_value(&self, capacities: impl Iterator<Item = u64>) -> Option<HeaderValue> {
        let mut out = Buf::default();
        for (i, (capacity, headers)) in capacities.zip(&self.limits).enumerate() {
            if i > 0 {
                out.push(b", ");
            }
            out.push(&headers.policy_prefix);
            out.push_u64(capacity.min(SF_INTEGER_MAX));
            out.push(b";w=");
            out.push_u64(headers.window_secs.min(SF_INTEGER_MAX));
        }
        out.value()
    }
}

/// The rate limit headers of one admitted response, ready to insert. Small, since it
/// travels in the response future: `Both` (the rare style) is boxed.
#[derive(Debug)]
pub(crate) enum Stamp {
    Off,
    /// `RateLimit-Policy` and `RateLimit`.
    Ietf([HeaderValue; 2]),
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
    Legacy([HeaderValue; 3]),
    /// The IETF pair, then the legacy three.
    Both(Box<[HeaderValue; 5]>),
}

impl Stamp {
    /// Inserts the headers into `headers`, replacing any of the same names.
    pub(crate) fn write(self, headers: &mut HeaderMap) {
        let insert_ietf = |headers: &mut HeaderMap, [policy, limit]: [HeaderValue; 2]| {
            headers.insert(RATELIMIT_POLICY, policy);
            headers.insert(RATELIMIT, limit);
        };
        let insert_legacy = |headers: &mut HeaderMap, [a, b, c]: [HeaderValue; 3]| {
            headers.insert(X_RATELIMIT_LIMIT, a);
            headers.insert(X_RATELIMIT_REMAINING, b);
            headers.insert(X_RATELIMIT_RESET, c);
        };
        match self {
            Self::Off => {}
            Self::Ietf(ietf) => insert_ietf(headers, ietf),
            Self::Legacy(legacy) => insert_legacy(headers, legacy),
            Self::Both(all) => {
                let [p, l, a, b, c] = *all;
                insert_ietf(headers, [p, l]);
                insert_legacy(headers, [a, b, c]);
            }
        }
    }
}

/// Whole seconds in `d`, rounded up (as sluice-http rounds).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A policy's `w`: its period in whole seconds, rounded up, at least 1.
fn window_secs(policy: &Policy) -> u64 {
    policy.period_nanos().div_ceil(1_000_000_000).max(1)
}

/// Bytes on the stack, moved to the heap only past `INLINE`.
struct Buf {
    inline: [u8; INLINE],
    len: usize,
    spilled: Option<Vec<u8>>,
}

const INLINE: usize = 128;

/// "00", "01", ... "99".
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

impl Default for Buf {
    fn default() -> Self {
        Self {
            inline: [0; INLINE],
            len: 0,
            spilled: None,
        }
    }
}

impl Buf {
    fn push(&mut self, bytes: &[u8]) {
        if let Some(spilled) = &mut self.spilled {
            spilled.extend_from_slice(bytes);
            return;
        }
        let end = self.len + bytes.len();
        if let Some(slot) = self.inline.get_mut(self.len..end) {
            slot.copy_from_slice(bytes);
            self.len = end;
        } else {
            let mut spilled = Vec::with_capacity(end * 2);
            spilled.extend_from_slice(&self.inline[..self.len]);
            spilled.extend_from_slice(bytes);
            self.spilled = Some(spilled);
        }
    }

    /// Writes `n` in decimal, two digits at a time.
    fn push_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        while n >= 100 {
            let pair = usize::try_from(n % 100).unwrap_or(0) * 2;
            n /= 100;
            start -= 2;
            digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        let last = usize::try_from(n).unwrap_or(0) * 2;
        if n >= 10 {
            start -= 2;
            digits[start..start + 2].copy_from_slice(&PAIRS[last..last + 2]);
        } else {
            start -= 1;
            digits[start] = PAIRS[last + 1];
        }
        self.push(&digits[start..]);
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.spilled {
            Some(spilled) => spilled,
            None => &self.inline[..self.len],
        }
    }

    /// The bytes as a header value (one allocation, of their exact length). `None` only if
    /// they hold a byte a header value cannot, which the names checked at configuration
    /// and the digits written here never are.
    fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_core::Policy;
    use sluice_http::write_headers;
    use sluice_store::FailurePolicy;

    use super::*;

    fn info(name: &str, policy: &str) -> LimitInfo {
        LimitInfo {
            name: Arc::from(name),
            policy: Policy::parse("gcra", policy).expect("valid policy"),
            on_failure: FailurePolicy::default(),
        }
    }

    fn decisions() -> Vec<Decision> {
        let big = u64::MAX / 3;
        vec![
            Decision::allow(100, 99, Duration::from_millis(600)),
            Decision::allow(100, 0, Duration::ZERO),
            Decision::allow(7, 3, Duration::from_secs(59)),
            Decision::deny(
                100,
                0,
                Duration::from_millis(29_001),
                Duration::from_millis(600),
            ),
            Decision::deny(5000, 12, Duration::from_secs(3), Duration::from_nanos(1)),
            Decision::exceeds_capacity(100, 100, Duration::ZERO),
            Decision::allow(big, big, Duration::from_secs(big)),
            Decision::deny(big, 0, Duration::from_secs(big), Duration::from_secs(big)),
            Decision::allow(100, 50, Duration::from_millis(1500)).into_degraded(),
        ]
    }

    /// Every style, one and two limits, capacities equal to the policy's or not: the same
    /// bytes as sluice-http's encoder.
    #[test]
    fn writes_what_sluice_http_writes() {
        let infos = [
            info("per-ip", "100/min"),
            info("glo\"bal\\ x", "5000/1500ms"),
        ];
        let all = decisions();
        for style in [
            HeaderStyle::Off,
            HeaderStyle::Ietf,
            HeaderStyle::Legacy,
            HeaderStyle::Both,
        ] {
            for n in [1, 2] {
                let prebuilt = Prebuilt::new(style, &infos[..n]);
                for first in &all {
                    for second in &all {
                        let picked = [*first, *second];
                        let picked = &picked[..n];
                        let items: Vec<(&str, &Policy, &Decision)> = infos
                            .iter()
                            .zip(picked)
                            .map(|(i, d)| (&*i.name, &i.policy, d))
                            .collect();
                        let mut expected = HeaderMap::new();
                        write_headers(&mut expected, style, &items).expect("valid names");
                        let mut actual = HeaderMap::new();
                        prebuilt.stamp(picked).write(&mut actual);
                        if let Some(retry_after) = Prebuilt::retry_after(picked) {
                            actual.insert(http::header::RETRY_AFTER, retry_after);
                        }
                        assert_eq!(actual, expected, "{style:?} {picked:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn long_values_spill_to_the_heap() {
        let names: Vec<String> = (0..8).map(|i| format!("limit-number-{i:02}")).collect();
        let infos: Vec<LimitInfo> = names.iter().map(|n| info(n, "10/s")).collect();
        let prebuilt = Prebuilt::new(HeaderStyle::Ietf, &infos);
        let picked = vec![Decision::allow(10, 9, Duration::from_millis(100)); 8];
        let items: Vec<(&str, &Policy, &Decision)> = infos
            .iter()
            .zip(&picked)
            .map(|(i, d)| (&*i.name, &i.policy, d))
            .collect();
        let mut expected = HeaderMap::new();
        write_headers(&mut expected, HeaderStyle::Ietf, &items).expect("valid names");
        let mut actual = HeaderMap::new();
        prebuilt.stamp(&picked).write(&mut actual);
        assert!(actual["ratelimit"].len() > INLINE);
        assert_eq!(actual, expected);
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12_345,
            u64::MAX / 7,
            u64::MAX,
        ] {
            let mut buf = Buf::default();
            buf.push_u64(n);
            assert_eq!(buf.as_bytes(), n.to_string().as_bytes());
        }
    }
}
