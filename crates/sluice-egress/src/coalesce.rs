//! Request coalescing: identical concurrent idempotent requests share one upstream call.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use http::{HeaderMap, HeaderName, Method, Uri};
use tokio::sync::watch;

/// What makes two requests the same: method, URI, and a digest of the body and of the
/// headers the caller names (e.g. `authorization`, so two API keys never share an answer).
///
/// The method and URI are kept and compared in full. The body and the named headers are
/// kept as a 128-bit digest: two SipHash values under secret keys drawn at random once
/// per process, over length-prefixed input. Two different requests getting the same
/// digest by chance is astronomically unlikely (about 2^-128 per pair), and since the keys
/// are secret, nobody can craft such a pair on purpose. A key is therefore only meaningful
/// inside the process that built it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CoalesceKey {
    method: Method,
    uri: Uri,
    digest: u128,
}

impl CoalesceKey {
    /// The key of a request with `method`, `uri`, `headers` and `body`, where the headers
    /// named in `vary` count (every value of each, in order; a header that is absent
    /// differs from one that is empty) and all others are ignored. The order of `vary`
    /// does not matter, and neither do repeated names in it.
    pub fn new(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        vary: &[HeaderName],
        body: &[u8],
    ) -> Self {
        let mut names: Vec<&HeaderName> = vary.iter().collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();

        let [first, second] = digest_keys();
        let mut hashers = [first.build_hasher(), second.build_hasher()];
        for (prefix, hasher) in [b'a', b'b'].into_iter().zip(&mut hashers) {
            hasher.write_u8(prefix);
            hasher.write_usize(names.len());
            for name in &names {
                write_bytes(hasher, name.as_str().as_bytes());
                let values = headers.get_all(*name);
                hasher.write_usize(values.iter().count());
                for value in values {
                    write_bytes(hasher, value.as_bytes());
                }
            }
            write_bytes(hasher, body);
        }
        let [high, low] = hashers.map(|hasher| hasher.finish());
        Self {
            method: method.clone(),
            uri: uri.clone(),
            digest: (u128::from(high) << 64) | u128::from(low),
        }
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// `bytes` with its length first, so that no two sequences of fields hash alike.
fn write_bytes(hasher: &mut impl Hasher, bytes: &[u8]) {
    hasher.write_usize(bytes.len());
    hasher.write(bytes);
}

/// The two secret hash keys of this process, drawn on first use.
fn digest_keys() -> &'static [RandomState; 2] {
    static KEYS: OnceLock<[RandomState; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [RandomState::new(), RandomState::new()])
}

/// The answer a caller of [`Coalescer::run`] gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coalesced<T> {
    /// The call's result.
    pub value: T,
    /// `true` for a follower that got a clone of the leader's result, `false` for the
    /// caller whose own `call` made it.
    pub shared: bool,
}

/// Request coalescing: identical concurrent idempotent requests share one upstream call.
///
/// When many workers ask the upstream the same thing at the same moment (the same `GET` of
/// a model list or a document, a deterministic completion such as `temperature: 0` with a
/// seed, asked by every replica of a batch job), a [`Coalescer`] sends it once: the first
/// caller for a [`CoalesceKey`] (the *leader*) makes the call, and callers that arrive
/// with the same key while it runs (*followers*) wait for its answer and get a clone of
/// it, marked [`Coalesced::shared`]. Quota, pace and concurrency are spent once.
///
/// It is **opt-in**, and only for **idempotent** requests whose answer may be given to
/// every caller: two callers coalesced together get the same answer, so never coalesce
/// a request that changes state (a `POST` that creates something, a payment) or one whose
/// answer is meant to differ per call (a sampled completion). Requests that differ in
/// method, URI, body or one of the headers named in `vary` (name `authorization`, so that
/// two API keys never share an answer) have different keys and never share.
///
/// It is not a cache: the entry of a key is removed the moment its leader finishes, so a
/// request arriving afterwards makes a new call. Memory is one entry per distinct key in
/// flight (the caller bounds how many calls are in flight) plus one receiver per waiting
/// follower.
///
/// # Cancellation and panics
///
/// Nothing is spawned: the leader's own future drives its call. If that future is dropped
/// (the caller gave up, a timeout) or its call panics, the key's entry is removed and the
/// followers see "leader gone", never a made-up answer. Each follower kept its own `call`,
/// so they try again: the first to get there becomes the new leader and runs its call,
/// and the others follow it. A panic is propagated in the leader's task only.
///
/// ```
/// use http::{HeaderMap, Method, Uri, header::AUTHORIZATION};
/// use sluice_egress::{CoalesceKey, Coalescer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let coalescer = Coalescer::<String>::new();
/// let uri = Uri::from_static("https://api.example.com/v1/models");
/// let key = CoalesceKey::new(&Method::GET, &uri, &HeaderMap::new(), &[AUTHORIZATION], b"");
/// let answer = coalescer.run(key, || async { "models".to_owned() }).await;
/// assert_eq!(answer.value, "models");
/// assert!(!answer.shared); // nobody else was asking
/// assert_eq!(coalescer.in_flight(), 0);
/// # }
/// ```
///
/// Runs at most one `call` per key at a time; callers that arrive while it runs wait for
/// its result and get a clone of it.
pub struct Coalescer<T> {
    state: Mutex<State<T>>,
}

