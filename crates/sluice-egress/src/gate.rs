//! The gate: who goes next among the callers waiting for an upstream's capacity.
//!
//! One caller at a time holds the [`Turn`]; it does its waiting (pace, a slot) and then
//! drops the turn, which passes it to the next waiter, in this order:
//!
//! 1. the highest [`Priority`] first (a newcomer of a higher priority goes before lower
//!    ones already waiting, but never takes the turn from its holder);
//! 2. within a priority, tenants in round robin: the tenant served least recently goes
//!    next, a tenant that starts waiting joins the end of the round, and `None` is a
//!    tenant of its own;
//! 3. within a tenant, first come first served.
//!
//! That order is sluice-core's line model ([`sluice_core::queue`]); the gate adds the turn
//! (one holder at a time) and the wakers.
//!
//! At most `capacity` callers wait; more get [`GateFull`] at once, so memory stays bounded.
//!
//! Cancel safety: [`Gate::enter`] may be dropped at any await. A caller dropped while it
//! waits leaves the queue; a caller granted the turn but dropped before it saw the grant
//! passes the turn on, as dropping a [`Turn`] does. Each hand-off wakes exactly the
//! waiter that got the turn.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use sluice_core::Nanos;
use sluice_core::queue::{Overflow, Queue, QueueConfig, Tenant, WaiterId};

use crate::job::Priority;

/// The longest tenant name the gate tells apart, in bytes: tenants whose names agree in
/// their first `MAX_TENANT_LEN` bytes share one place in the round robin. Tenant names
/// may come from clients; this keeps what the gate stores per tenant bounded.
pub const MAX_TENANT_LEN: usize = 256;

/// Orders callers waiting for an upstream's capacity: one at a time holds the [`Turn`];
/// the others wait, by priority, then tenant in round robin, then arrival.
///
/// `Send + Sync`: share it by reference or in an `Arc`.
pub struct Gate {
    capacity: usize,
    state: Mutex<State>,
}

/// Everything behind the gate's lock, which is never held across an await.
struct State {
    /// Someone holds the turn, or it has been granted to [`State::granted`]. When it is
    /// not held, nobody waits.
    held: bool,
    /// The waiter the turn was handed to, until it sees the grant (or is dropped).
    granted: Option<WaiterId>,
    /// The waiters, in sluice-core's one line model, each with the waker to call when it
    /// is granted the turn. No deadlines: a caller's own timeout drops its future.
    line: Queue<Priority, Option<Waker>>,
}

impl State {
    /// The turn is free: grants it to the next waiter and returns the waker to call
    /// (after the lock is released), or marks the turn free if nobody waits.
    fn pass_on(&mut self) -> Option<Waker> {
        debug_assert!(self.held && self.granted.is_none());
        if let Some(waiter) = self.line.pop() {
            self.granted = Some(waiter.id);
            waiter.value
        } else {
            self.held = false;
            None
        }
    }
}

impl Gate {
    /// A gate at which at most `capacity` callers wait (the turn's holder not counted).
    /// With a capacity of 0, [`Gate::enter`] only succeeds while the turn is free.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State {
                held: false,
                granted: None,
                line: Queue::new(QueueConfig {
                    max_length: capacity,
                    overflow: Overflow::RejectNew,
                }),
            }),
        }
    }

    /// How many callers may wait at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waits for this caller's turn, which lasts until the returned [`Turn`] is dropped.
    ///
    /// Returns at once, without yielding, when nobody holds the turn or waits for it;
    /// fails at once with [`GateFull`] when `capacity` callers already wait. `tenant` is
    /// compared on its first [`MAX_TENANT_LEN`] bytes.
    ///
    /// Cancel safe: dropping the future leaves the queue, and passes the turn on if it
    /// had just been granted.
    pub async fn enter(
        &self,
        priority: Priority,
        tenant: Option<&str>,
    ) -> Result<Turn<'_>, GateFull> {
        let waiter = {
            let mut state = self.lock();
            if !state.held {
                debug_assert!(state.line.is_empty());
                state.held = true;
                return Ok(Turn { gate: self });
            }
            // Only the caller's own timeout ends a wait: no deadline in the line.
            let joined = state
                .line
                .push(priority, tenant_key(tenant), Nanos::MAX, None, Nanos::ZERO)
                .map_err(|_| GateFull {
                    waiting: state.line.len(),
                    capacity: self.capacity,
                })?;
            Waiter {
                gate: self,
                id: joined.id,
                done: false,
            }
        };
        Ok(waiter.await)
    }

    /// How many callers wait now (the turn's holder not counted).
    pub fn waiting(&self) -> usize {
        self.lock().line.len()
    }

    /// How many callers wait now at each priority that has any, highest first.
    pub fn waiting_by_priority(&self) -> Vec<(Priority, usize)> {
        self.lock().line.len_by_priority()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Passes a free turn on and wakes whoever got it, outside the lock.
    fn release(&self) {
        let waker = self.lock().pass_on();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Gate")
            .field("capacity", &self.capacity)
            .field("held", &state.held)
            .field("waiting", &state.line.len())
            .finish_non_exhaustive()
    }
}

