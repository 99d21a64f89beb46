//! The limits a request is checked against, and what it costs.

use std::fmt;
use std::sync::Arc;

use http::Request;
use sluice_core::{Key, Policy};
use sluice_store::FailurePolicy;

use crate::extract::{KeyExtractor, KeyRejection};

/// What a limit does with a request its extractor finds no key in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnMissingKey {
    /// Answer `400 Bad Request` (the default).
    #[default]
    BadRequest,
    /// Answer `401 Unauthorized` (for an API-key or identity limit).
    Unauthorized,
    /// Count the request against one shared key with this name
    /// (`<domain>|fallback=<name>`), so all keyless requests share one budget.
    Fallback(String),
}

/// One limit: a name (used in headers, problem bodies and as the key domain), a policy,
/// a key extractor, and what to do without a key or without the store.
#[derive(Clone, Debug)]
pub struct LimitSpec<E> {
    pub(crate) name: Arc<str>,
    pub(crate) policy: Policy,
    pub(crate) extractor: E,
    pub(crate) on_missing: OnMissingKey,
    pub(crate) on_failure: FailurePolicy,
}

impl<E> LimitSpec<E> {
    /// The limit `name` enforcing `policy` on the keys `extractor` takes.
    pub fn new(name: impl Into<Arc<str>>, policy: Policy, extractor: E) -> Self {
        Self {
            name: name.into(),
            policy,
            extractor,
            on_missing: OnMissingKey::default(),
            on_failure: FailurePolicy::default(),
        }
    }

    /// The same limit with another outcome for keyless requests.
    #[must_use]
    pub fn on_missing_key(self, on_missing: OnMissingKey) -> Self {
        Self { on_missing, ..self }
    }

    /// The same limit with another failure policy (acted on by a store that wraps a
    /// shared one, like `FallbackStore`).
    #[must_use]
    pub fn on_failure(self, on_failure: FailurePolicy) -> Self {
        Self { on_failure, ..self }
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit's policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// One limit resolved for one request.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) name: Arc<str>,
    pub(crate) policy: Policy,
    pub(crate) key: Key,
    pub(crate) on_failure: FailurePolicy,
}

/// A request the layer answers itself because a limit found no key.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    pub(crate) name: Arc<str>,
    pub(crate) unauthorized: bool,
    pub(crate) reason: KeyRejection,
}

/// A list of limits, built by [`RateLimitLayer::limit`](crate::RateLimitLayer::limit):
/// `()` is none, `(L, LimitSpec<E>)` is `L` and one more. Generic so that every
/// extractor is called without dynamic dispatch.
pub trait LimitSet<B>: Clone + Send + Sync + 'static {
    /// How many limits.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves every limit for `req`, in the order they were added.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn resolve(&self, req: &Request<B>, out: &mut Vec<Resolved>) -> Result<(), Refusal>;
}

impl<B> LimitSet<B> for () {
    fn len(&self) -> usize {
        0
    }

    #[allow(private_interfaces)]
    fn resolve(&self, _req: &Request<B>, _out: &mut Vec<Resolved>) -> Result<(), Refusal> {
        Ok(())
    }
}

impl<B, L, E> LimitSet<B> for (L, LimitSpec<E>)
where
    L: LimitSet<B>,
    E: KeyExtractor<B> + fmt::Debug,
{
    fn len(&self) -> usize {
        self.0.len() + 1
    }

    #[allow(private_interfaces)]
    fn resolve(&self, req: &Request<B>, out: &mut Vec<Resolved>) -> Result<(), Refusal> {
        self.0.resolve(req, out)?;
        let spec = &self.1;
        let key = match spec.extractor.extract(&spec.name, req) {
            Ok(key) => key,
            Err(reason) => match &spec.on_missing {
                OnMissingKey::Fallback(name) => Key::new(&spec.name, [("fallback", name)])
                    .map_err(|e| Refusal {
                        name: spec.name.clone(),
                        unauthorized: false,
                        reason: KeyRejection::Invalid(e),
                    })?,
                other => {
                    return Err(Refusal {
                        name: spec.name.clone(),
                        unauthorized: *other == OnMissingKey::Unauthorized,
                        reason,
                    });
                }
            },
        };
        out.push(Resolved {
            name: spec.name.clone(),
            policy: spec.policy,
            key,
            on_failure: spec.on_failure,
        });
        Ok(())
    }
}

/// The cost of a request in units of its limits.
pub trait RequestCost<B>: Clone + Send + Sync + 'static {
    /// The cost of `req`.
    fn cost(&self, req: &Request<B>) -> u64;
}

/// Every request costs one unit (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitCost;

impl<B> RequestCost<B> for UnitCost {
    fn cost(&self, _req: &Request<B>) -> u64 {
        1
    }
}

/// A cost computed by a closure over the request (e.g. from a header or the route).
#[derive(Clone)]
pub struct CostFn<F>(pub F);

impl<F> fmt::Debug for CostFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CostFn(..)")
    }
}

impl<B, F> RequestCost<B> for CostFn<F>
where
    F: Fn(&Request<B>) -> u64 + Clone + Send + Sync + 'static,
{
    fn cost(&self, req: &Request<B>) -> u64 {
        (self.0)(req)
    }
}
