//! The latest outcomes of a run of calls, as the bits of one `u128`: the window the
//! circuit breaker's failure rate, the egress client's error rate and its throttle alert
//! are taken over.

/// The latest `capacity` (1 to 128) yes-or-no outcomes, newest first: how many there are
/// and how many said yes. Recording one is a shift and a mask; nothing is allocated.
///
/// ```
/// use sluice_core::Outcomes;
///
/// let mut failures = Outcomes::new(4);
/// for failed in [true, false, false, true, true] {
///     failures.record(failed);
/// }
/// // The first outcome has slid out of the window of 4.
/// assert_eq!((failures.len(), failures.count()), (4, 2));
/// assert_eq!(failures.share(), Some(0.5));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Newest in bit 0, a set bit for a yes. Only the low `capacity` bits are kept.
    bits: u128,
    len: u32,
    capacity: u32,
}

impl Outcomes {
    /// The most outcomes a window can keep.
    pub const MAX_CAPACITY: u32 = u128::BITS;

    /// An empty window of the latest `capacity` outcomes, clamped to 1 to 128.
    pub const fn new(capacity: u32) -> Self {
        let capacity = if capacity == 0 {
            1
        } else if capacity > Self::MAX_CAPACITY {
            Self::MAX_CAPACITY
        } else {
            capacity
        };
        Self {
            bits: 0,
            len: 0,
            capacity,
        }
    }

    /// Adds the newest outcome; the oldest slides out once the window is full.
    pub fn record(&mut self, yes: bool) {
        // `capacity` is 1 to 128, so the shift is 0 to 127.
        let mask = u128::MAX >> (u128::BITS - self.capacity);
        self.bits = ((self.bits << 1) | u128::from(yes)) & mask;
        self.len = (self.len + 1).min(self.capacity);
    }

    /// Forgets every outcome.
    pub fn clear(&mut self) {
        self.bits = 0;
        self.len = 0;
    }

    /// How many outcomes the window holds, at most its capacity.
    pub const fn len(&self) -> u32 {
        self.len
    }

    /// Whether it holds none.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many it can hold.
    pub const fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How many of those it holds said yes.
    pub const fn count(&self) -> u32 {
        self.bits.count_ones()
    }

    /// The share that said yes, in `[0, 1]`; `None` while empty.
    pub fn share(&self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        Some(f64::from(self.count()) / f64::from(self.len))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn capacities_are_clamped_to_one_to_128() {
        assert_eq!(Outcomes::new(0).capacity(), 1);
        assert_eq!(Outcomes::new(500).capacity(), 128);
        let mut full = Outcomes::new(128);
        for _ in 0..200 {
            full.record(true);
        }
        assert_eq!((full.len(), full.count()), (128, 128));
    }

    proptest! {
        /// The window agrees with the last `capacity` outcomes of a plain list.
        #[test]
        fn matches_the_tail_of_a_list(
            capacity in 1_u32..=128,
            outcomes in proptest::collection::vec(any::<bool>(), 0..400),
        ) {
            let mut window = Outcomes::new(capacity);
            for &yes in &outcomes {
                window.record(yes);
            }
            let tail = &outcomes[outcomes.len().saturating_sub(capacity as usize)..];
            prop_assert_eq!(window.len() as usize, tail.len());
            prop_assert_eq!(window.count() as usize, tail.iter().filter(|&&y| y).count());
        }
    }
}
