//! Window counters: fixed window and sliding window counter.
//!
//! Windows are aligned to the clock's epoch (`start = now − now mod period`), so every
//! instance reading the same timeline (e.g. Redis `TIME`) agrees on the boundaries.
//!
//! **Bounds.** Fixed window: the admitted cost within any aligned window is at most `limit`
//! (so at most `2 × limit` in any interval of length `period`). Sliding window: the same
//! aligned-window bound, and at each admission the weighted count
//! `previous × (period − elapsed) / period + current` is at most `limit`.

use std::time::Duration;

use super::{Algorithm, until};
use crate::decision::{Decision, Ticket};
use crate::policy::Policy;
use crate::time::Nanos;

/// At most `limit` per aligned window of length `period`.
#[derive(Clone, Copy, Debug, Default)]
pub struct FixedWindow;

/// The current window's count plus the previous window's, weighted by overlap.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlidingWindow;

/// Counts of the window starting at `start` and of the one before it. 24 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WindowState {
    /// Start of the window `current` counts.
    pub start: Nanos,
    /// Cost admitted in the window before `start`.
    pub previous: u64,
    /// Cost admitted since `start`.
    pub current: u64,
}

fn window_start(policy: &Policy, now: Nanos) -> Nanos {
    let n = now.as_u64();
    Nanos::new(n - n % policy.period_nanos())
}

/// `(window start, previous, current)` as of `now`. A state from a later window than
/// `now`'s (a clock that stepped back) counts as current: the safe reading.
fn rolled(policy: &Policy, state: &WindowState, now: Nanos) -> (Nanos, u64, u64) {
    let start = window_start(policy, now);
    if state.start >= start {
        (state.start, state.previous, state.current)
    } else if state.start.plus_nanos(policy.period_nanos()) == start {
        (start, state.current, 0)
    } else {
        (start, 0, 0)
    }
}

fn roll(policy: &Policy, state: &mut WindowState, now: Nanos) {
    let (start, previous, current) = rolled(policy, state, now);
    *state = WindowState {
        start,
        previous,
        current,
    };
}

fn debit(policy: &Policy, state: &mut WindowState, cost: u64, now: Nanos) -> Ticket {
    roll(policy, state, now);
    state.current = state.current.saturating_add(cost);
    Ticket {
        cost,
        at: now,
        lease: 0,
    }
}

/// Gives `amount` back to the window `ticket` debited, if it still counts at `now`.
fn refund_window(
    policy: &Policy,
    state: &mut WindowState,
    ticket: &Ticket,
    amount: u64,
    now: Nanos,
) {
    roll(policy, state, now);
    let ticket_window = window_start(policy, ticket.at);
    if ticket_window == state.start {
        state.current = state.current.saturating_sub(amount);
    } else if ticket_window.plus_nanos(policy.period_nanos()) == state.start {
        state.previous = state.previous.saturating_sub(amount);
    }
}

impl Algorithm for FixedWindow {
    type State = WindowState;

    fn decide(policy: &Policy, state: &WindowState, cost: u64, now: Nanos) -> Decision {
        let (start, _, current) = rolled(policy, state, now);
        let limit = policy.limit();
        let window_end = until(start.plus_nanos(policy.period_nanos()), now);
        // Nothing counted means nothing to reset.
        let reset_after = |counted: u64| {
            if counted == 0 {
                Duration::ZERO
            } else {
                window_end
            }
        };
        let remaining = limit.saturating_sub(current);
        if !policy.admits_cost(cost) {
            Decision::exceeds_capacity(limit, remaining, reset_after(current))
        } else if cost <= remaining {
            Decision::allow(limit, remaining - cost, reset_after(current + cost))
        } else {
            let reset_after = reset_after(current);
            Decision::deny(limit, remaining, reset_after, reset_after)
        }
    }

    fn apply(policy: &Policy, state: &mut WindowState, cost: u64, _: Nanos, now: Nanos) -> Ticket {
        debit(policy, state, cost, now)
    }

    fn refund(policy: &Policy, state: &mut WindowState, ticket: &Ticket, amount: u64, now: Nanos) {
        refund_window(policy, state, ticket, amount, now);
    }

