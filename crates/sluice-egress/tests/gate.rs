//! The gate's order of service, its bound and its cancel safety, under tokio (paused time
//! where time matters) and by polling its futures by hand.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use sluice_egress::Priority;
use sluice_egress::{Gate, GateFull};
use tokio::task::JoinHandle;

type Log = Arc<Mutex<Vec<String>>>;

/// Yields until `count` callers wait at the gate.
async fn until_waiting(gate: &Gate, count: usize) {
    for _ in 0..10_000 {
        if gate.waiting() == count {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{} callers wait, not {count}", gate.waiting());
}

/// Spawns a caller that enters, logs `label`, holds the turn for `hold` and leaves; then
/// waits until it is queued.
async fn queue(
    gate: &Arc<Gate>,
    log: &Log,
    priority: u8,
    tenant: Option<&str>,
    label: &str,
    hold: Duration,
) -> JoinHandle<()> {
    let before = gate.waiting();
    let handle = tokio::spawn({
        let gate = Arc::clone(gate);
        let log = Arc::clone(log);
        let tenant = tenant.map(str::to_owned);
        let label = label.to_owned();
        async move {
            let _turn = gate
                .enter(Priority(priority), tenant.as_deref())
                .await
                .expect("room at the gate");
            log.lock().expect("the log").push(label);
            if hold.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(hold).await;
            }
        }
    });
    until_waiting(gate, before + 1).await;
    handle
}

async fn join_all(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        handle.await.expect("a caller panicked");
    }
}

fn logged(log: &Log) -> Vec<String> {
    log.lock().expect("the log").clone()
}

/// Polls a future once, with `waker`.
fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    std::pin::Pin::new(future).poll(&mut Context::from_waker(waker))
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter::default());
    (Arc::clone(&counter), Waker::from(counter))
}

