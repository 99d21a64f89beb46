//! The remote layer's configuration, shared by every service it wraps.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use sluice_http::{HeaderStyle, PolicyItem, encode_policy_header};
use tower_layer::Layer;

use super::check::{RemoteBackend, UNUSED_POLICY};
use super::service::{RemoteRateLimit, Shared};
use super::stats::{Counters, RemoteStats};
use crate::layer::ConfigError;
use crate::limits::{CostFn, LimitSpec, OnMissingKey, UnitCost};

/// What the layer does when the server gives no decision: it cannot be reached, does not
/// answer within the [timeout](RemoteRateLimitLayer::timeout), or answers something that
/// is not a decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnFailure {
    /// Let the request through, without rate limit headers: availability over accuracy.
    /// The default, as Envoy's rate limit filter does (`failure_mode_deny: false`).
    #[default]
    Open,
    /// Answer `503 Service Unavailable` with a problem body
    /// ([`UNAVAILABLE_PROBLEM_TYPE`](crate::UNAVAILABLE_PROBLEM_TYPE)), for services that
    /// must never run over their limits.
    Closed,
}

/// One limit of a [`RemoteRateLimitLayer`]: a name (its headers and problem bodies use
/// it) and a key extractor, whose key becomes one descriptor of the check.
///
/// The server owns the rule: which descriptor is limited, how much, and by what
/// algorithm. The descriptor's entries are the key's after its domain
/// ([`Key::entries`](sluice_core::Key::entries)): `ip=<address>` for [`PeerIp`](crate::PeerIp),
/// `<header name>=<value>` for [`Header`](crate::Header), `const=<name>` for
/// [`Constant`](crate::Constant), `method=..`, `route=..` (or `path=..`) for
/// [`MethodAndPath`](crate::MethodAndPath), `id=<value>` for [`from_fn`](crate::from_fn),
/// and `fallback=<name>` for a keyless request under [`OnMissingKey::Fallback`]. Values
/// arrive as keys hold them: escaped (`%`, `|`, `=`, `{`, `}` and control characters
/// percent-encoded) and bounded (a value longer than 64 bytes is `#` and 32 hex digits of
/// its SHA-256).
#[derive(Clone, Debug)]
pub struct RemoteLimit<E> {
    /// A local limit spec, so that keys are resolved exactly as the local layer resolves
    /// them; its policy is never read.
    spec: LimitSpec<E>,
}

impl<E> RemoteLimit<E> {
    /// The limit `name` on the keys `extractor` takes.
    pub fn new(name: impl Into<Arc<str>>, extractor: E) -> Self {
        Self {
            spec: LimitSpec::new(name, *UNUSED_POLICY, extractor),
        }
    }

    /// The same limit with another outcome for keyless requests (`400` by default).
    #[must_use]
    pub fn on_missing_key(self, on_missing: OnMissingKey) -> Self {
        Self {
            spec: self.spec.on_missing_key(on_missing),
        }
    }

    /// The same limit answering its `401` ([`OnMissingKey::Unauthorized`]) with
    /// `WWW-Authenticate: <challenge>` (default `Bearer`).
    #[must_use]
    pub fn www_authenticate(self, challenge: HeaderValue) -> Self {
        Self {
            spec: self.spec.www_authenticate(challenge),
        }
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        self.spec.name()
    }
}

/// The layer [`RemoteRateLimitLayer::limit`] returns: `L` and one more limit.
pub type WithRemoteLimit<B, L, E, C> = RemoteRateLimitLayer<B, (L, LimitSpec<E>), C>;

/// A tower [`Layer`] that asks a remote sluice server (or any Envoy rate limit service)
/// whether each request may pass, and acts on its answer.
///
/// `B` is the transport (`HttpBackend` or `GrpcBackend`, see [`RemoteBackend`]), `L` the
/// limits (built by
/// [`limit`](Self::limit)), `C` the request cost. Cheap to clone; clones share the
/// transport's connections and the [counters](Self::stats).
pub struct RemoteRateLimitLayer<B, L = (), C = UnitCost> {
    backend: Arc<B>,
    domain: Arc<str>,
    limits: L,
    names: Vec<Arc<str>>,
    cost: C,
    timeout: Duration,
    on_failure: OnFailure,
    style: HeaderStyle,
    counters: Arc<Counters>,
}

/// How long the layer waits for the server unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