    fn charge(policy: &Policy, state: &mut WindowState, _: &Ticket, amount: u64, now: Nanos) {
        // The extra usage lands on the window current at settle time: the only one that
        // still limits anything.
        debit(policy, state, amount, now);
    }

    fn expires_at(policy: &Policy, state: &WindowState) -> Nanos {
        state.start.plus_nanos(policy.period_nanos())
    }
}

/// Everything in the sliding window computation is scaled by `period` and done in u128,
/// so the weighted count is exact: `weighted × period = previous × (period − elapsed) +
/// current × period`.
struct Weighted {
    period: u128,
    limit_scaled: u128,
    previous_weight: u128,
}

impl Weighted {
    fn new(policy: &Policy, start: Nanos, previous: u64, now: Nanos) -> Self {
        let period = u128::from(policy.period_nanos());
        let elapsed = u128::from(now.as_u64().saturating_sub(start.as_u64())).min(period);
        Self {
            period,
            limit_scaled: u128::from(policy.limit()) * period,
            previous_weight: u128::from(previous) * (period - elapsed),
        }
    }

    /// Whole units left if `used` units are counted in the current window.
    fn remaining(&self, used: u64) -> u64 {
        let used_scaled = self.previous_weight + u128::from(used) * self.period;
        let left = self.limit_scaled.saturating_sub(used_scaled) / self.period;
        u64::try_from(left).unwrap_or(u64::MAX)
    }

    fn fits(&self, used: u64) -> bool {
        self.previous_weight + u128::from(used) * self.period <= self.limit_scaled
    }
}

/// Elapsed time into a window at which `previous × (period − elapsed) ≤ room × period`
/// first holds.
fn elapsed_when_fits(period: u64, previous: u64, room: u64) -> u64 {
    if previous == 0 {
        return 0;
    }
    let period_wide = u128::from(period);
    let slack = (u128::from(room) * period_wide) / u128::from(previous);
    // slack ≥ period means it already fits at the window start.
    period - u64::try_from(slack.min(period_wide)).unwrap_or(period)
}

impl Algorithm for SlidingWindow {
    type State = WindowState;

    fn decide(policy: &Policy, state: &WindowState, cost: u64, now: Nanos) -> Decision {
        let (start, previous, current) = rolled(policy, state, now);
        let period = policy.period_nanos();
        let limit = policy.limit();
        let weighted = Weighted::new(policy, start, previous, now);
        let reset_at = if current > 0 {
            start.plus_nanos(2 * period)
        } else if previous > 0 {
            start.plus_nanos(period)
        } else {
            now
        };
        let reset_after = until(reset_at, now);
        if !policy.admits_cost(cost) {
            return Decision::exceeds_capacity(limit, weighted.remaining(current), reset_after);
        }
        let wanted = current.saturating_add(cost);
        if weighted.fits(wanted) {
            let reset_after = if wanted == 0 {
                reset_after
            } else {
                until(start.plus_nanos(2 * period), now)
            };
            return Decision::allow(limit, weighted.remaining(wanted), reset_after);
        }
        let retry_at = if wanted <= limit {
            // Fits later in this window, once enough of the previous one slides out.
            start.plus_nanos(elapsed_when_fits(period, previous, limit - wanted))
        } else {
            // Needs the next window, where this window's count becomes the previous one.
            start
                .plus_nanos(period)
                .plus_nanos(elapsed_when_fits(period, current, limit - cost))
        };
        Decision::deny(
            limit,
            weighted.remaining(current),
            reset_after,
            until(retry_at, now).max(Duration::from_nanos(1)),
        )
    }

    fn apply(policy: &Policy, state: &mut WindowState, cost: u64, _: Nanos, now: Nanos) -> Ticket {
        debit(policy, state, cost, now)
    }

    fn refund(policy: &Policy, state: &mut WindowState, ticket: &Ticket, amount: u64, now: Nanos) {
        refund_window(policy, state, ticket, amount, now);
    }

    fn charge(policy: &Policy, state: &mut WindowState, _: &Ticket, amount: u64, now: Nanos) {
        debit(policy, state, amount, now);
    }

    fn expires_at(policy: &Policy, state: &WindowState) -> Nanos {
        state.start.plus_nanos(2 * policy.period_nanos())
    }
}
