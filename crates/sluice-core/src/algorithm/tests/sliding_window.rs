//! Sliding window counter at exact instants: the previous window's count sliding out
//! linearly, the boundary where it still counts in full, a request one nanosecond before
//! it fits, costs that must wait for the next window, idle windows, and refunds and
//! charges changing the right count.

use super::{MS, NS, SEC, never, pass, policy, run, run_fresh, wait};
use crate::algorithm::{Algorithm, SlidingWindow, WindowState};
use crate::policy::{AlgorithmKind, Policy};
use crate::time::Nanos;

/// 10/s: weighted count `previous × (1 s − elapsed) / 1 s + current ≤ 10`.
fn ten_per_second() -> Policy {
    policy(AlgorithmKind::SlidingWindow, "10/s")
}

#[test]
fn previous_window_slides_out_linearly() {
    run_fresh::<SlidingWindow>(
        &ten_per_second(),
        &[
            pass(0, 10, 0, 2 * SEC),
            // 11 units never fit in one window: wait until 9 of the 10 have slid out.
            wait(0, 1, 0, 1100 * MS),
            wait(SEC - NS, 1, 0, 100 * MS + NS),
            // At the boundary the previous window still counts in full.
            wait(SEC, 1, 0, 100 * MS),
            wait(1100 * MS - NS, 1, 0, NS),
            pass(1100 * MS, 1, 0, 1900 * MS),
            wait(1100 * MS, 1, 0, 100 * MS),
            // Half way: 10 × 0.5 + 1 = 6 counted, 4 left.
            pass(1500 * MS, 4, 0, 1500 * MS),
            // One nanosecond before the next window: 10 × 1ns/1s + 5 > 5, so 4 left.
            wait(2 * SEC - NS, 5, 4, NS),
            // At the boundary: the 5 of the last window count in full.
            pass(2 * SEC, 5, 0, 2 * SEC),
            // A window later: 5 × 0.5 + 7 = 9.5.
            pass(3500 * MS, 7, 0, 1500 * MS),
            wait(3500 * MS, 1, 0, 100 * MS),
            // A whole idle window forgets both counts.
            pass(5 * SEC, 10, 0, 2 * SEC),
        ],
    );
}

#[test]
fn cost_above_what_is_left_waits_until_enough_has_slid_out_of_the_next_window() {
    // 6 now, 5 more: fits once 6 × (1 − e) ≤ 5, e = 166_666_667 ns into the next window.
    let fits = SEC + 166_666_667;
    run_fresh::<SlidingWindow>(
        &ten_per_second(),
        &[
            pass(0, 6, 4, 2 * SEC),
            wait(0, 5, 4, fits),
            wait(fits - NS, 5, 4, NS),
            pass(fits, 5, 0, 3 * SEC - fits),
        ],
    );
}

#[test]
fn cost_above_the_limit_is_refused_for_good_without_touching_the_state() {
    run_fresh::<SlidingWindow>(
        &ten_per_second(),
        &[
            never(0, 11, 10),
            never(0, u64::MAX, 10),
            pass(0, 4, 6, 2 * SEC),
            never(SEC, 11, 6),
        ],
    );
}

#[test]
fn state_rolls_one_window_at_a_time_and_expires_two_windows_after_its_start() {
    let p = ten_per_second();
    let (state, _) = run_fresh::<SlidingWindow>(&p, &[pass(200 * MS, 3, 7, 1800 * MS)]);
    assert_eq!(SlidingWindow::expires_at(&p, &state), Nanos::new(2 * SEC));
    let (mut rolled, _) = run_fresh::<SlidingWindow>(&p, &[pass(200 * MS, 3, 7, 1800 * MS)]);
    run::<SlidingWindow>(&p, &mut rolled, &[pass(SEC, 1, 6, 2 * SEC)]);
    assert_eq!(
        rolled,
        WindowState {
            start: Nanos::new(SEC),
            previous: 3,
            current: 1
        }
    );
    // From expires_at on, the state decides like a fresh one.
    let at = SlidingWindow::expires_at(&p, &state);
    for cost in [1, 10, 11] {
        assert_eq!(
            SlidingWindow::decide(&p, &state, cost, at),
            SlidingWindow::decide(&p, &WindowState::default(), cost, at)
        );
    }
}

#[test]
fn refund_of_the_previous_window_lowers_its_weight_and_charge_lands_on_the_current() {
    let p = ten_per_second();
    let (mut state, tickets) = run_fresh::<SlidingWindow>(&p, &[pass(0, 10, 0, 2 * SEC)]);
    // At 1.5 s the previous 10 weigh 5; refunding 4 of them leaves 6 weighing 3.
    SlidingWindow::refund(&p, &mut state, &tickets[0], 4, Nanos::new(1500 * MS));
    assert_eq!(state.previous, 6);
    run::<SlidingWindow>(&p, &mut state, &[pass(1500 * MS, 7, 0, 1500 * MS)]);
    // A charge of 2 lands on the current window: 3 + 9 leaves room for 1 only at 2 s.
    SlidingWindow::settle(&p, &mut state, &tickets[0], 12, Nanos::new(1500 * MS));
    assert_eq!((state.previous, state.current), (6, 9));
    run::<SlidingWindow>(&p, &mut state, &[wait(1500 * MS, 1, 0, 500 * MS)]);
    // In the window after, the first ticket is two windows old: refunding it only rolls.
    SlidingWindow::refund(&p, &mut state, &tickets[0], 6, Nanos::new(2500 * MS));
    assert_eq!(
        state,
        WindowState {
            start: Nanos::new(2 * SEC),
            previous: 9,
            current: 0
        }
    );
}
