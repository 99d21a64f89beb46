//! `sluice proxy`'s settings, merged (flags and environment variables over the `--config`
//! file over defaults), and the proxy's and egress client's configurations made from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_egress::proxy::{DEFAULT_MAX_REQUEST_BODY, ProxyConfig, ProxyConfigError};
use sluice_egress::quota::QuotaError;
use sluice_egress::{EgressConfig, EgressConfigError};

use crate::cli::ProxyArgs;
use crate::settings::{BackoffSettings, ConfigFile, FileKeys, Merge, Origins, QuotaSettings};
use crate::values::{
    LOG_FORMATS, parse_bool, parse_count, parse_listen, parse_log_format, parse_path, parse_size,
    parse_text, parse_timeout,
};

/// The keys of the config file: the flags' names in snake_case (`root_endpoints`, true
/// by default, stands for `--no-root-endpoints`), in the order errors list them.
pub(super) const FILE_KEYS: FileKeys = FileKeys {
    command: "proxy",
    keys: &[
        "upstream",
        "listen",
        "redis",
        "name",
        "rpm",
        "tpm",
        "daily_limit",
        "daily_tokens",
        "pause_threshold",
        "alert_levels",
        "backoff_rate_limited",
        "backoff_quota_exhausted",
        "backoff_server_error",
        "max_concurrency",
        "max_attempts",
        "attempt_timeout",
        "max_request_body",
        "state_file",
        "coalesce",
        "root_endpoints",
        "log_format",
    ],
    lists: &["alert_levels"],
};

/// `sluice proxy`'s settings: each from its flag or environment variable, else from the
/// config file, else its default.
#[derive(Debug)]
pub(super) struct Settings {
    upstream: String,
    pub(super) listen: SocketAddr,
    pub(super) redis: Option<String>,
    name: Option<String>,
    pub(super) quota: QuotaSettings,
    pub(super) backoff: BackoffSettings,
    pub(super) max_concurrency: Option<u32>,
    pub(super) max_attempts: u32,
    attempt_timeout: Duration,
    max_request_body: usize,
    state_file: Option<PathBuf>,
    pub(super) coalesce: bool,
    root_endpoints: bool,
    pub(super) log_format: String,
    /// Which settings came from the config file.
    pub(super) origins: Origins,
}

/// Where the proxy listens when nothing says.
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8090);

/// Attempts per request when nothing says.
const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// How long an attempt may wait for its answer to begin when nothing says.
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(600);

impl Settings {
    /// The settings from `args` and the `--config` file they name, if any.
    ///
    /// # Errors
    ///
    /// A usage error: the file cannot be read, a value in it is bad (named with the file,
    /// line, key and value), or no upstream is set anywhere.
    pub(super) fn resolve(args: &ProxyArgs) -> Result<Self, clap::Error> {
        let file = args
            .config
            .as_deref()
            .map(|path| ConfigFile::read(path, &FILE_KEYS))
            .transpose()?;
        Self::merge(args, file.as_ref())
    }

    fn merge(args: &ProxyArgs, file: Option<&ConfigFile>) -> Result<Self, clap::Error> {
        let mut m = Merge::new(FILE_KEYS.command, file);
        // In the order of the flags; every value of the file is checked.
        let upstream = m.pick("upstream", args.upstream.clone(), parse_text)?;
        let listen = m.pick("listen", args.listen, parse_listen)?;
        let redis = m.pick("redis", args.redis.clone(), parse_text)?;
        let name = m.pick("name", args.name.clone(), parse_text)?;
        let quota = QuotaSettings::merge(&args.quota, &mut m)?;
        let backoff = BackoffSettings::merge(&args.backoff, &mut m)?;
        let max_concurrency = m.pick("max_concurrency", args.max_concurrency, parse_count)?;
        let max_attempts = m.pick("max_attempts", args.max_attempts, parse_count)?;
        let attempt_timeout = m.pick("attempt_timeout", args.attempt_timeout, parse_timeout)?;
        let max_request_body = m.pick("max_request_body", args.max_request_body, parse_size)?;
        let state_file = m.pick("state_file", args.state_file.clone(), parse_path)?;
        let coalesce = m.pick("coalesce", args.coalesce, parse_bool)?;
        // The flag only turns them off: without it, the file decides.
        let given_root = args.no_root_endpoints.then_some(false);
        let root_endpoints = m.pick("root_endpoints", given_root, parse_bool)?;
        let log_format = m.pick("log_format", args.log_format.clone(), parse_log_format)?;
        let origins = m.finish();

        let Some(upstream) = upstream else {
            return Err(origins.usage(
                "no upstream to forward to: give --upstream URL, set SLUICE_PROXY_UPSTREAM, \
                 or write `upstream: URL` in the --config file"
                    .to_owned(),
            ));
        };
        Ok(Self {
            upstream,
            listen: listen.unwrap_or(DEFAULT_LISTEN),
            redis,
            name,
            quota,
            backoff,
            max_concurrency,
            max_attempts: max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            attempt_timeout: attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT),
            max_request_body: max_request_body.unwrap_or(DEFAULT_MAX_REQUEST_BODY),
            state_file,
            coalesce: coalesce.unwrap_or(false),
            root_endpoints: root_endpoints.unwrap_or(true),
            log_format: log_format.unwrap_or_else(|| LOG_FORMATS[0].to_owned()),
            origins,
        })
    }
}

