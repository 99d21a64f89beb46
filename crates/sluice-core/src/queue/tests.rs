//! The line against a plain reference model, and scripted cases.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

fn t(name: &str) -> Tenant {
    Some(Arc::from(name))
}

fn at(n: u64) -> Nanos {
    Nanos::new(n)
}

fn line(max_length: usize, overflow: Overflow) -> Queue<i32, &'static str> {
    Queue::new(QueueConfig {
        max_length,
        overflow,
    })
}

fn drain<P: Ord + Copy, T>(q: &mut Queue<P, T>) -> Vec<T> {
    std::iter::from_fn(|| q.pop()).map(|w| w.value).collect()
}

#[test]
fn priority_then_tenant_turns_then_arrival() {
    let mut q = line(10, Overflow::RejectNew);
    let far = at(100);
    for (priority, tenant, value) in [
        (0, t("a"), "a1"),
        (0, t("a"), "a2"),
        (0, t("a"), "a3"),
        (0, t("b"), "b1"),
        (0, None, "n1"),
        (7, t("a"), "urgent"),
        (0, t("b"), "b2"),
    ] {
        q.push(priority, tenant, far, value, at(0)).unwrap();
    }
    assert_eq!(q.len_by_priority(), [(7, 1), (0, 6)]);
    assert_eq!(q.head().map(|w| w.value), Some("urgent"));
    assert_eq!(
        drain(&mut q),
        ["urgent", "a1", "b1", "n1", "a2", "b2", "a3"]
    );
}

#[test]
fn a_tenant_that_leaves_the_head_keeps_its_turn() {
    let mut q = line(10, Overflow::RejectNew);
    let a1 = q.push(0, t("a"), at(9), "a1", at(0)).unwrap().id;
    q.push(0, t("a"), at(9), "a2", at(0)).unwrap();
    q.push(0, t("b"), at(9), "b1", at(0)).unwrap();
    // a1 gives up: a is still first in the round.
    assert_eq!(q.remove(a1).map(|w| w.value), Some("a1"));
    assert_eq!(drain(&mut q), ["a2", "b1"]);
    assert_eq!(q.remove(a1), None, "gone");
}

#[test]
fn a_full_line_follows_its_overflow_strategy() {
    let far = at(100);
    let mut q = line(2, Overflow::RejectNew);
    q.push(0, None, far, "first", at(0)).unwrap();
    q.push(0, None, far, "second", at(1)).unwrap();
    assert_eq!(q.push(9, None, far, "third", at(2)), Err(Refusal::Overflow));

    let mut q = line(2, Overflow::DropOldest);
    q.push(5, None, far, "first", at(0)).unwrap();
    q.push(0, None, far, "second", at(1)).unwrap();
    let joined = q.push(0, None, far, "third", at(2)).unwrap();
    assert_eq!(joined.evicted.map(|w| w.value), Some("first"));
    assert_eq!(drain(&mut q), ["second", "third"]);

    let mut q = line(3, Overflow::EvictLowestPriority);
    q.push(1, None, far, "low-old", at(0)).unwrap();
    q.push(1, None, far, "low-new", at(1)).unwrap();
    q.push(4, None, far, "high", at(2)).unwrap();
    assert_eq!(
        q.push(1, None, far, "low-late", at(3)),
        Err(Refusal::Overflow),
        "nobody below priority 1 to evict"
    );
    let joined = q.push(2, None, far, "mid", at(4)).unwrap();
    assert_eq!(joined.evicted.map(|w| w.value), Some("low-new"));
    assert_eq!(drain(&mut q), ["high", "mid", "low-old"]);

    let mut q = line(0, Overflow::DropOldest);
    assert_eq!(q.push(0, None, far, "x", at(0)), Err(Refusal::Overflow));
}