/// The turn at a [`Gate`]: while it lives, every other caller waits. Dropping it hands
/// the turn to the next waiter, and wakes that one only.
#[must_use = "the turn passes to the next waiter as soon as it is dropped"]
#[derive(Debug)]
pub struct Turn<'a> {
    gate: &'a Gate,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// [`Gate::enter`] failed: the queue is full. Backpressure: fail the call (overloaded)
/// rather than wait.
#[derive(Debug, thiserror::Error)]
#[error("{waiting} calls are already waiting (capacity {capacity})")]
pub struct GateFull {
    /// Callers waiting when this one was turned away.
    pub waiting: usize,
    /// The gate's capacity.
    pub capacity: usize,
}

/// A queued caller, until it gets its turn. Dropped before that, it leaves the queue, or
/// passes on the turn if the turn had already been granted to it.
struct Waiter<'a> {
    gate: &'a Gate,
    id: WaiterId,
    /// It has returned its turn: nothing to undo.
    done: bool,
}

impl<'a> Future for Waiter<'a> {
    type Output = Turn<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn<'a>> {
        let this = &mut *self;
        let mut state = this.gate.lock();
        if state.granted == Some(this.id) {
            state.granted = None;
            drop(state);
            this.done = true;
            return Poll::Ready(Turn { gate: this.gate });
        }
        if let Some(slot) = state.line.get_mut(this.id).map(|waiter| &mut waiter.value) {
            match slot {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        } else {
            debug_assert!(this.done, "a waiting caller is neither queued nor granted");
        }
        Poll::Pending
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.gate.lock();
        if state.granted == Some(self.id) {
            state.granted = None;
            let waker = state.pass_on();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        } else {
            let removed = state.line.remove(self.id);
            drop(state);
            debug_assert!(removed.is_some(), "a waiting caller was not queued");
            drop(removed);
        }
    }
}