/// The proxy's configuration from the settings; a bad upstream is a usage error naming it
/// where it was set.
pub(super) fn proxy_config(settings: &Settings) -> Result<ProxyConfig, clap::Error> {
    let mut config = ProxyConfig::new(&settings.upstream).map_err(|e| match &e {
        ProxyConfigError::Upstream { url, reason } => {
            settings
                .origins
                .invalid("upstream", "--upstream <URL>", url, reason)
        }
        other => settings.origins.usage(format!(
            "invalid upstream ({}): {other}",
            settings.origins.origin("upstream")
        )),
    })?;
    config.max_request_body = settings.max_request_body;
    config.attempt_timeout = settings.attempt_timeout;
    config.root_endpoints = settings.root_endpoints;
    config.coalesce = settings.coalesce;
    Ok(config)
}

/// The egress client's configuration from the settings.
pub(super) fn egress_config(settings: &Settings, proxy: &ProxyConfig) -> EgressConfig {
    let name = settings
        .name
        .clone()
        .unwrap_or_else(|| proxy.upstream.authority().to_string());
    let mut config = EgressConfig::new(name);
    settings.quota.apply(&mut config);
    settings.backoff.apply(&mut config);
    if let Some(max) = settings.max_concurrency {
        config.concurrency.max = max;
        config.concurrency.initial = config.concurrency.initial.min(max);
        config.concurrency.min = config.concurrency.min.min(max);
    }
    config.retry.max_attempts = settings.max_attempts;
    config.retry.attempt_timeout = settings.attempt_timeout;
    config.state_file.clone_from(&settings.state_file);
    config
}

