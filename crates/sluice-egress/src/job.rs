//! What a caller says about one upstream call before it is made.

use std::fmt;

/// How much a call matters when there is not enough quota for everything: higher goes
/// first, and only [`Priority::INTERACTIVE`] and above may spend the quota beyond the pause
/// threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    /// Background work that can wait for the next reset (a batch job).
    pub const BATCH: Self = Self(0);
    /// Work a person is waiting for.
    pub const INTERACTIVE: Self = Self(10);
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BATCH => f.write_str("batch"),
            Self::INTERACTIVE => f.write_str("interactive"),
            Self(n) => write!(f, "{n}"),
        }
    }
}
