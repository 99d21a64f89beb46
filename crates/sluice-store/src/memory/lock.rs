//! The shard lock: a spin lock that yields under contention.
//!
//! A shard's critical section is one hash lookup and a few arithmetic operations (tens of
//! nanoseconds). An uncontended futex mutex pays an atomic read-modify-write to unlock as
//! well as to lock (17 ns per lock/unlock pair here, against 7 ns for a spin lock whose
//! unlock is a plain store). Pure spinning is unsafe on a machine whose vCPUs may be
//! time-sliced: a preempted holder would leave the waiter burning its slice. So a waiter
//! spins briefly, then yields to the scheduler.

use spin::mutex::{SpinMutex, SpinMutexGuard};

/// How many times a waiter spins before it starts yielding its time slice.
const SPINS_BEFORE_YIELD: u32 = 64;

#[derive(Default)]
pub(crate) struct ShardLock<T>(SpinMutex<T>);

impl<T> ShardLock<T> {
    #[inline]
    pub(crate) fn lock(&self) -> SpinMutexGuard<'_, T> {
        match self.0.try_lock() {
            Some(guard) => guard,
            None => self.lock_contended(),
        }
    }

    #[cold]
    fn lock_contended(&self) -> SpinMutexGuard<'_, T> {
        let mut spins = 0;
        loop {
            if !self.0.is_locked()
                && let Some(guard) = self.0.try_lock()
            {
                return guard;
            }
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_concurrent_writers() {
        let lock = Arc::new(ShardLock::<u64>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 40_000);
    }
}
