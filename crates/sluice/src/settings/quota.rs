//! The upstream's quota as `sluice proxy` and `sluice batch` both take it (`QuotaArgs` in
//! `crate::cli`, and the same keys in their config files), merged, and mapped onto the
//! egress client's configuration.

use sluice_egress::EgressConfig;

use super::Merge;
use crate::cli::QuotaArgs;
use crate::values::{at_least_one, parse_alert_levels, parse_percent};

/// The pause threshold when nothing sets one: 80 %.
const DEFAULT_PAUSE_THRESHOLD: u8 = 80;

/// Alert levels when nothing sets them.
const DEFAULT_ALERT_LEVELS: [u8; 3] = [60, 80, 95];

/// The quota settings, merged: limits, pause threshold and alert levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QuotaSettings {
    /// Requests per minute, when known in advance.
    pub(crate) rpm: Option<u64>,
    /// Tokens per minute, when known in advance.
    pub(crate) tpm: Option<u64>,
    /// Requests per UTC day.
    pub(crate) daily_limit: Option<u64>,
    /// Tokens per UTC day.
    pub(crate) daily_tokens: Option<u64>,
    /// Usage percentage at which batch work pauses until the reset.
    pub(crate) pause_threshold: u8,
    /// Usage percentages that raise an alert, ascending.
    pub(crate) alert_levels: Vec<u8>,
}

impl QuotaSettings {
    /// Each quota setting from its flag (or variable), else the file, else its default.
    ///
    /// # Errors
    ///
    /// A usage error when a value in the file is bad.
    pub(crate) fn merge(args: &QuotaArgs, m: &mut Merge<'_>) -> Result<Self, clap::Error> {
        let rpm = m.pick("rpm", args.rpm, at_least_one)?;
        let tpm = m.pick("tpm", args.tpm, at_least_one)?;
        let daily_limit = m.pick("daily_limit", args.daily_limit, at_least_one)?;
        let daily_tokens = m.pick("daily_tokens", args.daily_tokens, at_least_one)?;
        let pause_threshold = m.pick("pause_threshold", args.pause_threshold, parse_percent)?;
        let alert_levels = m.pick(
            "alert_levels",
            args.alert_levels.clone(),
            parse_alert_levels,
        )?;
        Ok(Self {
            rpm,
            tpm,
            daily_limit,
            daily_tokens,
            pause_threshold: pause_threshold.unwrap_or(DEFAULT_PAUSE_THRESHOLD),
            alert_levels: alert_levels.map_or_else(|| DEFAULT_ALERT_LEVELS.to_vec(), |a| a.0),
        })
    }

    /// Sets the client's pace and quota monitor: the per-minute limits are where the pace
    /// starts (headers correct them), and every limit is a quota dimension.
    pub(crate) fn apply(&self, config: &mut EgressConfig) {
        config.pace.requests_per_minute = self.rpm;
        config.pace.tokens_per_minute = self.tpm;
        config.quota.requests_per_minute = self.rpm;
        config.quota.tokens_per_minute = self.tpm;
        config.quota.requests_per_day = self.daily_limit;
        config.quota.tokens_per_day = self.daily_tokens;
        config.quota.pause_threshold = self.pause_threshold;
        config.quota.alert_levels.clone_from(&self.alert_levels);
    }

    /// The settings in a few words, for the startup log.
    pub(crate) fn describe(&self) -> String {
        let known = |value: Option<u64>, unit: &str| {
            value.map_or_else(
                || format!("{unit} learned from headers"),
                |v| format!("{v} {unit}"),
            )
        };
        let mut parts = vec![
            known(self.rpm, "requests/min"),
            known(self.tpm, "tokens/min"),
        ];
        if let Some(n) = self.daily_limit {
            parts.push(format!("{n} requests/day"));
        }
        if let Some(n) = self.daily_tokens {
            parts.push(format!("{n} tokens/day"));
        }
        parts.push(format!(
            "pause batch work at {} %, alerts at {:?} %",
            self.pause_threshold, self.alert_levels
        ));
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> QuotaSettings {
        QuotaSettings {
            rpm: Some(500),
            tpm: None,
            daily_limit: Some(10_000),
            daily_tokens: Some(5_000_000),
            pause_threshold: 90,
            alert_levels: vec![50, 75],
        }
    }

    #[test]
    fn every_setting_reaches_the_egress_config() {
        let mut config = EgressConfig::new("test");
        quota().apply(&mut config);
        assert_eq!(config.pace.requests_per_minute, Some(500));
        assert_eq!(config.pace.tokens_per_minute, None);
        assert_eq!(config.quota.requests_per_minute, Some(500));
        assert_eq!(config.quota.requests_per_day, Some(10_000));
        assert_eq!(config.quota.tokens_per_day, Some(5_000_000));
        assert_eq!(config.quota.pause_threshold, 90);
        assert_eq!(config.quota.alert_levels, vec![50, 75]);
        assert!(config.quota.validate().is_ok());
    }

    #[test]
    fn the_description_names_what_is_known() {
        assert_eq!(
            quota().describe(),
            "500 requests/min, tokens/min learned from headers, 10000 requests/day, \
             5000000 tokens/day, pause batch work at 90 %, alerts at [50, 75] %"
        );
    }
}