/// The key `tenant` is filed under: its first [`MAX_TENANT_LEN`] bytes (whole characters).
fn tenant_key(tenant: Option<&str>) -> Tenant {
    tenant.map(|name| Arc::from(&name[..name.floor_char_boundary(MAX_TENANT_LEN)]))
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, VecDeque};

    use proptest::prelude::*;

    use super::*;

    impl State {
        /// Checks the bookkeeping: a free turn has nobody waiting and nobody granted.
        /// (The line's own bookkeeping is sluice-core's, tested there.)
        fn check(&self) {
            if !self.held {
                assert!(self.line.is_empty());
                assert_eq!(self.granted, None);
            }
        }
    }

    /// A model tenant's waiters, by index.
    type ModelQueue = (Option<u8>, VecDeque<usize>);

    /// The reference: the same order, kept in the plainest way.
    #[derive(Default)]
    struct Model {
        /// Per priority: tenants in round-robin order, each with its waiters' indexes.
        levels: BTreeMap<Reverse<u8>, VecDeque<ModelQueue>>,
    }

    impl Model {
        fn push(&mut self, priority: u8, tenant: Option<u8>, index: usize) {
            let level = self.levels.entry(Reverse(priority)).or_default();
            match level.iter_mut().find(|(t, _)| *t == tenant) {
                Some((_, queue)) => queue.push_back(index),
                None => level.push_back((tenant, VecDeque::from([index]))),
            }
        }

        fn remove(&mut self, index: usize) {
            for level in self.levels.values_mut() {
                for (_, queue) in level.iter_mut() {
                    queue.retain(|&i| i != index);
                }
                level.retain(|(_, queue)| !queue.is_empty());
            }
            self.levels.retain(|_, level| !level.is_empty());
        }

        fn pop(&mut self) -> Option<usize> {
            let mut entry = self.levels.first_entry()?;
            let (tenant, mut queue) = entry.get_mut().pop_front()?;
            let index = queue.pop_front()?;
            if !queue.is_empty() {
                entry.get_mut().push_back((tenant, queue));
            }
            if entry.get().is_empty() {
                entry.remove();
            }
            Some(index)
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A caller arrives (and is polled once).
        Enter { priority: u8, tenant: Option<u8> },
        /// The holder drops its turn: the next waiter is granted it, but not polled yet.
        Release,
        /// Every waiting caller is polled: the one granted the turn takes it.
        Poll,
        /// One of the waiting callers (chosen by the index) is dropped, perhaps the one
        /// granted the turn.
        Cancel(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, proptest::option::of(0u8..3))
                .prop_map(|(priority, tenant)| Op::Enter { priority, tenant }),
            2 => Just(Op::Release),
            2 => Just(Op::Poll),
            2 => any::<usize>().prop_map(Op::Cancel),
        ]
    }

    type Enter<'a> = Pin<Box<dyn Future<Output = Result<Turn<'a>, GateFull>> + 'a>>;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A caller that has not got its turn yet.
    struct Pending<'a> {
        index: usize,
        future: Enter<'a>,
        counter: Arc<Counter>,
        waker: Waker,
        /// How often it should have been woken: once per grant.
        grants: usize,
    }

    impl<'a> Pending<'a> {
        fn poll(&mut self) -> Poll<Result<Turn<'a>, GateFull>> {
            self.future
                .as_mut()
                .poll(&mut Context::from_waker(&self.waker))
        }

        fn woken(&self) -> usize {
            self.counter.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// The model grants the turn to the next waiter, if any.
    fn grant(model: &mut Model, pending: &mut [Pending<'_>]) -> Option<usize> {
        let index = model.pop()?;
        for caller in pending.iter_mut().filter(|caller| caller.index == index) {
            caller.grants += 1;
        }
        Some(index)
    }

    proptest! {
        /// Any sequence of arrivals, releases, polls and cancellations serves callers in
        /// the reference order, wakes exactly the caller granted the turn, and keeps the
        /// bookkeeping consistent.
        #[test]
        fn gate_matches_the_reference_order(ops in proptest::collection::vec(op(), 1..150)) {
            let names = ["tenant-0", "tenant-1", "tenant-2"];
            let capacity = 8;
            let gate = Gate::new(capacity);
            let mut model = Model::default();
            let mut holder: Option<Turn<'_>> = None;
            // The caller granted the turn that has not seen it yet.
            let mut granted: Option<usize> = None;
            let mut pending: Vec<Pending<'_>> = Vec::new();
            let mut next = 0;
            for op in ops {
                match op {
                    Op::Enter { priority, tenant } => {
                        let index = next;
                        next += 1;
                        let name = tenant.map(|t| names[usize::from(t)]);
                        let counter = Arc::new(Counter::default());
                        let mut caller = Pending {
                            index,
                            future: Box::pin(gate.enter(Priority(priority), name)),
                            waker: Waker::from(Arc::clone(&counter)),
                            counter,
                            grants: 0,
                        };
                        let free = holder.is_none() && granted.is_none();
                        match caller.poll() {
                            Poll::Ready(Ok(turn)) => {
                                prop_assert!(free, "two holders");
                                prop_assert!(pending.is_empty());
                                holder = Some(turn);
                            }
                            Poll::Ready(Err(full)) => {
                                prop_assert!(!free);
                                prop_assert_eq!(full.waiting, capacity);
                                prop_assert_eq!(gate.waiting(), capacity);
                            }
                            Poll::Pending => {
                                prop_assert!(!free);
                                model.push(priority, tenant, index);
                                pending.push(caller);
                            }
                        }
                    }
                    Op::Release => {
                        if let Some(turn) = holder.take() {
                            drop(turn);
                            granted = grant(&mut model, &mut pending);
                        }
                    }
                    Op::Poll => {
                        let mut served = None;
                        let mut still = Vec::new();
                        for mut caller in pending.drain(..) {
                            match caller.poll() {
                                Poll::Ready(Ok(turn)) => {
                                    prop_assert!(served.is_none(), "two holders");
                                    prop_assert!(holder.is_none(), "two holders");
                                    served = Some((caller.index, turn));
                                }
                                Poll::Ready(Err(_)) => prop_assert!(false, "a waiter failed"),
                                Poll::Pending => still.push(caller),
                            }
                        }
                        pending = still;
                        prop_assert_eq!(served.as_ref().map(|(i, _)| *i), granted.take());
                        if let Some((_, turn)) = served {
                            holder = Some(turn);
                        }
                    }
                    Op::Cancel(choice) => {
                        if !pending.is_empty() {
                            let caller = pending.remove(choice % pending.len());
                            let index = caller.index;
                            drop(caller);
                            if granted == Some(index) {
                                granted = grant(&mut model, &mut pending);
                            } else {
                                model.remove(index);
                            }
                        }
                    }
                }
                gate.lock().check();
                prop_assert_eq!(gate.waiting() + usize::from(granted.is_some()), pending.len());
                for caller in &pending {
                    prop_assert_eq!(caller.woken(), caller.grants, "caller {}", caller.index);
                }
            }
            drop(pending);
            drop(holder);
            gate.lock().check();
            prop_assert_eq!(gate.waiting(), 0);
            prop_assert!(!gate.lock().held);
        }
    }

    #[test]
    fn long_tenant_names_are_cut_on_a_char_boundary() {
        let name = "é".repeat(200); // 400 bytes
        let key = tenant_key(Some(&name)).unwrap();
        assert!(key.len() <= MAX_TENANT_LEN);
        assert_eq!(key.len(), MAX_TENANT_LEN);
        assert_eq!(tenant_key(None), None);
        assert_eq!(tenant_key(Some("a")).as_deref(), Some("a"));
    }
}
