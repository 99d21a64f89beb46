//! `sluice proxy`: flags, logging, the listener and signals around
//! [`sluice_egress::proxy::serve`].

use anyhow::Context as _;
use sluice_egress::proxy::{ProxyConfig, ProxyConfigError};
use sluice_egress::quota::QuotaError;
use sluice_egress::{Egress, EgressConfig, EgressConfigError, TokioClock};
use sluice_redis::RedisStore;
use sluice_server::server::redact;
use sluice_store::Store;
use tokio::net::TcpListener;

use crate::cli::{ProxyArgs, usage_error};
use crate::process::{init_logging, shutdown_signal};

/// Quota usage percentages that raise alerts, ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AlertLevels(pub(crate) Vec<u8>);

/// A percentage from 1 to 100.
pub(crate) fn parse_percent(text: &str) -> Result<u8, String> {
    match text.trim().parse::<u8>() {
        Ok(p) if (1..=100).contains(&p) => Ok(p),
        Ok(p) => Err(format!("must be from 1 to 100, got {p}")),
        Err(_) => Err("not a whole number from 1 to 100".to_owned()),
    }
}

/// Comma-separated percentages from 1 to 100, strictly ascending (`60,80,95`).
pub(crate) fn parse_alert_levels(text: &str) -> Result<AlertLevels, String> {
    let mut levels = Vec::new();
    for part in text.split(',') {
        let level = parse_percent(part).map_err(|e| format!("{:?}: {e}", part.trim()))?;
        if levels.last().is_some_and(|&last| level <= last) {
            return Err(format!(
                "levels must be ascending: {level} comes after {:?}",
                levels
            ));
        }
        levels.push(level);
    }
    Ok(AlertLevels(levels))
}

/// A count from 1 to 1,000,000.
pub(crate) fn parse_concurrency(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Ok(n) => Err(format!("must be from 1 to 1000000, got {n}")),
        Err(_) => Err("not a whole number".to_owned()),
    }
}

/// A timeout: a positive duration in the core's grammar (`30s`, `10m`, `1h`).
pub(crate) fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let duration = sluice_core::time::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

/// A size in bytes, with an optional binary suffix: `1048576`, `512KiB`, `8MiB`, `1GiB`.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| "expected a number of bytes, e.g. 1048576 or 8MiB".to_owned())?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use KiB, MiB or GiB")),
    };
    let bytes = number
        .checked_mul(factor)
        .ok_or_else(|| "too large".to_owned())?;
    if bytes == 0 {
        return Err("must be more than zero".to_owned());
    }
    Ok(bytes)
}

/// The proxy's configuration from the flags; a bad `--upstream` is a usage error naming it.
fn proxy_config(args: &ProxyArgs) -> Result<ProxyConfig, clap::Error> {
    let mut config = ProxyConfig::new(&args.upstream).map_err(|e| {
        let message = match &e {
            ProxyConfigError::Upstream { url, reason } => {
                format!("invalid value '{url}' for '--upstream <URL>': {reason}")
            }
            other => format!("invalid value for '--upstream <URL>': {other}"),
        };
        usage_error(&["proxy"], message)
    })?;
    config.max_request_body = args.max_request_body;
    config.attempt_timeout = args.attempt_timeout;
    config.root_endpoints = !args.no_root_endpoints;
    Ok(config)
}

/// The egress client's configuration from the flags.
fn egress_config(args: &ProxyArgs, proxy: &ProxyConfig) -> EgressConfig {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| proxy.upstream.authority().to_string());
    let mut config = EgressConfig::new(name);
    config.pace.requests_per_minute = args.rpm;
    config.pace.tokens_per_minute = args.tpm;
    config.quota.requests_per_minute = args.rpm;
    config.quota.tokens_per_minute = args.tpm;
    config.quota.requests_per_day = args.daily_limit;
    config.quota.tokens_per_day = args.daily_tokens;
    config.quota.pause_threshold = args.pause_threshold;
    config.quota.alert_levels = args.alert_levels.0.clone();
    if let Some(max) = args.max_concurrency {
        config.concurrency.max = max;
        config.concurrency.initial = config.concurrency.initial.min(max);
        config.concurrency.min = config.concurrency.min.min(max);
    }
    config.retry.max_attempts = args.max_attempts;
    config.retry.attempt_timeout = args.attempt_timeout;
    config.state_file = args.state_file.clone();
    config
}