/// The calls in flight, by key.
struct State<T> {
    flights: HashMap<CoalesceKey, Flight<T>>,
    /// The id the next leader gets.
    next_id: u64,
}

/// One call in flight: its leader's id, and where its result will appear. The leader
/// holds the sender; it is dropped without a value if the leader goes away.
struct Flight<T> {
    id: u64,
    result: watch::Receiver<Option<T>>,
}

/// What a caller is for its key.
enum Role<'a, T> {
    Leader(Lead<'a, T>),
    Follower(watch::Receiver<Option<T>>),
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                flights: HashMap::new(),
                next_id: 0,
            }),
        }
    }
}

impl<T> fmt::Debug for Coalescer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescer")
            .field("in_flight", &self.lock().flights.len())
            .finish()
    }
}

impl<T> Coalescer<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone + Send + 'static> Coalescer<T> {
    /// A coalescer with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `call` for `key`, unless a call for `key` is already running: then waits for
    /// that call's result and returns a clone of it, with [`Coalesced::shared`] set.
    ///
    /// If the call being waited for is abandoned (its caller's future was dropped, or it
    /// panicked), this caller tries again and may become the one that runs its own
    /// `call`. A panic in `call` propagates to this caller only.
    pub async fn run<F, Fut>(&self, key: CoalesceKey, call: F) -> Coalesced<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            match self.join(&key) {
                Role::Leader(lead) => {
                    let value = call().await;
                    lead.finish(value.clone());
                    return Coalesced {
                        value,
                        shared: false,
                    };
                }
                Role::Follower(mut result) => {
                    // Err: the leader went away without a result. Try again.
                    if let Ok(value) = result.wait_for(Option::is_some).await
                        && let Some(value) = value.as_ref()
                    {
                        return Coalesced {
                            value: value.clone(),
                            shared: true,
                        };
                    }
                    tracing::debug!(
                        method = %key.method,
                        uri = %key.uri,
                        "coalesced call abandoned by its leader; trying again"
                    );
                }
            }
        }
    }

    /// How many distinct keys have a call running now.
    pub fn in_flight(&self) -> usize {
        self.lock().flights.len()
    }

    /// Follows the call in flight for `key`, or becomes its leader if there is none.
    fn join(&self, key: &CoalesceKey) -> Role<'_, T> {
        let mut state = self.lock();
        if let Some(flight) = state.flights.get(key)
            // A closed channel is a leader gone without removing its entry: replace it.
            && !flight.result.is_closed()
        {
            return Role::Follower(flight.result.clone());
        }
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        let (sender, result) = watch::channel(None);
        state.flights.insert(key.clone(), Flight { id, result });
        Role::Leader(Lead {
            coalescer: self,
            key: key.clone(),
            id,
            sender: Some(sender),
        })
    }
}

/// The leader's hold on its key's entry. Dropped without [`Lead::finish`] (cancelled, or
/// unwinding from a panic), it removes the entry and then closes the channel, so the
/// followers wake to find no entry and one of them leads next.
struct Lead<'a, T> {
    coalescer: &'a Coalescer<T>,
    key: CoalesceKey,
    id: u64,
    /// `None` once finished.
    sender: Option<watch::Sender<Option<T>>>,
}

impl<T> Lead<'_, T> {
    /// Removes the entry and hands `value` to the followers.
    fn finish(mut self, value: T) {
        self.remove();
        if let Some(sender) = self.sender.take() {
            sender.send_replace(Some(value));
        }
    }

    /// Removes this leader's entry (and not a later leader's of the same key).
    fn remove(&self) {
        let mut state = self.coalescer.lock();
        if state
            .flights
            .get(&self.key)
            .is_some_and(|f| f.id == self.id)
        {
            state.flights.remove(&self.key);
            // Give back the room a past burst of keys took.
            let capacity = state.flights.capacity();
            if capacity > 64 && state.flights.len() < capacity / 4 {
                let len = state.flights.len();
                state.flights.shrink_to(len.saturating_mul(2));
            }
        }
    }
}

impl<T> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        if self.sender.is_some() {
            // The sender is dropped after this, closing the channel once the entry is gone.
            self.remove();
        }
    }
}
