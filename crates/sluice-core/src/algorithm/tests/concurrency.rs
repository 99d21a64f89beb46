//! Concurrency leases at exact instants: at most `limit` units held, each lease expiring
//! one period after it was taken (and one nanosecond before that still held), waits for
//! several leases to expire, release by refunding the full cost, partial refunds, charges
//! growing a lease, and refunds of expired leases doing nothing.

use super::{NS, SEC, never, pass, policy, run, run_fresh, wait};
use crate::algorithm::{Algorithm, Concurrency, Lease, LeaseState};
use crate::policy::{AlgorithmKind, Policy};
use crate::time::Nanos;

/// At most 3 in flight; a lease nobody releases frees itself after 10 s.
fn three_in_flight() -> Policy {
    policy(AlgorithmKind::Concurrency, "3/10s")
}

#[test]
fn leases_hold_capacity_until_they_expire_one_period_later() {
    run_fresh::<Concurrency>(
        &three_in_flight(),
        &[
            pass(0, 1, 2, 10 * SEC),
            pass(2 * SEC, 1, 1, 10 * SEC),
            pass(4 * SEC, 1, 0, 10 * SEC),
            // The lease taken at 0 expires first, at 10 s.
            wait(5 * SEC, 1, 0, 5 * SEC),
            // Two units need the leases of 0 and 2 s to expire.
            wait(5 * SEC, 2, 0, 7 * SEC),
            never(5 * SEC, 4, 0),
            wait(10 * SEC - NS, 1, 0, NS),
            pass(10 * SEC, 1, 0, 10 * SEC),
            wait(10 * SEC, 1, 0, 2 * SEC),
            // At 14 s only the lease of 10 s is held.
            pass(14 * SEC, 2, 0, 10 * SEC),
            wait(14 * SEC, 1, 0, 6 * SEC),
        ],
    );
}

#[test]
fn refunding_the_full_cost_releases_the_lease_and_a_partial_refund_shrinks_it() {
    let p = three_in_flight();
    let (mut state, tickets) =
        run_fresh::<Concurrency>(&p, &[pass(0, 2, 1, 10 * SEC), pass(SEC, 1, 0, 10 * SEC)]);
    assert_ne!(
        tickets[0].lease, tickets[1].lease,
        "each admission has its lease"
    );
    run::<Concurrency>(&p, &mut state, &[wait(2 * SEC, 1, 0, 8 * SEC)]);

    // Released: the two units are free at once.
    Concurrency::refund(&p, &mut state, &tickets[0], 2, Nanos::new(3 * SEC));
    assert_eq!(state.leases.len(), 1);
    let more = run::<Concurrency>(&p, &mut state, &[pass(3 * SEC, 2, 0, 10 * SEC)]);

    // Settled to 1 of 2: one unit back, the lease still held.
    Concurrency::settle(&p, &mut state, &more[0], 1, Nanos::new(4 * SEC));
    run::<Concurrency>(
        &p,
        &mut state,
        &[pass(4 * SEC, 1, 0, 10 * SEC), wait(4 * SEC, 1, 0, 7 * SEC)],
    );
}

#[test]
fn charge_grows_the_lease_and_refunds_of_expired_leases_do_nothing() {
    let p = three_in_flight();
    let (mut state, tickets) = run_fresh::<Concurrency>(&p, &[pass(30 * SEC, 1, 2, 10 * SEC)]);
    Concurrency::settle(&p, &mut state, &tickets[0], 3, Nanos::new(31 * SEC));
    assert_eq!(state.leases[0].cost, 3);
    run::<Concurrency>(&p, &mut state, &[wait(31 * SEC, 1, 0, 9 * SEC)]);
    // Expired on its own at 40 s: a late cancel finds nothing and takes nothing.
    Concurrency::refund(&p, &mut state, &tickets[0], 1, Nanos::new(40 * SEC));
    assert!(state.leases.is_empty());
    run::<Concurrency>(&p, &mut state, &[pass(40 * SEC, 3, 0, 10 * SEC)]);
}

#[test]
fn a_zero_cost_check_takes_no_lease_and_nothing_held_means_nothing_to_reset() {
    let p = three_in_flight();
    let (state, tickets) = run_fresh::<Concurrency>(&p, &[pass(SEC, 0, 3, 0)]);
    assert_eq!(tickets[0].lease, 0);
    assert!(state.leases.is_empty());
}

#[test]
fn lease_ids_are_unique_and_start_at_now_so_they_survive_eviction() {
    let p = three_in_flight();
    let (state, tickets) = run_fresh::<Concurrency>(
        &p,
        &[pass(7 * SEC, 1, 2, 10 * SEC), pass(7 * SEC, 1, 1, 10 * SEC)],
    );
    assert_eq!(tickets[0].lease, 7 * SEC);
    assert_eq!(tickets[1].lease, 7 * SEC + 1);
    assert_eq!(
        state.leases[1],
        Lease {
            id: 7 * SEC + 1,
            cost: 1,
            expires_at: Nanos::new(17 * SEC)
        }
    );
    assert_eq!(Concurrency::expires_at(&p, &state), Nanos::new(17 * SEC));
    // After the state expired and was dropped, new ids start past the old ones.
    let (_, later) = run_fresh::<Concurrency>(&p, &[pass(17 * SEC, 1, 2, 10 * SEC)]);
    assert!(later[0].lease > tickets[1].lease);
    assert_eq!(
        Concurrency::expires_at(&p, &LeaseState::default()),
        Nanos::ZERO
    );
}