#[test]
fn a_paused_line_keeps_its_waiters_and_turns_newcomers_away_only_when_full() {
    let far = at(100);
    let mut q = line(2, Overflow::DropOldest);
    q.push(0, None, far, "first", at(0)).unwrap();
    q.pause();
    assert!(q.is_paused());
    assert_eq!(q.pop(), None);
    q.push(0, None, far, "second", at(1)).unwrap();
    assert_eq!(
        q.push(0, None, far, "third", at(2)),
        Err(Refusal::Paused),
        "full while paused: nobody is dropped"
    );
    assert_eq!(q.len(), 2);
    q.resume();
    assert_eq!(drain(&mut q), ["first", "second"]);
}

#[test]
fn deadlines_expire_soonest_first() {
    let mut q = line(10, Overflow::RejectNew);
    q.push(0, None, at(30), "late", at(0)).unwrap();
    q.push(0, None, at(10), "soon", at(1)).unwrap();
    q.push(0, None, at(20), "middle", at(2)).unwrap();
    assert_eq!(q.next_deadline(), Some(at(10)));
    assert_eq!(q.oldest(), Some(at(0)));
    assert!(q.expire(at(9)).is_empty());
    let expired: Vec<_> = q.expire(at(20)).into_iter().map(|w| w.value).collect();
    assert_eq!(expired, ["soon", "middle"]);
    assert_eq!(q.next_deadline(), Some(at(30)));
    assert_eq!(drain(&mut q), ["late"]);
    assert_eq!((q.next_deadline(), q.oldest()), (None, None));
}

/// The reference: the same rules, in the plainest way.
#[derive(Debug)]
struct Model {
    config: QueueConfig,
    paused: bool,
    next: u64,
    /// (id, priority, tenant, deadline), in arrival order.
    waiters: Vec<(u64, i32, Option<u8>, u64)>,
    /// Per priority, tenants in round-robin order.
    rounds: BTreeMap<Reverse<i32>, VecDeque<Option<u8>>>,
}

impl Model {
    fn new(config: QueueConfig) -> Self {
        Self {
            config,
            paused: false,
            next: 0,
            waiters: Vec::new(),
            rounds: BTreeMap::new(),
        }
    }

    fn take(&mut self, id: u64) -> Option<(u64, i32, Option<u8>, u64)> {
        let index = self.waiters.iter().position(|w| w.0 == id)?;
        let waiter = self.waiters.remove(index);
        let (_, priority, tenant, _) = waiter;
        let more = self
            .waiters
            .iter()
            .any(|w| w.1 == priority && w.2 == tenant);
        if !more && let Some(round) = self.rounds.get_mut(&Reverse(priority)) {
            round.retain(|&x| x != tenant);
            if round.is_empty() {
                self.rounds.remove(&Reverse(priority));
            }
        }
        Some(waiter)
    }

    fn push(
        &mut self,
        priority: i32,
        tenant: Option<u8>,
        deadline: u64,
    ) -> Result<(u64, Option<u64>), Refusal> {
        let mut evicted = None;
        if self.waiters.len() >= self.config.max_length {
            if self.paused {
                return Err(Refusal::Paused);
            }
            let victim = match self.config.overflow {
                Overflow::RejectNew => None,
                Overflow::DropOldest => self.waiters.first().map(|w| w.0),
                Overflow::EvictLowestPriority => {
                    let lowest = self.waiters.iter().map(|w| w.1).min();
                    lowest
                        .filter(|&l| l < priority)
                        .and_then(|l| self.waiters.iter().filter(|w| w.1 == l).map(|w| w.0).max())
                }
            };
            let Some(victim) = victim else {
                return Err(Refusal::Overflow);
            };
            evicted = self.take(victim).map(|w| w.0);
        }
        let id = self.next;
        self.next += 1;
        let round = self.rounds.entry(Reverse(priority)).or_default();
        if !round.contains(&tenant) {
            round.push_back(tenant);
        }
        self.waiters.push((id, priority, tenant, deadline));
        Ok((id, evicted))
    }

    fn head(&self) -> Option<u64> {
        let (Reverse(priority), round) = self.rounds.iter().next()?;
        let tenant = *round.front()?;
        self.waiters
            .iter()
            .find(|w| w.1 == *priority && w.2 == tenant)
            .map(|w| w.0)
    }

