//! A client of Envoy's rate limit service v3 (`ShouldRateLimit`): `sluice serve --grpc`,
//! envoyproxy/ratelimit, or any other implementation.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use sluice_core::Key;
use sluice_http::RetryAfter;
use tonic::transport::{Channel, Endpoint};

use super::EndpointError;
use super::check::{Answer, Failure, Quota, RemoteBackend, Status, unit_secs};

/// Envoy's rate limit service as the layer's transport: one `ShouldRateLimit` call per
/// request over one HTTP/2 connection (a tonic [`Channel`], which multiplexes calls and
/// reconnects on its own).
///
/// The protocol has no `Retry-After`: a refusal's wait is the refused descriptor's
/// `duration_until_reset`, the time until the limit is whole again, which is never early
/// and may be later than needed (a GCRA limit admits one more request sooner). Nor does
/// it carry a rule's unit multiplier: `RateLimit-Policy`'s window is one unit.
#[derive(Clone, Debug)]
pub struct GrpcBackend {
    client: RateLimitServiceClient<Channel>,
}

impl GrpcBackend {
    /// A client of the service at `uri` (`http://host:port`), connecting on first use
    /// and again whenever the connection drops.
    ///
    /// # Panics
    /// Outside a tokio runtime: tonic's channel runs its connection on a task of the
    /// current runtime.
    ///
    /// # Errors
    /// [`EndpointError`] when `uri` is not an `http://` URI with a host (TLS is not built
    /// in; pass a channel configured for it to [`from_channel`](Self::from_channel)).
    pub fn connect_lazy(uri: &str) -> Result<Self, EndpointError> {
        let invalid = |reason: &str| EndpointError::new(uri, reason);
        let endpoint =
            Endpoint::from_shared(uri.to_owned()).map_err(|e| invalid(&e.to_string()))?;
        if endpoint.uri().scheme_str() != Some("http") || endpoint.uri().host().is_none() {
            return Err(invalid("expected http://host:port"));
        }
        Ok(Self::from_channel(
            endpoint.tcp_nodelay(true).connect_lazy(),
        ))
    }

    /// A client over a channel you configured (TLS, load balancing, a custom connector).
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            client: RateLimitServiceClient::new(channel),
        }
    }
}

// The answer types are private to this crate: the trait is sealed.
#[allow(private_interfaces)]
impl RemoteBackend for GrpcBackend {
    async fn check<'a>(
        &'a self,
        domain: &'a str,
        keys: &'a [Key],
        hits: u64,
    ) -> Result<Answer, Failure> {
        let request = request(domain, keys, hits);
        // A clone shares the channel: calls are multiplexed on its connection.
        let mut client = self.client.clone();
        let response = client
            .should_rate_limit(request)
            .await
            .map_err(|status| failure(status.code()))?;
        answer(response.into_inner())
    }
}

fn request(domain: &str, keys: &[Key], hits: u64) -> RateLimitRequest {
    // `hits_addend` is 32 bits; a larger cost goes on every descriptor as Envoy's own
    // 64-bit override (0 means 1 either way).
    let (request_hits, descriptor_hits) = match u32::try_from(hits) {
        Ok(small) => (small, None),
        Err(_) => (0, Some(UInt64Value { value: hits })),
    };
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: keys
            .iter()
            .map(|key| RateLimitDescriptor {
                entries: key
                    .entries()
                    .map(|(key, value)| Entry {
                        key: key.to_owned(),
                        value: value.to_owned(),
                    })
                    .collect(),
                hits_addend: descriptor_hits,
                ..RateLimitDescriptor::default()
            })
            .collect(),
        hits_addend: request_hits,
    }
}

/// What a failed call means: no connection, no answer in time, or an error answer.
fn failure(code: tonic::Code) -> Failure {
    match code {
        tonic::Code::Unavailable | tonic::Code::Cancelled => Failure::Unreachable,
        tonic::Code::DeadlineExceeded => Failure::TimedOut,
        _ => Failure::BadAnswer,
    }
}

fn answer(response: RateLimitResponse) -> Result<Answer, Failure> {
    let mut statuses = response
        .statuses
        .iter()
        .map(status)
        .collect::<Result<Vec<_>, _>>()?;
    // The protocol's only wait is each descriptor's reset, which for GCRA is when every
    // unit is back, not the next one. `sluice serve --ratelimit-headers` adds the real wait
    // as a `Retry-After` header for Envoy to pass on: take it when it is there.
    if let Some(wait) = retry_after_header(&response) {
        for status in statuses.iter_mut().filter(|s| s.over_limit) {
            status.retry_after = Some(status.reset_after.min(wait));
        }
    }
    Ok(Answer {
        over_limit: over_limit(response.overall_code)?,
        statuses,
    })
}

fn status(status: &DescriptorStatus) -> Result<Status, Failure> {
    let over_limit = over_limit(status.code)?;
    let reset_after = status.duration_until_reset.map_or(Duration::ZERO, |d| {
        // A negative duration (a confused server) is no wait.
        let secs = u64::try_from(d.seconds).unwrap_or(0);
        let nanos = u32::try_from(d.nanos).unwrap_or(0);
        Duration::new(secs, 0).saturating_add(Duration::from_nanos(u64::from(nanos)))
    });
    let quota = status.current_limit.as_ref().and_then(|limit| {
        let unit = Unit::try_from(limit.unit).ok()?;
        Some(Quota {
            units: u64::from(limit.requests_per_unit),
            window_secs: unit_secs(unit_name(unit)?)?,
        })
    });
    Ok(Status {
        over_limit,
        quota,
        remaining: u64::from(status.limit_remaining),
        reset_after,
        retry_after: over_limit.then_some(reset_after),
    })
}