/// A configuration error, worded for the command line: the flags set every field, and
/// the state file's own errors name it.
fn explain(error: &EgressConfigError, args: &ProxyArgs) -> String {
    match (error, &args.state_file) {
        (EgressConfigError::Quota(QuotaError::Config { .. }), _) | (_, None) => {
            format!("invalid proxy settings: {error}")
        }
        (_, Some(_)) => format!("cannot use --state-file: {error}"),
    }
}

/// Runs the proxy until Ctrl-C or SIGTERM.
pub(crate) fn run(args: &ProxyArgs) -> anyhow::Result<()> {
    let proxy = proxy_config(args).unwrap_or_else(|usage| usage.exit());
    let config = egress_config(args, &proxy);
    init_logging(&args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match &args.redis {
            Some(url) => {
                let store = connect(url).await?;
                let egress = Egress::with_store(config, store, TokioClock::new())
                    .map_err(|e| anyhow::anyhow!(explain(&e, args)))?;
                listen(args, proxy, egress, &format!("redis {}", redact_all(url))).await
            }
            None => {
                let egress = Egress::new(config).map_err(|e| anyhow::anyhow!(explain(&e, args)))?;
                listen(args, proxy, egress, "memory").await
            }
        }
    })
}

async fn connect(url: &str) -> anyhow::Result<RedisStore> {
    let urls: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
    let store = if urls.len() > 1 {
        RedisStore::connect_cluster(&urls).await
    } else {
        RedisStore::connect(url).await
    };
    store.with_context(|| format!("cannot connect to Redis at {} (--redis)", redact_all(url)))
}

fn redact_all(urls: &str) -> String {
    urls.split(',')
        .map(|u| redact(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

async fn listen<S: Store + 'static>(
    args: &ProxyArgs,
    proxy: ProxyConfig,
    egress: Egress<S>,
    store: &str,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        listen = %format!("http://{addr}"),
        upstream = %proxy.upstream,
        store,
        "sluice proxy listening on http://{addr}, forwarding to {} (health at /_sluice/healthz, metrics at /_sluice/metrics)",
        proxy.upstream
    );
    let config = describe(args);
    tracing::info!(
        rpm = args.rpm,
        tpm = args.tpm,
        daily_limit = args.daily_limit,
        daily_tokens = args.daily_tokens,
        pause_threshold = args.pause_threshold,
        max_concurrency = args.max_concurrency,
        max_attempts = args.max_attempts,
        "quota settings: {config}"
    );
    sluice_egress::proxy::serve(proxy, listener, egress, shutdown_signal()).await?;
    tracing::info!("sluice proxy stopped");
    Ok(())
}

fn describe(args: &ProxyArgs) -> String {
    let known = |value: Option<u64>, unit: &str| {
        value.map_or_else(
            || format!("{unit} learned from headers"),
            |v| format!("{v} {unit}"),
        )
    };
    format!(
        "{}, {}, pause batch work at {} %, alerts at {:?} %",
        known(args.rpm, "requests/min"),
        known(args.tpm, "tokens/min"),
        args.pause_threshold,
        args.alert_levels.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_levels_are_ascending_percentages() {
        assert_eq!(
            parse_alert_levels("60,80,95"),
            Ok(AlertLevels(vec![60, 80, 95]))
        );
        assert_eq!(parse_alert_levels(" 90 "), Ok(AlertLevels(vec![90])));
        assert!(
            parse_alert_levels("80,60")
                .unwrap_err()
                .contains("ascending")
        );
        assert!(parse_alert_levels("0,50").unwrap_err().contains("1 to 100"));
        assert!(parse_alert_levels("50,x").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("0").is_err());
        assert!(parse_size("8MB").unwrap_err().contains("MiB"));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn percents_and_counts_have_ranges() {
        assert_eq!(parse_percent("80"), Ok(80));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("101").is_err());
        assert!(parse_concurrency("0").is_err());
        assert_eq!(parse_concurrency("64"), Ok(64));
        assert!(parse_timeout("0").is_err());
    }
}
