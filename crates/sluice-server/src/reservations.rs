//! Reservations granted over the API and not yet settled or cancelled.
//!
//! A client holds only an opaque id; the [`Reservation`] itself stays here. Each id is
//! single-use: settling or cancelling takes it out of the table first, so a retried or
//! replayed cancel can never give back capacity twice (which would free other clients'
//! units). Ids are 128 bits drawn from per-process random hash keys, so one client cannot
//! guess another's. The table is bounded; entries nobody settles expire once their
//! reservation is moot.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sluice_core::Nanos;
use sluice_core::time::duration_nanos;
use sluice_store::Reservation;

/// How many inserts pass between two sweeps of expired entries.
const SWEEP_EVERY: u32 = 1024;

/// The table was full of live reservations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many outstanding reservations (at most {0}); settle or cancel some first")]
pub struct ReservationsFull(pub usize);

/// Outstanding reservations by id.
#[derive(Debug)]
pub(crate) struct Reservations {
    table: Mutex<Table>,
    capacity: usize,
    counter: AtomicU64,
    high: RandomState,
    low: RandomState,
}

#[derive(Debug, Default)]
struct Table {
    held: HashMap<u128, Held>,
    inserts_since_sweep: u32,
}

#[derive(Debug)]
struct Held {
    reservation: Reservation,
    expires_at: Nanos,
}

impl Reservations {
    /// An empty table holding at most `capacity` reservations.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            table: Mutex::default(),
            capacity,
            counter: AtomicU64::new(0),
            high: RandomState::new(),
            low: RandomState::new(),
        }
    }

    /// Keeps `reservation` until `now + ttl`, and returns its id.
    pub(crate) fn insert(
        &self,
        reservation: Reservation,
        now: Nanos,
        ttl: Duration,
    ) -> Result<String, ReservationsFull> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = (u128::from(self.high.hash_one(n)) << 64) | u128::from(self.low.hash_one(n));
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.inserts_since_sweep += 1;
        if table.held.len() >= self.capacity || table.inserts_since_sweep >= SWEEP_EVERY {
            table.held.retain(|_, held| held.expires_at > now);
            table.inserts_since_sweep = 0;
        }
        if table.held.len() >= self.capacity {
            return Err(ReservationsFull(self.capacity));
        }
        let expires_at = now.plus_nanos(duration_nanos(ttl));
        table.held.insert(
            id,
            Held {
                reservation,
                expires_at,
            },
        );
        Ok(format!("{id:032x}"))
    }

    /// Takes the reservation `id` out of the table, if it is there and not expired.
    pub(crate) fn take(&self, id: &str, now: Nanos) -> Option<Reservation> {
        if id.len() != 32 {
            return None;
        }
        let id = u128::from_str_radix(id, 16).ok()?;
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let held = table.held.remove(&id)?;
        (held.expires_at > now).then_some(held.reservation)
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::Verdict;

    use super::*;

    fn reservation() -> Reservation {
        Reservation::new(
            &[],
            Verdict::from_decisions(Vec::new()),
            Vec::new(),
            Nanos::new(0),
        )
    }

    const SEC: Duration = Duration::from_secs(1);

    /// How many reservations `table` holds.
    fn held(table: &Reservations) -> usize {
        table
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
            .len()
    }

    #[test]
    fn an_id_is_taken_once() {
        let table = Reservations::new(4);
        let id = table.insert(reservation(), Nanos::new(0), SEC).unwrap();
        assert_eq!(id.len(), 32);
        assert!(table.take(&id, Nanos::new(1)).is_some());
        assert!(table.take(&id, Nanos::new(1)).is_none());
    }

    #[test]
    fn ids_differ_and_garbage_is_unknown() {
        let table = Reservations::new(4);
        let a = table.insert(reservation(), Nanos::new(0), SEC).unwrap();
        let b = table.insert(reservation(), Nanos::new(0), SEC).unwrap();
        assert_ne!(a, b);
        for bad in ["", "xyz", "0", &"g".repeat(32), &format!("{a}0")] {
            assert!(table.take(bad, Nanos::new(0)).is_none(), "{bad}");
        }
        assert_eq!(held(&table), 2);
    }

    #[test]
    fn expired_entries_are_unknown_and_make_room() {
        let table = Reservations::new(2);
        let a = table.insert(reservation(), Nanos::new(0), SEC).unwrap();
        table.insert(reservation(), Nanos::new(0), SEC).unwrap();
        let later = Nanos::new(2_000_000_000);
        assert_eq!(
            table.insert(reservation(), Nanos::new(10), SEC),
            Err(ReservationsFull(2))
        );
        table.insert(reservation(), later, SEC).unwrap();
        assert_eq!(held(&table), 1);
        assert!(table.take(&a, later).is_none());
    }
}
