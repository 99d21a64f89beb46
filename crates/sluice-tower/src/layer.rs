//! The layer: the configuration shared by every service it wraps.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sluice_http::{HeaderStyle, PolicyItem, encode_policy_header};
use sluice_store::Store;
use tower_layer::Layer;

use crate::headers::Prebuilt;
use crate::limits::{CostFn, LimitInfo, LimitSpec, UnitCost};
use crate::service::{Config, RateLimit, Shared};

/// Why a layer could not be configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit's name cannot be sent in a `RateLimit-Policy` header.
    #[error("limit name {name:?} cannot be sent in a header: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two limits have the same name, so their headers could not be told apart.
    #[error("two limits are named {name:?}")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A remote layer's domain is empty, which a rate limit server refuses in every check.
    #[error("the domain is empty: a rate limit server refuses every check without one")]
    EmptyDomain,
}

/// The layer [`RateLimitLayer::limit`] returns: `L` and one more limit.
pub type WithLimit<S, L, E, C> = RateLimitLayer<S, (L, LimitSpec<E>), C>;

/// A tower [`Layer`] that checks every request against its limits, all or nothing, in
/// `call` (never in `poll_ready`), answers `429 Too Many Requests` itself when any limit
/// refuses, and adds rate limit headers to the responses it lets through.
///
/// `S` is the [`Store`], shared by every clone; `L` the limits (built by
/// [`limit`](Self::limit)); `C` the request cost ([`UnitCost`] unless
/// [`cost`](Self::cost) sets one). Cheap to clone.
pub struct RateLimitLayer<S, L = (), C = UnitCost> {
    store: Arc<S>,
    limits: L,
    infos: Vec<LimitInfo>,
    cost: C,
    style: HeaderStyle,
    max_wait: Option<Duration>,
}

impl<S: Store> RateLimitLayer<S> {
    /// A layer over `store` with no limits yet, a cost of 1 and IETF headers.
    pub fn new(store: S) -> Self {
        Self::shared(Arc::new(store))
    }

    /// A layer over a store shared with other code (another layer, an admin API).
    pub fn shared(store: Arc<S>) -> Self {
        Self {
            store,
            limits: (),
            infos: Vec::new(),
            cost: UnitCost,
            style: HeaderStyle::default(),
            max_wait: None,
        }
    }
}

impl<S, L, C> RateLimitLayer<S, L, C> {
    /// Adds a limit. Every request is checked against all the limits together: it passes
    /// only if all of them allow it, and then is debited on all of them.
    ///
    /// # Errors
    /// [`ConfigError`] when the limit's name cannot be sent in a header (control or
    /// non-ASCII characters) or another limit already has it.
    pub fn limit<E>(self, spec: LimitSpec<E>) -> Result<WithLimit<S, L, E, C>, ConfigError> {
        let name = spec.name.clone();
        let probe = PolicyItem {
            name: name.to_string(),
            quota: 1,
            window_secs: 1,
        };
        encode_policy_header(&[probe]).map_err(|e| ConfigError::InvalidName {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        if self.infos.iter().any(|info| info.name == name) {
            return Err(ConfigError::DuplicateName {
                name: name.to_string(),
            });
        }
        let mut infos = self.infos;
        infos.push(LimitInfo::of(&spec));
        Ok(RateLimitLayer {
            store: self.store,
            limits: (self.limits, spec),
            infos,
            cost: self.cost,
            style: self.style,
            max_wait: self.max_wait,
        })
    }

    /// Charges each request `f(&request)` units instead of 1.
    pub fn cost<F>(self, f: F) -> RateLimitLayer<S, L, CostFn<F>> {
        RateLimitLayer {
            store: self.store,
            limits: self.limits,
            infos: self.infos,
            cost: CostFn(f),
            style: self.style,
            max_wait: self.max_wait,
        }
    }

    /// Which rate limit headers allowed and refused responses carry (default
    /// [`HeaderStyle::Ietf`]). A refusal carries `Retry-After` whatever the style.
    #[must_use]
    pub fn header_style(self, style: HeaderStyle) -> Self {
        Self { style, ..self }
    }

    /// Waits up to `max_wait` for capacity instead of refusing, for callers that prefer
    /// a delay to a `429`.
    ///
    /// Each request then takes a reservation (`Store::reserve`, all limits or none) for
    /// the earliest instant its units are free; the layer sleeps until then (tokio's timer,
    /// so the service must run on a tokio runtime with time enabled) and calls the inner
    /// service. A request whose wait would be longer than `max_wait` is refused as without
    /// this option (its `Retry-After` is how much longer than `max_wait` it would have had
    /// to wait). Requests keep their order per key: each reservation queues behind the
    /// earlier ones.
    ///
    /// A request dropped while it waits (its client went away, a timeout) gives its
    /// reservation back: the in-memory store at once, any other store through a `cancel`
    /// spawned on the current tokio runtime (best effort: if that fails the capacity stays
    /// taken, as if the request had run, so the limit is never exceeded).
    ///
    /// The headers of an admitted request describe the limit when it is let through.
    /// `poll_ready` still never waits: the inner service's readiness is held while the
    /// request sleeps.
    #[must_use]
    pub fn max_wait(self, max_wait: Duration) -> Self {
        Self {
            max_wait: Some(max_wait),
            ..self
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

impl<S, L: Clone, C: Clone> Clone for RateLimitLayer<S, L, C> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            limits: self.limits.clone(),
            infos: self.infos.clone(),
            cost: self.cost.clone(),
            style: self.style,
            max_wait: self.max_wait,
        }
    }
}

impl<S, L, C> fmt::Debug for RateLimitLayer<S, L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.infos.iter().map(|i| &*i.name).collect();
        f.debug_struct("RateLimitLayer")
            .field("limits", &names)
            .field("style", &self.style)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl<I, S, L: Clone, C: Clone> Layer<I> for RateLimitLayer<S, L, C> {
    type Service = RateLimit<I, S, L, C>;

    fn layer(&self, inner: I) -> Self::Service {
        RateLimit::new(
            inner,
            Arc::new(Shared {
                store: self.store.clone(),
                limits: self.limits.clone(),
                cost: self.cost.clone(),
                config: Config {
                    headers: Prebuilt::new(self.style, &self.infos),
                    infos: self.infos.clone(),
                    style: self.style,
                    max_wait: self.max_wait,
                },
            }),
        )
    }
}
