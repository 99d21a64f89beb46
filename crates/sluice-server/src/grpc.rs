//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`) on the
//! published generated types, plus the standard gRPC health service.
//!
//! Not supported yet: per-descriptor `limit` overrides (ignored, the configured rule
//! applies) and `is_negative_hits` (answered `INVALID_ARGUMENT`).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code as PbCode, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use sluice_http::{
    LimitItem, PolicyItem, encode_limit_header, encode_policy_header, encode_retry_after,
};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::backend::Backend;
use crate::config::Unit;
use crate::limiter::{Code, LimitError, Limiter, Status};
use crate::request::{CheckRequest, Descriptor, EntryRequest};

/// The RLS service over a limiter.
#[derive(Debug)]
pub(crate) struct RlsService<B> {
    limiter: Arc<Limiter<B>>,
    ratelimit_headers: bool,
}

impl<B: Backend> RlsService<B> {
    /// The service; with `ratelimit_headers`, each response asks Envoy to add the IETF
    /// `RateLimit-Policy` and `RateLimit` headers to the client's response.
    pub(crate) fn new(limiter: Arc<Limiter<B>>, ratelimit_headers: bool) -> Self {
        Self {
            limiter,
            ratelimit_headers,
        }
    }

    /// As a tonic service.
    pub(crate) fn into_server(self) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl<B: Backend> RateLimitService for RlsService<B> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, GrpcStatus> {
        let request = from_proto(request.into_inner())?;
        let outcome = self.limiter.check(request).await.map_err(|err| match err {
            LimitError::Invalid(invalid) => GrpcStatus::invalid_argument(invalid.to_string()),
            other => GrpcStatus::unavailable(other.to_string()),
        })?;
        let response_headers_to_add = if self.ratelimit_headers {
            ratelimit_headers(&outcome.statuses)
        } else {
            Vec::new()
        };
        Ok(Response::new(RateLimitResponse {
            overall_code: code(outcome.code) as i32,
            statuses: outcome.statuses.iter().map(descriptor_status).collect(),
            response_headers_to_add,
            ..RateLimitResponse::default()
        }))
    }
}

fn from_proto(request: RateLimitRequest) -> Result<CheckRequest, GrpcStatus> {
    let descriptors = request
        .descriptors
        .into_iter()
        .map(descriptor)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CheckRequest {
        domain: request.domain.into(),
        descriptors,
        hits: Some(u64::from(request.hits_addend)),
    })
}

fn descriptor(descriptor: RateLimitDescriptor) -> Result<Descriptor, GrpcStatus> {
    if descriptor.is_negative_hits {
        return Err(GrpcStatus::invalid_argument(
            "descriptors[].is_negative_hits is not supported",
        ));
    }
    Ok(Descriptor {
        entries: descriptor
            .entries
            .into_iter()
            .map(|e| EntryRequest {
                key: e.key.into(),
                value: e.value.into(),
            })
            .collect(),
        hits: descriptor.hits_addend.map(|v| v.value),
    })
}

fn code(code: Code) -> PbCode {
    match code {
        Code::Ok => PbCode::Ok,
        Code::OverLimit => PbCode::OverLimit,
    }
}

fn descriptor_status(status: &Status) -> DescriptorStatus {
    let current_limit = status
        .rule
        .as_deref()
        .filter(|r| !r.is_unlimited())
        .map(|rule| RateLimit {
            name: rule.name.clone().unwrap_or_default(),
            requests_per_unit: saturate(rule.requests_per_unit),
            unit: pb_unit(rule.unit) as i32,
        });
    let decision = status.decision;
    DescriptorStatus {
        code: code(status.code) as i32,
        current_limit,
        limit_remaining: decision.map_or(0, |d| saturate(d.remaining)),
        duration_until_reset: decision.map(|d| PbDuration {
            seconds: i64::try_from(d.reset_after.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.reset_after.subsec_nanos()).unwrap_or(0),
        }),
        quota: None,
    }
}

fn pb_unit(unit: Unit) -> PbUnit {
    match unit {
        Unit::Second => PbUnit::Second,
        Unit::Minute => PbUnit::Minute,
        Unit::Hour => PbUnit::Hour,
        Unit::Day => PbUnit::Day,
        Unit::Week => PbUnit::Week,
        Unit::Month => PbUnit::Month,
        Unit::Year => PbUnit::Year,
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `RateLimit-Policy` and `RateLimit` for every descriptor a limit decided, named after the
/// rule (its `name`, else its id), and on a refusal `Retry-After`: the longest wait of the
/// refused descriptors in whole seconds, rounded up (the protocol itself carries only each
/// descriptor's reset, which can be much later than the next free unit).
fn ratelimit_headers(statuses: &[Status]) -> Vec<HeaderValue> {
    let mut policies = Vec::new();
    let mut limits = Vec::new();
    let retry_after = statuses
        .iter()
        .filter(|status| status.code == Code::OverLimit)
        .filter_map(|status| status.decision?.retry_after)
        .max();
    for status in statuses {
        let (Some(rule), Some(decision)) = (status.rule.as_deref(), status.decision) else {
            continue;
        };
        let Some(policy) = rule.policy.as_ref() else {
            continue;
        };
        let name = rule.name.clone().unwrap_or_else(|| rule.id.clone());
        policies.push(PolicyItem::new(name.clone(), policy, &decision));
        limits.push(LimitItem::new(name, &decision));
    }
    let mut headers = Vec::new();
    for (key, value) in [
        ("RateLimit-Policy", encode_policy_header(&policies)),
        ("RateLimit", encode_limit_header(&limits)),
    ] {
        match value {
            Ok(value) if !value.is_empty() => headers.push(HeaderValue {
                key: key.to_owned(),
                value,
                ..HeaderValue::default()
            }),
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "no {key} header"),
        }
    }
    if let Some(wait) = retry_after {
        headers.push(HeaderValue {
            key: "Retry-After".to_owned(),
            value: encode_retry_after(wait),
            ..HeaderValue::default()
        });
    }
    headers
}
