//! The layer: the configuration shared by every service it wraps.

use std::fmt;
use std::sync::Arc;

use sluice_http::{HeaderStyle, PolicyItem, encode_policy_header};
use sluice_store::Store;
use tower_layer::Layer;

use crate::limits::{CostFn, LimitSpec, UnitCost};
use crate::service::{RateLimit, Shared};

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
    names: Vec<Arc<str>>,
    cost: C,
    style: HeaderStyle,
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
            names: Vec::new(),
            cost: UnitCost,
            style: HeaderStyle::default(),
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
        if self.names.contains(&name) {
            return Err(ConfigError::DuplicateName {
                name: name.to_string(),
            });
        }
        let mut names = self.names;
        names.push(name);
        Ok(RateLimitLayer {
            store: self.store,
            limits: (self.limits, spec),
            names,
            cost: self.cost,
            style: self.style,
        })
    }

    /// Charges each request `f(&request)` units instead of 1.
    pub fn cost<F>(self, f: F) -> RateLimitLayer<S, L, CostFn<F>> {
        RateLimitLayer {
            store: self.store,
            limits: self.limits,
            names: self.names,
            cost: CostFn(f),
            style: self.style,
        }
    }

    /// Which rate limit headers allowed and refused responses carry (default
    /// [`HeaderStyle::Ietf`]). A refusal carries `Retry-After` whatever the style.
    #[must_use]
    pub fn header_style(self, style: HeaderStyle) -> Self {
        Self { style, ..self }
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
            names: self.names.clone(),
            cost: self.cost.clone(),
            style: self.style,
        }
    }
}

impl<S, L, C> fmt::Debug for RateLimitLayer<S, L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limits", &self.names)
            .field("style", &self.style)
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
                names: self.names.clone(),
                cost: self.cost.clone(),
                style: self.style,
            }),
        )
    }
}
