//! The memory lines and the waiting loop, at exact instants on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::queue::{Overflow, QueueConfig, Refusal};
use sluice_core::{Clock, Key, ManualClock, Nanos, Policy};

use super::*;
use crate::MemoryStore;

const START: Nanos = Nanos::new(3_600_000_000_000);

fn queues() -> (MemoryQueues<Arc<ManualClock>>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    (
        MemoryQueues::new(MemoryStore::with_clock(Arc::clone(&clock))),
        clock,
    )
}

fn key() -> Key {
    Key::new("api", [("user", "42")]).unwrap()
}

fn config(max_length: usize, overflow: Overflow) -> QueueConfig {
    QueueConfig {
        max_length,
        overflow,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One limit on one key, and a line for it.
struct Fixture {
    key: Key,
    policy: Policy,
}

impl Fixture {
    fn new(rate: &str) -> Self {
        Self {
            key: key(),
            policy: Policy::parse("gcra", rate).unwrap(),
        }
    }

    fn limits(&self) -> [Limit<'_>; 1] {
        [Limit::new(&self.key, &self.policy)]
    }

    fn line<'a>(
        &'a self,
        limits: &'a [Limit<'a>],
        max_length: usize,
        overflow: Overflow,
    ) -> Line<'a> {
        Line {
            key: &self.key,
            limits,
            config: config(max_length, overflow),
        }
    }
}

/// A request of one unit.
fn request(priority: i32, tenant: Option<&str>, max_wait: Duration) -> Request<'_> {
    Request {
        cost: 1,
        priority,
        tenant,
        max_wait,
    }
}

#[test]
fn an_empty_line_grants_at_once_and_keeps_nothing() {
    let (q, _clock) = queues();
    let fixture = Fixture::new("2/s");
    let limits = fixture.limits();
    let line = fixture.line(&limits, 5, Overflow::RejectNew);
    let request = request(0, None, ms(10_000));
    assert!(matches!(q.join_now(line, request), Ok(Joined::Granted(v)) if v.allowed));
    assert_eq!(q.lines(), 0, "an idle line is forgotten");
}

#[test]
fn a_line_on_two_per_second_grants_one_every_500ms_in_order() {
    let (q, clock) = queues();
    let fixture = Fixture::new("2/s");
    let limits = fixture.limits();
    let line = fixture.line(&limits, 5, Overflow::RejectNew);
    let join = |priority, tenant| {
        q.join_now(line, request(priority, tenant, ms(10_000)))
            .unwrap()
    };
    // 2/s: a burst of 2 at once (GCRA's capacity), then one every 500 ms.
    let mut waiting = Vec::new();
    let mut granted_at_once = 0;
    let mut refused = 0;
    for i in 0..10 {
        match join(0, Some(if i % 2 == 0 { "a" } else { "b" })) {
            Joined::Granted(_) => granted_at_once += 1,
            Joined::Waiting(ticket) => waiting.push(ticket),
            Joined::Refused(refusal) => {
                assert_eq!(refusal, Refusal::Overflow);
                refused += 1;
            }
        }
    }
    assert_eq!((granted_at_once, waiting.len(), refused), (2, 5, 3));
    // A priority-5 waiter arrives behind them, but the line is full.
    assert_eq!(join(5, None), Joined::Refused(Refusal::Overflow));
    let served = q.serve_now(line);
    assert!(served.granted.is_empty());
    assert_eq!(served.next_at, Some(START.plus_nanos(500_000_000)));
    let mut order = Vec::new();
    for step in 1..=5_u64 {
        clock.set(START.plus_nanos(step * 500_000_000));
        let served = q.serve_now(line);
        assert_eq!(served.granted.len(), 1, "one every 500 ms");
        order.extend(served.granted);
    }
    assert_eq!(
        order, waiting,
        "first come, first served within tenants in turns"
    );
    for ticket in waiting {
        assert!(matches!(
            q.status_now(line, ticket),
            TicketStatus::Granted(_)
        ));
        assert_eq!(
            q.status_now(line, ticket),
            TicketStatus::Unknown,
            "reported once"
        );
    }
}