fn woken(counter: &Counter) -> usize {
    counter.0.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn gate_serves_the_highest_priority_first() {
    let gate = Arc::new(Gate::new(100));
    let log = Log::default();
    let turn = gate.enter(Priority::BATCH, None).await.unwrap();
    let mut handles = Vec::new();
    for (priority, label) in [(0, "p0"), (10, "p10a"), (5, "p5"), (10, "p10b"), (1, "p1")] {
        handles.push(queue(&gate, &log, priority, None, label, Duration::ZERO).await);
    }
    assert_eq!(gate.waiting(), 5);
    assert_eq!(
        gate.waiting_by_priority(),
        vec![
            (Priority(10), 2),
            (Priority(5), 1),
            (Priority(1), 1),
            (Priority(0), 1)
        ]
    );
    drop(turn);
    join_all(handles).await;
    assert_eq!(logged(&log), ["p10a", "p10b", "p5", "p1", "p0"]);
    assert_eq!(gate.waiting(), 0);
    assert!(gate.waiting_by_priority().is_empty());
}

#[tokio::test(start_paused = true)]
async fn gate_lets_a_newcomer_of_higher_priority_go_before_waiting_lower_ones() {
    let gate = Arc::new(Gate::new(100));
    let log = Log::default();
    let turn = gate.enter(Priority::BATCH, None).await.unwrap();
    let hold = Duration::from_millis(10);
    let mut handles = Vec::new();
    for label in ["low1", "low2", "low3"] {
        handles.push(queue(&gate, &log, 0, None, label, hold).await);
    }
    drop(turn);
    // low1 holds the turn for 10 ms; a high-priority caller arrives meanwhile.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(logged(&log), ["low1"]);
    handles.push(queue(&gate, &log, 10, None, "high", hold).await);
    assert_eq!(logged(&log), ["low1"], "the holder keeps its turn");
    join_all(handles).await;
    assert_eq!(logged(&log), ["low1", "high", "low2", "low3"]);
}

#[tokio::test(start_paused = true)]
async fn gate_serves_tenants_of_one_priority_in_round_robin() {
    let gate = Arc::new(Gate::new(100));
    let log = Log::default();
    let turn = gate.enter(Priority::BATCH, None).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..10 {
        let label = format!("A{i}");
        handles.push(queue(&gate, &log, 0, Some("A"), &label, Duration::ZERO).await);
    }
    for i in 0..2 {
        let label = format!("B{i}");
        handles.push(queue(&gate, &log, 0, Some("B"), &label, Duration::ZERO).await);
    }
    drop(turn);
    join_all(handles).await;
    assert_eq!(
        logged(&log),
        [
            "A0", "B0", "A1", "B1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn gate_treats_no_tenant_as_a_tenant_of_its_own() {
    let gate = Arc::new(Gate::new(100));
    let log = Log::default();
    let turn = gate.enter(Priority::BATCH, None).await.unwrap();
    let mut handles = Vec::new();
    for (tenant, label) in [
        (None, "n0"),
        (None, "n1"),
        (None, "n2"),
        (Some("x"), "x0"),
        (Some(""), "e0"),
        (Some("x"), "x1"),
    ] {
        handles.push(queue(&gate, &log, 3, tenant, label, Duration::ZERO).await);
    }
    drop(turn);
    join_all(handles).await;
    assert_eq!(logged(&log), ["n0", "x0", "e0", "n1", "x1", "n2"]);
}

#[tokio::test(start_paused = true)]
async fn gate_serves_one_tenant_first_come_first_served() {
    let gate = Arc::new(Gate::new(100));
    let log = Log::default();
    let turn = gate.enter(Priority::INTERACTIVE, Some("t")).await.unwrap();
    let mut handles = Vec::new();
    let labels: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    for label in &labels {
        handles.push(queue(&gate, &log, 10, Some("t"), label, Duration::from_millis(1)).await);
    }
    drop(turn);
    join_all(handles).await;
    assert_eq!(logged(&log), labels);
}

#[tokio::test]
async fn gate_enters_at_once_when_free() {
    let gate = Gate::new(0);
    let waker = Waker::noop();
    let mut first = pin!(gate.enter(Priority::BATCH, Some("t")));
    let Poll::Ready(Ok(turn)) = first.as_mut().poll(&mut Context::from_waker(waker)) else {
        panic!("a free gate made the caller wait");
    };
    // Capacity 0: nobody may wait.
    let full = gate.enter(Priority::INTERACTIVE, None).await.unwrap_err();
    assert_eq!((full.waiting, full.capacity), (0, 0));
    drop(turn);
    let again = pin!(gate.enter(Priority::BATCH, None));
    assert!(matches!(
        again.poll(&mut Context::from_waker(waker)),
        Poll::Ready(Ok(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn gate_turns_away_callers_beyond_its_capacity_until_some_leave() {
    let gate = Arc::new(Gate::new(3));
    assert_eq!(gate.capacity(), 3);
    let log = Log::default();
    let turn = gate.enter(Priority::BATCH, None).await.unwrap();
    let mut handles = Vec::new();
    for label in ["a", "b", "c"] {
        handles.push(queue(&gate, &log, 0, None, label, Duration::ZERO).await);
    }
    let full: GateFull = gate.enter(Priority(255), Some("vip")).await.unwrap_err();
    assert_eq!((full.waiting, full.capacity), (3, 3));
    assert_eq!(full.to_string(), "3 calls are already waiting (capacity 3)");
    assert_eq!(gate.waiting(), 3);

    // One gives up: there is room again.
    let b = handles.remove(1);
    b.abort();
    until_waiting(&gate, 2).await;
    handles.push(queue(&gate, &log, 0, None, "d", Duration::ZERO).await);
    assert!(gate.enter(Priority::BATCH, None).await.is_err());

    drop(turn);
    join_all(handles).await;
    assert_eq!(logged(&log), ["a", "c", "d"]);
    assert_eq!(gate.waiting(), 0);
    let _turn = gate.enter(Priority::BATCH, None).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn gate_forgets_a_waiter_dropped_in_the_queue() {
    let gate = Arc::new(Gate::new(10));
    let log = Log::default();
    let turn = gate.enter(Priority::BATCH, None).await.unwrap();
    let mut handles = Vec::new();
    for (tenant, label) in [("A", "a0"), ("B", "b0"), ("A", "a1"), ("C", "c0")] {
        handles.push(queue(&gate, &log, 2, Some(tenant), label, Duration::ZERO).await);
    }
    // B's only waiter leaves: B leaves the round robin too.
    handles.remove(1).abort();
    until_waiting(&gate, 3).await;
    assert_eq!(gate.waiting_by_priority(), vec![(Priority(2), 3)]);
    drop(turn);
    join_all(handles).await;
    assert_eq!(logged(&log), ["a0", "c0", "a1"]);
    assert_eq!(gate.waiting(), 0);
}

#[test]
fn gate_passes_on_a_turn_granted_to_a_waiter_dropped_before_it_saw_it() {
    let gate = Gate::new(10);
    let (a_woken, a_waker) = counting_waker();
    let (b_woken, b_waker) = counting_waker();
    let (c_woken, c_waker) = counting_waker();
    let mut a = Box::pin(gate.enter(Priority::BATCH, None));
    let Poll::Ready(Ok(turn)) = poll_once(&mut a, &a_waker) else {
        panic!("a free gate made the caller wait");
    };
    let mut b = Box::pin(gate.enter(Priority::BATCH, Some("b")));
    let mut c = Box::pin(gate.enter(Priority::BATCH, Some("c")));
    assert!(poll_once(&mut b, &b_waker).is_pending());
    assert!(poll_once(&mut c, &c_waker).is_pending());
    assert_eq!(gate.waiting(), 2);

    // The turn goes to b, and only b is woken.
    drop(turn);
    assert_eq!((woken(&b_woken), woken(&c_woken)), (1, 0));
    assert_eq!(gate.waiting(), 1);

    // b is dropped before it polls: the turn goes on to c.
    drop(b);
    assert_eq!(woken(&c_woken), 1);
    let Poll::Ready(Ok(turn)) = poll_once(&mut c, &c_waker) else {
        panic!("the turn was lost");
    };
    assert_eq!(gate.waiting(), 0);
    drop(turn);
    drop(a);
    assert_eq!(woken(&a_woken), 0);

    // Nobody holds the turn now.
    let mut d = Box::pin(gate.enter(Priority::BATCH, None));
    assert!(poll_once(&mut d, Waker::noop()).is_ready());
}

#[test]
fn gate_wakes_the_latest_waker_of_a_waiter_once() {
    let gate = Gate::new(10);
    let mut a = Box::pin(gate.enter(Priority::BATCH, None));
    let Poll::Ready(Ok(turn)) = poll_once(&mut a, Waker::noop()) else {
        panic!("a free gate made the caller wait");
    };
    let (old_woken, old_waker) = counting_waker();
    let (new_woken, new_waker) = counting_waker();
    let (other_woken, other_waker) = counting_waker();
    let mut b = Box::pin(gate.enter(Priority::BATCH, None));
    let mut c = Box::pin(gate.enter(Priority::BATCH, None));
    assert!(poll_once(&mut b, &old_waker).is_pending());
    assert!(poll_once(&mut c, &other_waker).is_pending());
    // b moved to another task: the new waker counts.
    assert!(poll_once(&mut b, &new_waker).is_pending());
    drop(turn);
    assert_eq!(
        (woken(&old_woken), woken(&new_woken), woken(&other_woken)),
        (0, 1, 0)
    );
    let Poll::Ready(Ok(turn)) = poll_once(&mut b, &new_waker) else {
        panic!("b was granted the turn");
    };
    // A higher-priority caller arriving now waits for b's turn to end, then goes first.
    let (high_woken, high_waker) = counting_waker();
    let mut high = Box::pin(gate.enter(Priority::INTERACTIVE, None));
    assert!(poll_once(&mut high, &high_waker).is_pending());
    drop(turn);
    assert_eq!((woken(&high_woken), woken(&other_woken)), (1, 0));
    assert!(poll_once(&mut high, &high_waker).is_ready());
}

#[tokio::test(start_paused = true)]
async fn gate_passes_on_a_turn_granted_to_a_task_aborted_before_it_ran() {
    let gate = Arc::new(Gate::new(10));
    let log = Log::default();
    let turn = gate.enter(Priority::BATCH, None).await.unwrap();
    let b = queue(&gate, &log, 0, None, "b", Duration::ZERO).await;
    let c = queue(&gate, &log, 0, None, "c", Duration::ZERO).await;
    // The turn goes to b, which is woken but does not run before it is aborted.
    drop(turn);
    assert_eq!(gate.waiting(), 1);
    b.abort();
    assert!(b.await.unwrap_err().is_cancelled());
    c.await.unwrap();
    assert_eq!(logged(&log), ["c"]);
    assert_eq!(gate.waiting(), 0);
    let _turn = gate.enter(Priority::BATCH, None).await.unwrap();
}

#[test]
fn gate_futures_and_turns_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Gate>();
    let gate = Gate::new(1);
    let future = gate.enter(Priority::BATCH, Some("t"));
    send(&future);
    drop(future);
    assert!(format!("{gate:?}").starts_with("Gate"));
}

/// A tiny xorshift: deterministic pseudo-random numbers for the stress tests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Clears the "someone holds the turn" flag when the holder leaves, even by cancellation.
struct Holding<'a>(&'a AtomicBool);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct Stress {
    gate: Arc<Gate>,
    busy: Arc<AtomicBool>,
    turns: Arc<Vec<AtomicUsize>>,
    /// Under paused time: holders may sleep, and some callers give up after a while.
    /// (The multi-threaded test runs in real time: it only yields.)
    paused: bool,
}

/// How a stress task ended, unless it was aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Served,
    TurnedAway,
    GaveUp,
}

/// What the stress tasks did, in all.
#[derive(Debug, Default)]
struct Tally {
    served: usize,
    turned_away: usize,
    gave_up: usize,
    aborted: usize,
}

impl Stress {
    fn new(tasks: usize, capacity: usize, paused: bool) -> Self {
        Self {
            gate: Arc::new(Gate::new(capacity)),
            busy: Arc::new(AtomicBool::new(false)),
            turns: Arc::new((0..tasks).map(|_| AtomicUsize::new(0)).collect()),
            paused,
        }
    }

    /// Task `index`: enter (perhaps giving up after a while), check it holds the turn
    /// alone, hold it for `hold_ms` (0: one yield), leave.
    fn spawn(&self, index: usize, rng: &mut XorShift) -> JoinHandle<Outcome> {
        let gate = Arc::clone(&self.gate);
        let busy = Arc::clone(&self.busy);
        let turns = Arc::clone(&self.turns);
        let priority = Priority(u8::try_from(rng.below(4)).expect("below 4"));
        let tenant = match rng.below(6) {
            0 => None,
            t => Some(format!("tenant-{t}")),
        };
        let hold_ms = if self.paused { rng.below(3) } else { 0 };
        // A patient caller waits as long as it takes; an impatient one gives up after a
        // few milliseconds, preferring its timer when both are ready (so that it may drop
        // the turn it was just granted).
        let patience =
            (self.paused && rng.below(4) == 0).then(|| Duration::from_millis(rng.below(10)));
        tokio::spawn(async move {
            let entered = match patience {
                None => Some(gate.enter(priority, tenant.as_deref()).await),
                Some(patience) => tokio::select! {
                    biased;
                    () = tokio::time::sleep(patience) => None,
                    entered = gate.enter(priority, tenant.as_deref()) => Some(entered),
                },
            };
            let turn = match entered {
                None => return Outcome::GaveUp,
                Some(Err(_)) => return Outcome::TurnedAway,
                Some(Ok(turn)) => turn,
            };
            assert!(!busy.swap(true, Ordering::SeqCst), "two holders at once");
            let holding = Holding(&busy);
            turns[index].fetch_add(1, Ordering::SeqCst);
            if hold_ms == 0 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(hold_ms)).await;
            }
            drop(holding);
            drop(turn);
            Outcome::Served
        })
    }

    /// Checks every task's outcome and that the gate ends empty and free.
    async fn finish(self, handles: Vec<JoinHandle<Outcome>>, aborted: &[bool]) -> Tally {
        let mut tally = Tally::default();
        for (index, handle) in handles.into_iter().enumerate() {
            let outcome = handle.await;
            let turns = self.turns[index].load(Ordering::SeqCst);
            assert!(turns <= 1, "task {index} got {turns} turns");
            match outcome {
                Ok(Outcome::Served) => {
                    assert_eq!(turns, 1, "task {index} finished without its turn");
                    tally.served += 1;
                }
                Ok(Outcome::TurnedAway) => {
                    assert_eq!(turns, 0);
                    tally.turned_away += 1;
                }
                Ok(Outcome::GaveUp) => {
                    assert_eq!(turns, 0);
                    tally.gave_up += 1;
                }
                Err(e) => {
                    assert!(e.is_cancelled());
                    assert!(aborted[index], "task {index} failed: {e}");
                    tally.aborted += 1;
                }
            }
        }
        assert_eq!(self.gate.waiting(), 0);
        assert!(self.gate.waiting_by_priority().is_empty());
        assert!(!self.busy.load(Ordering::SeqCst));
        let mut last = Box::pin(self.gate.enter(Priority::BATCH, None));
        assert!(
            poll_once(&mut last, Waker::noop()).is_ready(),
            "the gate is still held"
        );
        tally
    }
}

#[tokio::test(start_paused = true)]
async fn gate_stress_gives_every_caller_one_turn_alone() {
    const TASKS: usize = 200;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let stress = Stress::new(TASKS, TASKS, true);
    let mut handles = Vec::new();
    let mut aborted = vec![false; TASKS];
    for index in 0..TASKS {
        handles.push(stress.spawn(index, &mut rng));
        // Now and then let time pass, and abort a random earlier task.
        match rng.below(8) {
            0 => tokio::time::sleep(Duration::from_millis(rng.below(5))).await,
            1 => tokio::task::yield_now().await,
            2 => {
                let victim = usize::try_from(rng.below(index as u64 + 1)).expect("an index");
                handles[victim].abort();
                aborted[victim] = true;
            }
            _ => {}
        }
    }
    let tally = stress.finish(handles, &aborted).await;
    assert_eq!(tally.turned_away, 0);
    assert_eq!(
        tally.served + tally.gave_up + tally.aborted,
        TASKS,
        "{tally:?}"
    );
    assert!(tally.aborted > 5 && tally.gave_up > 5, "{tally:?}");
}

#[tokio::test(start_paused = true)]
async fn gate_stress_with_a_small_capacity_turns_the_excess_away() {
    const TASKS: usize = 200;
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let stress = Stress::new(TASKS, 16, true);
    let mut handles = Vec::new();
    let mut aborted = vec![false; TASKS];
    for index in 0..TASKS {
        handles.push(stress.spawn(index, &mut rng));
        if rng.below(4) == 0 {
            let victim = usize::try_from(rng.below(index as u64 + 1)).expect("an index");
            handles[victim].abort();
            aborted[victim] = true;
        }
        if rng.below(10) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
        }
        assert!(stress.gate.waiting() <= 16);
    }
    let tally = stress.finish(handles, &aborted).await;
    assert!(tally.turned_away > 0 && tally.served > 16, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gate_stress_across_threads() {
    const TASKS: usize = 200;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let stress = Stress::new(TASKS, TASKS, false);
    let mut handles = Vec::new();
    let mut aborted = vec![false; TASKS];
    for index in 0..TASKS {
        handles.push(stress.spawn(index, &mut rng));
        if rng.below(5) == 0 {
            let victim = usize::try_from(rng.below(index as u64 + 1)).expect("an index");
            handles[victim].abort();
            aborted[victim] = true;
        }
        if rng.below(3) == 0 {
            tokio::task::yield_now().await;
        }
    }
    let tally = stress.finish(handles, &aborted).await;
    assert_eq!((tally.turned_away, tally.gave_up), (0, 0));
}
