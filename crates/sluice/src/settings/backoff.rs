//! The retry backoff per class of failure, as `sluice proxy` and `sluice batch` both take it
//! (`BackoffArgs` in `crate::cli`, and the same keys in their config files).

use sluice_egress::{ClassBackoff, EgressConfig};

use super::Merge;
use crate::cli::BackoffArgs;
use crate::values::parse_backoff;

/// Each class's schedule, merged: flag (or variable), else the file, else the client's
/// default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BackoffSettings(pub(crate) ClassBackoff);

impl BackoffSettings {
    /// # Errors
    ///
    /// A usage error when a value in the file is bad.
    pub(crate) fn merge(args: &BackoffArgs, m: &mut Merge<'_>) -> Result<Self, clap::Error> {
        let defaults = ClassBackoff::default();
        let pick = |m: &mut Merge<'_>, key, given, default| {
            m.pick(key, given, parse_backoff)
                .map(|v| v.unwrap_or(default))
        };
        Ok(Self(ClassBackoff {
            rate_limited: pick(
                m,
                "backoff_rate_limited",
                args.backoff_rate_limited,
                defaults.rate_limited,
            )?,
            quota_exhausted: pick(
                m,
                "backoff_quota_exhausted",
                args.backoff_quota_exhausted,
                defaults.quota_exhausted,
            )?,
            server_error: pick(
                m,
                "backoff_server_error",
                args.backoff_server_error,
                defaults.server_error,
            )?,
        }))
    }

    /// Sets the client's retry backoff.
    pub(crate) fn apply(&self, config: &mut EgressConfig) {
        config.retry.backoff = self.0;
    }
}