#[test]
fn a_higher_priority_goes_first_and_evicts_the_lowest_when_full() {
    let (q, clock) = queues();
    let fixture = Fixture::new("1/s");
    let limits = fixture.limits();
    let line = fixture.line(&limits, 2, Overflow::EvictLowestPriority);
    let join = |priority| {
        q.join_now(line, request(priority, None, ms(60_000)))
            .unwrap()
    };
    assert!(matches!(join(0), Joined::Granted(_)));
    let Joined::Waiting(low_old) = join(0) else {
        panic!()
    };
    let Joined::Waiting(low_new) = join(0) else {
        panic!()
    };
    let Joined::Waiting(high) = join(5) else {
        panic!()
    };
    assert_eq!(q.status_now(line, low_new), TicketStatus::Evicted);
    clock.set(START.plus_nanos(1_000_000_000));
    assert_eq!(q.serve_now(line).granted, [high]);
    clock.set(START.plus_nanos(2_000_000_000));
    assert_eq!(q.serve_now(line).granted, [low_old]);
    let stats = q.stats_now(line);
    // Counted since the line was last idle (and forgotten): the first grant came before.
    assert_eq!((stats.granted, stats.evicted, stats.overflow), (2, 1, 0));
}

#[test]
fn a_waiter_times_out_at_its_deadline_and_a_paused_line_grants_nothing() {
    let (q, clock) = queues();
    let fixture = Fixture::new("1/s");
    let limits = fixture.limits();
    let line = fixture.line(&limits, 5, Overflow::RejectNew);
    let request = |max_wait| request(0, None, max_wait);
    assert!(matches!(
        q.join_now(line, request(ms(0))),
        Ok(Joined::Granted(_))
    ));
    let Ok(Joined::Waiting(short)) = q.join_now(line, request(ms(300))) else {
        panic!()
    };
    let Ok(Joined::Waiting(long)) = q.join_now(line, request(ms(5_000))) else {
        panic!()
    };
    assert_eq!(
        q.serve_now(line).next_at,
        Some(START.plus_nanos(300_000_000))
    );
    clock.set(START.plus_nanos(300_000_000));
    q.serve_now(line);
    assert_eq!(q.status_now(line, short), TicketStatus::TimedOut);
    q.set_paused_now(line, true).unwrap();
    clock.set(START.plus_nanos(2_000_000_000));
    assert!(q.serve_now(line).granted.is_empty(), "paused");
    assert!(q.stats_now(line).paused);
    assert_eq!(q.stats_now(line).waiting_by_priority, [(0, 1)]);
    q.set_paused_now(line, false).unwrap();
    assert_eq!(q.serve_now(line).granted, [long]);
    assert!(
        matches!(q.leave_now(line, long), TicketStatus::Granted(v) if v.allowed),
        "leaving after the grant says so: the caller must honour it or give it back"
    );
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_its_turn_and_gives_up_at_max_wait() {
    let (q, clock) = queues();
    let fixture = Fixture::new("2/s");
    let limits = fixture.limits();
    let line = fixture.line(&limits, 5, Overflow::RejectNew);
    let request = |max_wait| request(0, None, max_wait);
    let sleep = |wait: Duration| {
        let clock = Arc::clone(&clock);
        async move { clock.advance(wait) }
    };
    for _ in 0..2 {
        let grant = acquire(&q, line, request(ms(0)), ms(100), sleep)
            .await
            .unwrap();
        assert_eq!(grant.waited, Duration::ZERO);
    }
    let grant = acquire(&q, line, request(ms(10_000)), ms(100), sleep)
        .await
        .unwrap();
    assert_eq!(grant.waited, ms(500), "granted when the limit admits it");
    let refused = acquire(&q, line, request(ms(300)), ms(100), sleep)
        .await
        .unwrap_err();
    assert!(matches!(refused, AcquireError::TimedOut { max_wait } if max_wait == ms(300)));
    assert_eq!(
        clock.now(),
        START.plus_nanos(800_000_000),
        "left at its deadline"
    );
}
