//! Sliding log at exact instants: each admission slides out exactly one period later
//! (counted in `(t − period, t]`), a request one nanosecond before that, waits that need
//! several admissions to slide out, admissions at one instant sharing one entry, and
//! refunds and charges applied to the admission's own instant.

use std::collections::VecDeque;

use super::{MS, NS, SEC, never, pass, policy, run, run_fresh, wait};
use crate::algorithm::{Algorithm, LogState, SlidingLog};
use crate::policy::{AlgorithmKind, Policy};
use crate::time::Nanos;

/// 10/s: at most 10 in any `(t − 1 s, t]`.
fn ten_per_second() -> Policy {
    policy(AlgorithmKind::SlidingLog, "10/s")
}

#[test]
fn each_admission_slides_out_exactly_one_period_later() {
    run_fresh::<SlidingLog>(
        &ten_per_second(),
        &[
            pass(0, 4, 6, SEC),
            pass(300 * MS, 6, 0, SEC),
            wait(300 * MS, 1, 0, 700 * MS),
            wait(SEC - NS, 1, 0, NS),
            // The 4 admitted at 0 no longer count at exactly 1 s.
            pass(SEC, 4, 0, SEC),
            wait(SEC, 1, 0, 300 * MS),
            // 7 units need both the 6 at 300 ms and the 4 at 1 s to slide out.
            wait(SEC, 7, 0, SEC),
            never(SEC, 11, 0),
            pass(1300 * MS, 6, 0, SEC),
            wait(1300 * MS, 1, 0, 700 * MS),
            // Everything has slid out a period after the newest admission.
            pass(2300 * MS, 10, 0, SEC),
        ],
    );
}

#[test]
fn cost_above_the_limit_is_refused_for_good_without_touching_the_state() {
    run_fresh::<SlidingLog>(
        &ten_per_second(),
        &[
            never(0, 11, 10),
            never(0, u64::MAX, 10),
            pass(0, 9, 1, SEC),
            never(500 * MS, 11, 1),
            wait(500 * MS, 2, 1, 500 * MS),
        ],
    );
}

#[test]
fn admissions_at_one_instant_share_an_entry_and_refunds_take_only_their_part() {
    let p = ten_per_second();
    let (mut state, tickets) = run_fresh::<SlidingLog>(
        &p,
        &[
            pass(5 * SEC, 2, 8, SEC),
            pass(5 * SEC, 3, 5, SEC),
            pass(5 * SEC + NS, 1, 4, SEC),
        ],
    );
    assert_eq!(
        state.entries(),
        &VecDeque::from([(Nanos::new(5 * SEC), 5), (Nanos::new(5 * SEC + NS), 1)])
    );
    // Cancelling the first ticket takes its 2 out of the shared entry.
    SlidingLog::refund(&p, &mut state, &tickets[0], 2, Nanos::new(5500 * MS));
    assert_eq!(state.entries()[0], (Nanos::new(5 * SEC), 3));
    run::<SlidingLog>(
        &p,
        &mut state,
        &[pass(5500 * MS, 6, 0, SEC), wait(6 * SEC - NS, 3, 0, NS)],
    );
    // Settling a ticket to zero removes what is left of its entry.
    SlidingLog::settle(&p, &mut state, &tickets[2], 0, Nanos::new(5500 * MS));
    assert_eq!(state.entries().len(), 2);
    assert_eq!(SlidingLog::expires_at(&p, &state), Nanos::new(6500 * MS));
}

#[test]
fn charge_counts_at_the_admission_instant_only_while_it_is_in_the_window() {
    let p = ten_per_second();
    let (mut state, tickets) = run_fresh::<SlidingLog>(&p, &[pass(0, 4, 6, SEC)]);
    SlidingLog::settle(&p, &mut state, &tickets[0], 7, Nanos::new(500 * MS));
    assert_eq!(state.entries(), &VecDeque::from([(Nanos::ZERO, 7)]));
    // The extra slides out with the admission, at 1 s.
    run::<SlidingLog>(&p, &mut state, &[wait(500 * MS, 4, 3, 500 * MS)]);
    // Once the admission has slid out, charging it limits nothing.
    SlidingLog::charge(&p, &mut state, &tickets[0], 5, Nanos::new(SEC));
    assert_eq!(state, LogState::default());
    run::<SlidingLog>(&p, &mut state, &[pass(SEC, 10, 0, SEC)]);
}
