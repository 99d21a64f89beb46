//! Fixed window at exact instants: windows aligned to the epoch, a request exactly at the
//! boundary and one nanosecond before it, costs above what is left and above the limit,
//! idle windows, and refunds and charges landing on the right window.

use super::{MS, NS, SEC, never, pass, policy, run, run_fresh, wait};
use crate::algorithm::{Algorithm, FixedWindow, WindowState};
use crate::policy::{AlgorithmKind, Policy};
use crate::time::Nanos;

/// 10/s: windows [0, 1 s), [1 s, 2 s), …
fn ten_per_second() -> Policy {
    policy(AlgorithmKind::FixedWindow, "10/s")
}

#[test]
fn full_window_refuses_until_the_boundary_then_starts_afresh() {
    run_fresh::<FixedWindow>(
        &ten_per_second(),
        &[
            pass(0, 4, 6, SEC),
            pass(500 * MS, 6, 0, 500 * MS),
            wait(500 * MS, 1, 0, 500 * MS),
            wait(SEC - NS, 1, 0, NS),
            // Exactly at the boundary: a new window, full capacity.
            pass(SEC, 10, 0, SEC),
            wait(SEC, 1, 0, SEC),
            never(SEC, 11, 0),
            wait(2 * SEC - NS, 10, 0, NS),
            pass(2 * SEC, 1, 9, SEC),
        ],
    );
}

#[test]
fn cost_above_what_is_left_waits_for_the_next_window() {
    run_fresh::<FixedWindow>(
        &ten_per_second(),
        &[
            pass(0, 7, 3, SEC),
            wait(0, 4, 3, SEC),
            wait(999 * MS, 4, 3, MS),
            pass(999 * MS, 3, 0, MS),
            pass(SEC, 4, 6, SEC),
        ],
    );
}

#[test]
fn cost_above_the_limit_is_refused_for_good_without_touching_the_state() {
    run_fresh::<FixedWindow>(
        &ten_per_second(),
        &[
            never(0, 11, 10),
            never(0, u64::MAX, 10),
            pass(0, 3, 7, SEC),
            never(100 * MS, 11, 7),
        ],
    );
}

#[test]
fn windows_align_to_the_epoch_not_to_the_first_request() {
    // 10 per 3 s, first request at 10 s: the window is [9 s, 12 s).
    run_fresh::<FixedWindow>(
        &policy(AlgorithmKind::FixedWindow, "10/3s"),
        &[
            pass(10 * SEC, 10, 0, 2 * SEC),
            wait(12 * SEC - NS, 1, 0, NS),
            pass(12 * SEC, 1, 9, 3 * SEC),
        ],
    );
}

#[test]
fn idle_windows_are_forgotten() {
    let p = ten_per_second();
    let (state, _) = run_fresh::<FixedWindow>(&p, &[pass(0, 10, 0, SEC)]);
    assert_eq!(FixedWindow::expires_at(&p, &state), Nanos::new(SEC));
    let mut later = state;
    run::<FixedWindow>(&p, &mut later, &[pass(7 * SEC + 5 * MS, 10, 0, 995 * MS)]);
    assert_eq!(
        later,
        WindowState {
            start: Nanos::new(7 * SEC),
            previous: 0,
            current: 10
        }
    );
}

#[test]
fn refund_of_this_window_gives_capacity_back_and_of_an_earlier_one_does_nothing() {
    let p = ten_per_second();
    let (mut state, tickets) =
        run_fresh::<FixedWindow>(&p, &[pass(0, 6, 4, SEC), pass(200 * MS, 4, 0, 800 * MS)]);
    // Cancelled in the same window: the units are back.
    FixedWindow::refund(&p, &mut state, &tickets[0], 6, Nanos::new(300 * MS));
    let more = run::<FixedWindow>(&p, &mut state, &[pass(300 * MS, 6, 0, 700 * MS)]);
    // In the next window, refunding last window's tickets frees nothing now.
    run::<FixedWindow>(&p, &mut state, &[pass(SEC, 10, 0, SEC)]);
    FixedWindow::refund(&p, &mut state, &tickets[1], 4, Nanos::new(1100 * MS));
    FixedWindow::settle(&p, &mut state, &more[0], 0, Nanos::new(1100 * MS));
    run::<FixedWindow>(&p, &mut state, &[wait(1100 * MS, 1, 0, 900 * MS)]);
    // A refund never leaves more than a fresh window has.
    let (mut state, tickets) = run_fresh::<FixedWindow>(&p, &[pass(0, 2, 8, SEC)]);
    FixedWindow::refund(&p, &mut state, &tickets[0], 5, Nanos::ZERO);
    run::<FixedWindow>(&p, &mut state, &[pass(0, 10, 0, SEC)]);
}

#[test]
fn charge_lands_on_the_current_window_even_past_the_limit() {
    let p = ten_per_second();
    let (mut state, tickets) = run_fresh::<FixedWindow>(&p, &[pass(800 * MS, 5, 5, 200 * MS)]);
    // Settled 11 higher in the next window: the extra usage counts there, past the limit.
    FixedWindow::settle(&p, &mut state, &tickets[0], 16, Nanos::new(1200 * MS));
    assert_eq!(state.current, 11);
    run::<FixedWindow>(
        &p,
        &mut state,
        &[wait(1200 * MS, 1, 0, 800 * MS), pass(2 * SEC, 10, 0, SEC)],
    );
    // Settled to the same cost: a no-op.
    let before = state;
    FixedWindow::settle(&p, &mut state, &tickets[0], 5, Nanos::new(2 * SEC));
    assert_eq!(state, before);
}