    fn pop(&mut self) -> Option<u64> {
        if self.paused {
            return None;
        }
        let id = self.head()?;
        let (_, priority, tenant, _) = self.take(id)?;
        if let Some(round) = self.rounds.get_mut(&Reverse(priority))
            && round.front() == Some(&tenant)
        {
            round.pop_front();
            round.push_back(tenant);
        }
        Some(id)
    }

    fn expire(&mut self, now: u64) -> Vec<u64> {
        let mut due: Vec<(u64, u64)> = self
            .waiters
            .iter()
            .filter(|w| w.3 <= now)
            .map(|w| (w.3, w.0))
            .collect();
        due.sort_unstable();
        for &(_, id) in &due {
            self.take(id);
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push {
        priority: i32,
        tenant: Option<u8>,
        wait: u64,
    },
    Pop,
    Remove(usize),
    Advance(u64),
    Pause,
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0_i32..3, proptest::option::of(0_u8..3), 0_u64..50)
            .prop_map(|(priority, tenant, wait)| Op::Push { priority, tenant, wait }),
        3 => Just(Op::Pop),
        1 => any::<usize>().prop_map(Op::Remove),
        1 => (0_u64..20).prop_map(Op::Advance),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
    ]
}

fn overflow() -> impl Strategy<Value = Overflow> {
    proptest::sample::select(Overflow::ALL.to_vec())
}

proptest! {
    /// Any sequence of arrivals, services, departures, time passing, pauses and resumes
    /// serves, refuses, evicts and expires exactly as the reference model does.
    #[test]
    fn the_line_matches_the_reference_model(
        max_length in 0_usize..8,
        overflow in overflow(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let names = ["t0", "t1", "t2"];
        let config = QueueConfig { max_length, overflow };
        let mut q: Queue<i32, u64> = Queue::new(config);
        let mut model = Model::new(config);
        let mut now = 0_u64;
        for op in ops {
            match op {
                Op::Push { priority, tenant, wait } => {
                    let name = tenant.map(|i| Arc::from(names[usize::from(i)]));
                    let got = q.push(priority, name, at(now + wait), now, at(now));
                    let want = model.push(priority, tenant, now + wait);
                    match (got, want) {
                        (Ok(joined), Ok((id, evicted))) => {
                            prop_assert_eq!(joined.id.get(), id);
                            prop_assert_eq!(joined.evicted.map(|w| w.id.get()), evicted);
                        }
                        (Err(got), Err(want)) => prop_assert_eq!(got, want),
                        (got, want) => prop_assert!(false, "{got:?} vs {want:?}"),
                    }
                }
                Op::Pop => prop_assert_eq!(q.pop().map(|w| w.id.get()), model.pop()),
                Op::Remove(choice) => {
                    if !model.waiters.is_empty() {
                        let id = model.waiters[choice % model.waiters.len()].0;
                        model.take(id);
                        prop_assert_eq!(q.remove(WaiterId(id)).map(|w| w.id.get()), Some(id));
                    }
                }
                Op::Advance(by) => {
                    now += by;
                    let got: Vec<u64> = q.expire(at(now)).into_iter().map(|w| w.id.get()).collect();
                    prop_assert_eq!(got, model.expire(now));
                }
                Op::Pause => {
                    q.pause();
                    model.paused = true;
                }
                Op::Resume => {
                    q.resume();
                    model.paused = false;
                }
            }
            prop_assert_eq!(q.len(), model.waiters.len());
            prop_assert_eq!(q.head().map(|w| w.id.get()), model.head());
            let mut by_priority: BTreeMap<Reverse<i32>, usize> = BTreeMap::new();
            for w in &model.waiters {
                *by_priority.entry(Reverse(w.1)).or_default() += 1;
            }
            let want: Vec<(i32, usize)> = by_priority.into_iter().map(|(Reverse(p), n)| (p, n)).collect();
            prop_assert_eq!(q.len_by_priority(), want);
            prop_assert_eq!(
                q.next_deadline().map(|d| d.as_u64()),
                model.waiters.iter().map(|w| w.3).min()
            );
        }
    }
}