/// A configuration error, worded for the command line: the settings set every field, and
/// the state file's own errors name it.
pub(super) fn explain(error: &EgressConfigError, settings: &Settings) -> String {
    match (error, &settings.state_file) {
        (EgressConfigError::Quota(QuotaError::Config { .. }), _) | (_, None) => {
            format!("invalid proxy settings: {error}")
        }
        (_, Some(_)) => format!(
            "cannot use the state file ({}): {error}",
            settings.origins.origin("state_file")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> ProxyArgs {
        crate::cli::proxy_args(flags).expect("valid flags")
    }

    fn file(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(text, "egress.yaml", &FILE_KEYS)
    }

    /// The settings from `flags` and a file of `text`, or the usage error's text.
    fn settings(flags: &[&str], text: &str) -> Result<Settings, String> {
        Settings::merge(&args(flags), Some(&file(text)?)).map_err(|e| e.to_string())
    }

    const FULL: &str = "\
# every setting
upstream: http://127.0.0.1:9999/v1
listen: 127.0.0.1:18090
redis: redis://127.0.0.1:6379/
name: openai
rpm: 500
tpm: 200000
daily_limit: 10000
daily_tokens: 5000000
pause_threshold: 90
alert_levels: [50, 75]
max_concurrency: 16
max_attempts: 3
attempt_timeout: 1m30s
max_request_body: 1MiB
state_file: /var/lib/sluice/openai.json
coalesce: true
root_endpoints: false
log_format: json
";

    #[test]
    fn the_file_sets_every_setting() {
        let s = settings(&[], FULL).unwrap();
        assert_eq!(s.upstream, "http://127.0.0.1:9999/v1");
        assert_eq!(s.listen, "127.0.0.1:18090".parse().unwrap());
        assert_eq!(s.redis.as_deref(), Some("redis://127.0.0.1:6379/"));
        assert_eq!(s.name.as_deref(), Some("openai"));
        assert_eq!((s.quota.rpm, s.quota.tpm), (Some(500), Some(200_000)));
        assert_eq!(
            (s.quota.daily_limit, s.quota.daily_tokens),
            (Some(10_000), Some(5_000_000))
        );
        assert_eq!(s.quota.pause_threshold, 90);
        assert_eq!(s.quota.alert_levels, vec![50, 75]);
        assert_eq!((s.max_concurrency, s.max_attempts), (Some(16), 3));
        assert_eq!(s.attempt_timeout, Duration::from_secs(90));
        assert_eq!(s.max_request_body, 1 << 20);
        assert_eq!(
            s.state_file,
            Some(PathBuf::from("/var/lib/sluice/openai.json"))
        );
        assert!(s.coalesce);
        assert!(!s.root_endpoints);
        assert_eq!(s.log_format, "json");
        assert_eq!(s.origins.origin("rpm"), "'rpm' in egress.yaml:6");
        assert_eq!(
            s.origins.origin("alert_levels"),
            "'alert_levels' in egress.yaml:11"
        );
    }

    #[test]
    fn flags_and_their_variables_override_the_file() {
        let s = settings(
            &[
                "--upstream",
                "http://other:1",
                "--rpm",
                "700",
                "--pause-threshold",
                "70",
                "--alert-levels",
                "90",
                "--coalesce=false",
                "--log-format",
                "human",
            ],
            FULL,
        )
        .unwrap();
        assert_eq!(s.upstream, "http://other:1");
        assert_eq!(s.quota.rpm, Some(700));
        assert_eq!(s.quota.pause_threshold, 70);
        assert_eq!(s.quota.alert_levels, vec![90]);
        assert!(!s.coalesce);
        assert_eq!(s.log_format, "human");
        assert_eq!(s.origins.origin("rpm"), "'--rpm'");
        // What the flags leave out still comes from the file.
        assert_eq!(s.quota.tpm, Some(200_000));
        assert_eq!(s.origins.origin("tpm"), "'tpm' in egress.yaml:7");
    }

    #[test]
    fn defaults_fill_what_nothing_sets() {
        let s = Settings::merge(&args(&["--upstream", "http://h"]), None).unwrap();
        assert_eq!(s.listen, DEFAULT_LISTEN);
        assert_eq!(s.quota.pause_threshold, 80);
        assert_eq!(s.quota.alert_levels, vec![60, 80, 95]);
        assert_eq!(s.max_attempts, 5);
        assert_eq!(s.attempt_timeout, Duration::from_secs(600));
        assert_eq!(s.max_request_body, 8 << 20);
        assert_eq!(
            (s.quota.rpm, s.max_concurrency, s.state_file.as_ref()),
            (None, None, None)
        );
        assert!(!s.coalesce);
        assert!(s.root_endpoints);
        assert_eq!(s.log_format, "human");
        // A key set to nothing is not set; an empty file sets nothing.
        let s = settings(&[], "upstream: http://h\nrpm: ~\nlisten:\n").unwrap();
        assert_eq!((s.quota.rpm, s.listen), (None, DEFAULT_LISTEN));
        assert!(file("").unwrap().values.is_empty());
        assert!(file("# nothing yet\n").unwrap().values.is_empty());
        // --no-root-endpoints turns off what the file leaves on.
        let s = settings(
            &["--no-root-endpoints"],
            "upstream: http://h\nroot_endpoints: true",
        )
        .unwrap();
        assert!(!s.root_endpoints);
    }

    #[test]
    fn bad_values_name_the_file_the_line_the_key_and_the_value() {
        for (text, expected) in [
            (
                "rpm: 0",
                "egress.yaml:1: invalid value '0' for 'rpm': must be at least 1",
            ),
            ("rpm: lots", "egress.yaml:1: invalid value 'lots' for 'rpm'"),
            ("rpm: 1.5", "egress.yaml:1: invalid value '1.5' for 'rpm'"),
            (
                "upstream: http://h\npause_threshold: 120",
                "egress.yaml:2: invalid value '120' for 'pause_threshold': expected a percentage",
            ),
            (
                "\n\nattempt_timeout: 30",
                "egress.yaml:3: invalid value '30' for 'attempt_timeout'",
            ),
            (
                "attempt_timeout: 0s",
                "invalid value '0s' for 'attempt_timeout': must be more than zero",
            ),
            (
                "alert_levels: [60, 95, 80]",
                "invalid value '60,95,80' for 'alert_levels': levels must be ascending",
            ),
            (
                "alert_levels: 60,95,80",
                "invalid value '60,95,80' for 'alert_levels'",
            ),
            (
                "max_request_body: 8MB",
                "invalid value '8MB' for 'max_request_body'",
            ),
            (
                "listen: localhost",
                "invalid value 'localhost' for 'listen'",
            ),
            ("coalesce: maybe", "invalid value 'maybe' for 'coalesce'"),
            (
                "log_format: xml",
                "invalid value 'xml' for 'log_format': expected human or json",
            ),
            ("max_attempts: 0", "invalid value '0' for 'max_attempts'"),
            ("name: ''", "invalid value '' for 'name': must not be empty"),
            (
                "rpm: [1, 2]",
                "egress.yaml:1: invalid value for 'rpm': expected one value, got a list",
            ),
            (
                "tpm: {a: 1}",
                "egress.yaml:1: invalid value for 'tpm': expected one value, got a mapping",
            ),
            (
                "alert_levels: [60, [80]]",
                "invalid value for 'alert_levels': expected a list of numbers",
            ),
        ] {
            let error = settings(&["--upstream", "http://h"], text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        // A bad value is an error even where a flag overrides it.
        let error = settings(&["--upstream", "http://h", "--rpm", "5"], "rpm: 0").unwrap_err();
        assert!(
            error.contains("egress.yaml:1: invalid value '0' for 'rpm'"),
            "{error}"
        );
    }

    #[test]
    fn an_upstream_is_needed_and_checked_where_it_was_set() {
        let error = Settings::merge(&args(&[]), None).unwrap_err().to_string();
        assert!(error.contains("no upstream to forward to"), "{error}");
        assert!(
            error.contains("--upstream") && error.contains("upstream: URL"),
            "{error}"
        );

        let s = settings(&[], "rpm: 5\nupstream: ftp://h").unwrap();
        let error = proxy_config(&s).unwrap_err().to_string();
        assert!(
            error.contains("egress.yaml:2: invalid value 'ftp://h' for 'upstream': the scheme"),
            "{error}"
        );
        let s = settings(
            &["--upstream", "http://user:hunter2@h"],
            "upstream: http://h",
        )
        .unwrap();
        let error = proxy_config(&s).unwrap_err().to_string();
        assert!(error.contains("for '--upstream <URL>'"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../../../examples/egress/openai.yaml");
        let file = ConfigFile::parse(text, "openai.yaml", &FILE_KEYS).unwrap();
        let s = Settings::merge(&args(&[]), Some(&file)).unwrap();
        assert_eq!(s.upstream, "https://api.openai.com");
        assert_eq!((s.quota.rpm, s.quota.tpm), (Some(500), Some(200_000)));
        assert_eq!(
            s.backoff.0,
            sluice_egress::ClassBackoff::default(),
            "the file shows the defaults"
        );
        // An https upstream needs the (default) tls feature.
        assert_eq!(proxy_config(&s).is_ok(), cfg!(feature = "tls"));
    }

    #[test]
    fn the_settings_reach_the_proxy_and_egress_configs() {
        let s = settings(&[], FULL).unwrap();
        let proxy = proxy_config(&s).unwrap();
        assert!(proxy.coalesce);
        assert!(!proxy.root_endpoints);
        assert_eq!(proxy.max_request_body, 1 << 20);
        assert_eq!(proxy.attempt_timeout, Duration::from_secs(90));
        let egress = egress_config(&s, &proxy);
        assert_eq!(egress.upstream, "openai");
        assert_eq!(egress.pace.requests_per_minute, Some(500));
        assert_eq!(egress.quota.pause_threshold, 90);
        assert_eq!(egress.quota.alert_levels, vec![50, 75]);
        assert_eq!(egress.concurrency.max, 16);
        assert_eq!(egress.retry.max_attempts, 3);
    }

    #[test]
    fn backoff_comes_from_the_flag_else_the_file_else_the_default() {
        let file =
            "upstream: http://h\nbackoff_rate_limited: 10s..1m\nbackoff_server_error: 1s..2s";
        let s = settings(&["--backoff-server-error", "250ms..1s"], file).unwrap();
        let proxy = proxy_config(&s).unwrap();
        let backoff = egress_config(&s, &proxy).retry.backoff;
        let secs = Duration::from_secs;
        assert_eq!(
            (backoff.rate_limited.base, backoff.rate_limited.max),
            (secs(10), secs(60))
        );
        assert_eq!(
            (backoff.server_error.base, backoff.server_error.max),
            (Duration::from_millis(250), secs(1))
        );
        assert_eq!(
            backoff.quota_exhausted,
            sluice_egress::ClassBackoff::default().quota_exhausted
        );
        let error = settings(&[], "upstream: http://h\nbackoff_rate_limited: 5m..1m")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("egress.yaml:2: invalid value '5m..1m' for 'backoff_rate_limited': MAX (60s) is below MIN (300s)"),
            "{error}"
        );
        let error = crate::cli::proxy_args(&["--backoff-quota-exhausted", "5m"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid value '5m' for '--backoff-quota-exhausted <MIN..MAX>': expected MIN..MAX, e.g. 60s..5m"),
            "{error}"
        );
    }
}
