//! The limits a request is checked against, and what it costs.

use std::fmt;
use std::sync::{Arc, OnceLock};

use http::{HeaderValue, Request};
use sluice_core::{Key, Policy};
use sluice_store::{FailurePolicy, Limit};

use crate::extract::{KeyExtractor, KeyRejection};

/// What a limit does with a request its extractor finds no key in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnMissingKey {
    /// Answer `400 Bad Request` (the default).
    #[default]
    BadRequest,
    /// Answer `401 Unauthorized` (for an API-key or identity limit), with the limit's
    /// `WWW-Authenticate` challenge (see [`LimitSpec::www_authenticate`]).
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
    pub(crate) challenge: HeaderValue,
    /// The key of an extractor that gives every request the same one, built on first use.
    pub(crate) constant: OnceLock<Key>,
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
            challenge: HeaderValue::from_static("Bearer"),
            constant: OnceLock::new(),
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

    /// The same limit answering its `401` ([`OnMissingKey::Unauthorized`]) with
    /// `WWW-Authenticate: <challenge>` (default `Bearer`), e.g.
    /// `Bearer realm="api"` or `ApiKey header="x-api-key"`. RFC 9110 requires a 401 to
    /// carry at least one challenge, so there is always one.
    #[must_use]
    pub fn www_authenticate(self, challenge: HeaderValue) -> Self {
        Self { challenge, ..self }
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

/// What the layer keeps of one limit besides its extractor, in the order the limits were
/// added: the `i`-th key a [`LimitSet`] resolves is checked under the `i`-th of these.
#[derive(Clone, Debug)]
pub(crate) struct LimitInfo {
    pub(crate) name: Arc<str>,
    pub(crate) policy: Policy,
    pub(crate) on_failure: FailurePolicy,
}

impl LimitInfo {
    pub(crate) fn of<E>(spec: &LimitSpec<E>) -> Self {
        Self {
            name: spec.name.clone(),
            policy: spec.policy,
            on_failure: spec.on_failure,
        }
    }

    /// The store's view of this limit on `key`.
    pub(crate) fn limit<'a>(&'a self, key: &'a Key) -> Limit<'a> {
        Limit::new(key, &self.policy).on_failure(self.on_failure)
    }
}

/// The keys of one request, one per limit, without a heap allocation for one limit (the
/// common case).
#[derive(Debug, Default)]
pub(crate) enum Keys {
    #[default]
    Empty,
    One(Key),
    Many(Vec<Key>),
}

impl Keys {
    fn push(&mut self, key: Key) {
        *self = match std::mem::take(self) {
            Self::Empty => Self::One(key),
            Self::One(first) => Self::Many(vec![first, key]),
            Self::Many(mut all) => {
                all.push(key);
                Self::Many(all)
            }
        };
    }

    pub(crate) fn as_slice(&self) -> &[Key] {
        match self {
            Self::Empty => &[],
            Self::One(key) => std::slice::from_ref(key),
            Self::Many(all) => all,
        }
    }
}

/// A request the layer answers itself because a limit found no key.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    pub(crate) name: Arc<str>,
    /// The `WWW-Authenticate` challenge of a `401`; `None` for a `400`.
    pub(crate) challenge: Option<HeaderValue>,
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

    /// Resolves every limit's key for `req`, in the order they were added.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn resolve(&self, req: &Request<B>, out: &mut Keys) -> Result<(), Refusal>;
}

impl<B> LimitSet<B> for () {
    fn len(&self) -> usize {
        0
    }

    #[allow(private_interfaces)]
    fn resolve(&self, _req: &Request<B>, _out: &mut Keys) -> Result<(), Refusal> {
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
    fn resolve(&self, req: &Request<B>, out: &mut Keys) -> Result<(), Refusal> {
        self.0.resolve(req, out)?;
        let spec = &self.1;
        if let Some(key) = spec.constant.get() {
            out.push(key.clone());
            return Ok(());
        }
        let key = match spec.extractor.extract(&spec.name, req) {
            Ok(key) => {
                if spec.extractor.is_constant() {
                    // Another thread may have set it meanwhile: the same key.
                    let _ = spec.constant.set(key.clone());
                }
                key
            }
            Err(reason) => match &spec.on_missing {
                OnMissingKey::Fallback(name) => Key::new(&spec.name, [("fallback", name)])
                    .map_err(|e| Refusal {
                        name: spec.name.clone(),
                        challenge: None,
                        reason: KeyRejection::Invalid(e),
                    })?,
                other => {
                    return Err(Refusal {
                        name: spec.name.clone(),
                        challenge: (*other == OnMissingKey::Unauthorized)
                            .then(|| spec.challenge.clone()),
                        reason,
                    });
                }
            },
        };
        out.push(key);
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