/// The `Retry-After` (delay seconds) among the headers the server asks to add, if any.
fn retry_after_header(response: &RateLimitResponse) -> Option<Duration> {
    let header = response
        .response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case("retry-after"))?;
    match RetryAfter::parse(&header.value).ok()? {
        RetryAfter::Delay(wait) => Some(wait),
        // A date needs a clock to read; the descriptor's reset stands instead.
        RetryAfter::At { .. } => None,
    }
}

fn unit_name(unit: Unit) -> Option<&'static str> {
    Some(match unit {
        Unit::Second => "second",
        Unit::Minute => "minute",
        Unit::Hour => "hour",
        Unit::Day => "day",
        Unit::Week => "week",
        Unit::Month => "month",
        Unit::Year => "year",
        Unit::Unknown => return None,
    })
}

/// `OVER_LIMIT` or `OK`; `UNKNOWN` (or a code this client does not know) is not a
/// decision.
fn over_limit(code: i32) -> Result<bool, Failure> {
    match Code::try_from(code) {
        Ok(Code::Ok) => Ok(false),
        Ok(Code::OverLimit) => Ok(true),
        Ok(Code::Unknown) | Err(_) => Err(Failure::BadAnswer),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::HeaderValue;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::RateLimit;
    use envoy_types::pb::google::protobuf::Duration as PbDuration;

    use super::*;

    #[test]
    fn descriptors_are_the_keys_entries() {
        let keys = [
            Key::new("per-ip", [("ip", "192.0.2.7")]).expect("valid"),
            Key::new("per-key", [("x-api-key", "a|b")]).expect("valid"),
        ];
        let small = request("api", &keys, 3);
        assert_eq!(small.domain, "api");
        assert_eq!(small.hits_addend, 3);
        let entries: Vec<Vec<(&str, &str)>> = small
            .descriptors
            .iter()
            .map(|d| {
                assert_eq!(d.hits_addend, None);
                d.entries
                    .iter()
                    .map(|e| (e.key.as_str(), e.value.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(
            entries,
            [vec![("ip", "192.0.2.7")], vec![("x-api-key", "a%7Cb")]]
        );
        let big = request("api", &keys, 1 << 40);
        assert_eq!(big.hits_addend, 0);
        assert_eq!(
            big.descriptors[0].hits_addend,
            Some(UInt64Value { value: 1 << 40 })
        );
    }

    #[test]
    fn refusals_wait_until_the_reset() {
        let response = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![
                DescriptorStatus {
                    code: Code::OverLimit as i32,
                    current_limit: Some(RateLimit {
                        name: String::new(),
                        requests_per_unit: 5,
                        unit: Unit::Minute as i32,
                    }),
                    limit_remaining: 0,
                    duration_until_reset: Some(PbDuration {
                        seconds: 59,
                        nanos: 500_000_000,
                    }),
                    quota: None,
                },
                DescriptorStatus {
                    code: Code::Ok as i32,
                    ..DescriptorStatus::default()
                },
            ],
            ..RateLimitResponse::default()
        };
        let answer = answer(response).expect("a decision");
        assert!(answer.over_limit);
        let wait = Duration::from_millis(59_500);
        assert_eq!(
            answer.statuses[0],
            Status {
                over_limit: true,
                quota: Some(Quota {
                    units: 5,
                    window_secs: 60
                }),
                remaining: 0,
                reset_after: wait,
                retry_after: Some(wait),
            }
        );
        assert_eq!(answer.statuses[1].quota, None);
    }

    #[test]
    fn a_retry_after_header_is_the_wait_of_refusals() {
        let refused = |seconds| DescriptorStatus {
            code: Code::OverLimit as i32,
            duration_until_reset: Some(PbDuration { seconds, nanos: 0 }),
            ..DescriptorStatus::default()
        };
        let header = |value: &str| HeaderValue {
            key: "Retry-After".to_owned(),
            value: value.to_owned(),
            ..HeaderValue::default()
        };
        let response = |headers| RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![
                refused(60),
                refused(5),
                DescriptorStatus {
                    code: Code::Ok as i32,
                    ..DescriptorStatus::default()
                },
            ],
            response_headers_to_add: headers,
            ..RateLimitResponse::default()
        };
        let waits = |answer: Answer| -> Vec<Option<u64>> {
            answer
                .statuses
                .iter()
                .map(|s| s.retry_after.map(|d| d.as_secs()))
                .collect()
        };
        // The header's wait, never past a descriptor's own reset.
        let with = answer(response(vec![header("20")])).expect("a decision");
        assert_eq!(waits(with), [Some(20), Some(5), None]);
        // Without it (or with a date), each refusal waits for its reset.
        let without = answer(response(Vec::new())).expect("a decision");
        assert_eq!(waits(without), [Some(60), Some(5), None]);
        let dated =
            answer(response(vec![header("Sun, 06 Nov 1994 08:49:37 GMT")])).expect("a decision");
        assert_eq!(waits(dated), [Some(60), Some(5), None]);
    }

    #[test]
    fn unknown_is_not_a_decision() {
        let response = RateLimitResponse {
            overall_code: Code::Unknown as i32,
            ..RateLimitResponse::default()
        };
        assert_eq!(answer(response), Err(Failure::BadAnswer));
        assert_eq!(failure(tonic::Code::Unavailable), Failure::Unreachable);
        assert_eq!(failure(tonic::Code::Internal), Failure::BadAnswer);
    }
}