impl<B: RemoteBackend> RemoteRateLimitLayer<B> {
    /// A layer asking `backend` about descriptors of `domain` (the server's configuration
    /// domain), with no limits yet, a cost of 1, a [timeout](Self::timeout) of 100 ms,
    /// [`OnFailure::Open`] and IETF headers.
    ///
    /// The domain must not be empty: [`limit`](RemoteRateLimitLayer::limit) refuses to add a
    /// limit to a layer without one, as the server would refuse every check.
    pub fn new(backend: B, domain: impl Into<Arc<str>>) -> Self {
        Self {
            backend: Arc::new(backend),
            domain: domain.into(),
            limits: (),
            names: Vec::new(),
            cost: UnitCost,
            timeout: DEFAULT_TIMEOUT,
            on_failure: OnFailure::default(),
            style: HeaderStyle::default(),
            counters: Arc::default(),
        }
    }
}

impl<B, L, C> RemoteRateLimitLayer<B, L, C> {
    /// Adds a limit: one more descriptor in every check. The server decides them all
    /// together: a request passes only if every descriptor is within its rule, and only
    /// then is it counted on all of them.
    ///
    /// # Errors
    /// [`ConfigError`] when the limit's name cannot be sent in a header (control or
    /// non-ASCII characters) or another limit already has it, or the layer's domain is
    /// empty.
    pub fn limit<E>(
        self,
        limit: RemoteLimit<E>,
    ) -> Result<WithRemoteLimit<B, L, E, C>, ConfigError> {
        if self.domain.is_empty() {
            return Err(ConfigError::EmptyDomain);
        }
        let name = limit.spec.name.clone();
        let probe = PolicyItem {
            name: name.to_string(),
            quota: 1,
            window_secs: 1,
        };
        encode_policy_header(&[probe]).map_err(|e| ConfigError::InvalidName {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        if self.names.contains(&name) {
            return Err(ConfigError::DuplicateName {
                name: name.to_string(),
            });
        }
        let mut names = self.names;
        names.push(name);
        Ok(RemoteRateLimitLayer {
            backend: self.backend,
            domain: self.domain,
            limits: (self.limits, limit.spec),
            names,
            cost: self.cost,
            timeout: self.timeout,
            on_failure: self.on_failure,
            style: self.style,
            counters: self.counters,
        })
    }

    /// Charges each request `f(&request)` hits instead of 1. The server counts a cost of
    /// 0 as 1 (Envoy's rule).
    pub fn cost<F>(self, f: F) -> RemoteRateLimitLayer<B, L, CostFn<F>> {
        RemoteRateLimitLayer {
            backend: self.backend,
            domain: self.domain,
            limits: self.limits,
            names: self.names,
            cost: CostFn(f),
            timeout: self.timeout,
            on_failure: self.on_failure,
            style: self.style,
            counters: self.counters,
        }
    }

    /// The longest the layer waits for the server's answer, connecting included (default
    /// 100 ms); then the [failure policy](Self::on_failure) applies. Measured on tokio's
    /// timer, so the service must run on a tokio runtime with time enabled.
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// What to do when the server gives no decision (default [`OnFailure::Open`]).
    #[must_use]
    pub fn on_failure(self, on_failure: OnFailure) -> Self {
        Self { on_failure, ..self }
    }

    /// Which rate limit headers allowed and refused responses carry (default
    /// [`HeaderStyle::Ietf`]). A refusal carries `Retry-After` whatever the style.
    #[must_use]
    pub fn header_style(self, style: HeaderStyle) -> Self {
        Self { style, ..self }
    }

    /// The counts of this layer's checks so far (shared with its clones and services).
    pub fn stats(&self) -> RemoteStats {
        self.counters.snapshot()
    }

    /// The transport.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }
}

impl<B, L: Clone, C: Clone> Clone for RemoteRateLimitLayer<B, L, C> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            domain: self.domain.clone(),
            limits: self.limits.clone(),
            names: self.names.clone(),
            cost: self.cost.clone(),
            timeout: self.timeout,
            on_failure: self.on_failure,
            style: self.style,
            counters: self.counters.clone(),
        }
    }
}

impl<B, L, C> fmt::Debug for RemoteRateLimitLayer<B, L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.names.iter().map(|n| &**n).collect();
        f.debug_struct("RemoteRateLimitLayer")
            .field("domain", &self.domain)
            .field("limits", &names)
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .field("style", &self.style)
            .finish_non_exhaustive()
    }
}

impl<I, B, L: Clone, C: Clone> Layer<I> for RemoteRateLimitLayer<B, L, C> {
    type Service = RemoteRateLimit<I, B, L, C>;

    fn layer(&self, inner: I) -> Self::Service {
        RemoteRateLimit::new(
            inner,
            Arc::new(Shared {
                backend: self.backend.clone(),
                domain: self.domain.clone(),
                limits: self.limits.clone(),
                names: self.names.clone(),
                cost: self.cost.clone(),
                timeout: self.timeout,
                on_failure: self.on_failure,
                style: self.style,
                counters: self.counters.clone(),
            }),
        )
    }
}
