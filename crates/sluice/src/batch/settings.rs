//! `sluice batch`'s settings, merged (flags and environment variables over the `--config`
//! file over defaults, see `crate::settings`), and the batch engine's configuration made
//! from them.

use std::path::PathBuf;
use std::time::Duration;

use sluice_egress::batch::BatchConfig;
use sluice_egress::concurrency::ConcurrencyConfig;

use crate::cli::BatchArgs;
use crate::settings::{BackoffSettings, ConfigFile, FileKeys, Merge, Origins, QuotaSettings};
use crate::values::{
    Concurrency, LOG_FORMATS, PROGRESS_MODES, parse_base_url, parse_bool, parse_concurrency,
    parse_duration, parse_log_format, parse_path, parse_progress, parse_timeout,
};

/// The keys of the config file: the flags' names in snake_case, in the order errors list
/// them.
pub(super) const FILE_KEYS: FileKeys = FileKeys {
    command: "batch",
    keys: &[
        "input",
        "output",
        "upstream",
        "proxy",
        "state",
        "concurrency",
        "retry_failed",
        "rpm",
        "tpm",
        "daily_limit",
        "daily_tokens",
        "pause_threshold",
        "alert_levels",
        "backoff_rate_limited",
        "backoff_quota_exhausted",
        "backoff_server_error",
        "max_wait",
        "timeout",
        "no_idempotency_key",
        "progress",
        "log_format",
    ],
    lists: &["alert_levels"],
};

/// How long one item may wait when nothing says: a day.
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How long one attempt may take when nothing says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// Straight to this upstream (`--upstream`).
    Upstream(String),
    /// Through this `sluice proxy` (`--proxy`).
    Proxy(String),
}

/// `sluice batch`'s settings: each from its flag or environment variable, else from the
/// config file, else its default.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) input: PathBuf,
    pub(super) output: PathBuf,
    pub(super) target: Target,
    state: Option<PathBuf>,
    pub(super) concurrency: Concurrency,
    pub(super) retry_failed: bool,
    pub(super) quota: QuotaSettings,
    pub(super) backoff: BackoffSettings,
    max_wait: Duration,
    timeout: Duration,
    idempotency_keys: bool,
    pub(super) progress: String,
    pub(super) log_format: String,
    /// Which settings came from the config file.
    pub(super) origins: Origins,
}

impl Settings {
    /// The settings from `args` and the `--config` file they name, if any.
    ///
    /// # Errors
    ///
    /// A usage error: the file cannot be read, a value in it is bad (named with the file,
    /// line, key and value), or the input, the output or where to send is set nowhere.
    pub(super) fn resolve(args: &BatchArgs) -> Result<Self, clap::Error> {
        let file = args
            .config
            .as_deref()
            .map(|path| ConfigFile::read(path, &FILE_KEYS))
            .transpose()?;
        Self::merge(args, file.as_ref())
    }

    fn merge(args: &BatchArgs, file: Option<&ConfigFile>) -> Result<Self, clap::Error> {
        let mut m = Merge::new(FILE_KEYS.command, file);
        // In the order of the flags; every value of the file is checked.
        let input = m.pick("input", args.input.clone(), parse_path)?;
        let output = m.pick("output", args.output.clone(), parse_path)?;
        // --upstream and --proxy are one choice: either one, as a flag or a variable,
        // overrides both keys of the file.
        let (upstream, proxy) = if args.upstream.is_some() || args.proxy.is_some() {
            m.check("upstream", parse_base_url)?;
            m.check("proxy", parse_base_url)?;
            (args.upstream.clone(), args.proxy.clone())
        } else {
            (
                m.pick("upstream", None, parse_base_url)?,
                m.pick("proxy", None, parse_base_url)?,
            )
        };
        let state = m.pick("state", args.state.clone(), parse_path)?;
        let concurrency = m.pick("concurrency", args.concurrency, parse_concurrency)?;
        let retry_failed = m.pick("retry_failed", args.retry_failed, parse_bool)?;
        let quota = QuotaSettings::merge(&args.quota, &mut m)?;
        let backoff = BackoffSettings::merge(&args.backoff, &mut m)?;
        let max_wait = m.pick("max_wait", args.max_wait, parse_duration)?;
        let timeout = m.pick("timeout", args.timeout, parse_timeout)?;
        let no_idempotency_key =
            m.pick("no_idempotency_key", args.no_idempotency_key, parse_bool)?;
        let progress = m.pick("progress", args.progress.clone(), parse_progress)?;
        let log_format = m.pick("log_format", args.log_format.clone(), parse_log_format)?;
        let origins = m.finish();

        let required = |what: &str, key: &str, value: &str| {
            origins.usage(format!(
                "no {what}: give --{key} {value}, set SLUICE_BATCH_{}, or write `{key}: {value}` \
                 in the --config file",
                key.to_ascii_uppercase()
            ))
        };
        let input = input.ok_or_else(|| required("input file", "input", "PATH"))?;
        let output = output.ok_or_else(|| required("results file", "output", "PATH"))?;
        let target = match (upstream, proxy) {
            (Some(url), None) => Target::Upstream(url),
            (None, Some(url)) => Target::Proxy(url),
            (None, None) => {
                return Err(origins.usage(
                    "nowhere to send the requests: give --upstream URL or --proxy URL, set \
                     SLUICE_BATCH_UPSTREAM or SLUICE_BATCH_PROXY, or write `upstream: URL` in \
                     the --config file"
                        .to_owned(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(origins.usage(format!(
                    "{} and {} both say where to send the requests: keep one",
                    origins.origin("upstream"),
                    origins.origin("proxy")
                )));
            }
        };
        Ok(Self {
            input,
            output,
            target,
            state,
            concurrency: concurrency.unwrap_or(Concurrency::Auto),
            retry_failed: retry_failed.unwrap_or(false),
            quota,
            backoff,
            max_wait: max_wait.unwrap_or(DEFAULT_MAX_WAIT),
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            idempotency_keys: !no_idempotency_key.unwrap_or(false),
            progress: progress.unwrap_or_else(|| PROGRESS_MODES[0].to_owned()),
            log_format: log_format.unwrap_or_else(|| LOG_FORMATS[0].to_owned()),
            origins,
        })
    }

    /// The batch engine's configuration.
    pub(super) fn config(&self) -> BatchConfig {
        let (base_url, via_proxy) = match &self.target {
            Target::Upstream(url) => (url, false),
            Target::Proxy(url) => (url, true),
        };
        let mut config = BatchConfig::new(&self.input, &self.output, base_url);
        config.via_proxy = via_proxy;
        if let Some(state) = &self.state {
            config.state_dir.clone_from(state);
        }
        config.retry_failed = self.retry_failed;
        config.max_wait = self.max_wait;
        config.idempotency_keys = self.idempotency_keys;
        let egress = &mut config.egress;
        self.quota.apply(egress);
        self.backoff.apply(egress);
        egress.retry.attempt_timeout = self.timeout;
        if let Concurrency::Fixed(n) = self.concurrency {
            egress.concurrency = ConcurrencyConfig {
                initial: n,
                min: n,
                max: n,
                ..ConcurrencyConfig::default()
            };
        }
        config.with_window_for_concurrency()
    }

    /// Where the requests go, in a few words.
    pub(super) fn destination(&self) -> String {
        match &self.target {
            Target::Upstream(url) => url.clone(),
            Target::Proxy(url) => format!("the sluice proxy at {url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn args(flags: &[&str]) -> BatchArgs {
        crate::cli::batch_args(flags).expect("valid flags")
    }

    fn file(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(text, "batch.yaml", &FILE_KEYS)
    }

    /// The settings from `flags` and a file of `text`, or the usage error's text.
    fn settings(flags: &[&str], text: &str) -> Result<Settings, String> {
        Settings::merge(&args(flags), Some(&file(text)?)).map_err(|e| e.to_string())
    }

    const FULL: &str = "\
# every setting
input: requests.jsonl
output: results.jsonl
upstream: http://127.0.0.1:9999/v1
state: /var/lib/sluice/job-1
concurrency: 8
retry_failed: true
rpm: 500
tpm: 200000
daily_limit: 10000
daily_tokens: 5000000
pause_threshold: 90
alert_levels: [50, 75]
max_wait: 30m
timeout: 1m30s
no_idempotency_key: true
progress: log
log_format: json
";

    #[test]
    fn the_file_sets_every_setting() {
        let s = settings(&[], FULL).unwrap();
        assert_eq!(s.input, PathBuf::from("requests.jsonl"));
        assert_eq!(s.output, PathBuf::from("results.jsonl"));
        assert_eq!(
            s.target,
            Target::Upstream("http://127.0.0.1:9999/v1".to_owned())
        );
        assert_eq!(s.state, Some(PathBuf::from("/var/lib/sluice/job-1")));
        assert_eq!(s.concurrency, Concurrency::Fixed(8));
        assert!(s.retry_failed);
        let quota = QuotaSettings {
            rpm: Some(500),
            tpm: Some(200_000),
            daily_limit: Some(10_000),
            daily_tokens: Some(5_000_000),
            pause_threshold: 90,
            alert_levels: vec![50, 75],
        };
        assert_eq!(s.quota, quota);
        assert_eq!(s.max_wait, Duration::from_secs(1800));
        assert_eq!(s.timeout, Duration::from_secs(90));
        assert!(!s.idempotency_keys);
        assert_eq!(
            (s.progress.as_str(), s.log_format.as_str()),
            ("log", "json")
        );
        assert_eq!(s.origins.origin("rpm"), "'rpm' in batch.yaml:8");
        let (_, note) = s.origins.file_note().unwrap();
        assert!(note.starts_with("settings from batch.yaml: alert_levels, concurrency, "));
    }

    #[test]
    fn the_settings_reach_the_batch_config() {
        let s = settings(&[], FULL).unwrap();
        let config = s.config();
        assert_eq!(config.input, PathBuf::from("requests.jsonl"));
        assert_eq!(config.base_url, "http://127.0.0.1:9999/v1");
        assert!(!config.via_proxy);
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/sluice/job-1"));
        assert!(config.retry_failed);
        assert!(!config.idempotency_keys);
        assert_eq!(config.max_wait, Duration::from_secs(1800));
        let egress = &config.egress;
        assert_eq!(egress.pace.requests_per_minute, Some(500));
        assert_eq!(egress.quota.requests_per_day, Some(10_000));
        assert_eq!(egress.quota.tokens_per_day, Some(5_000_000));
        assert_eq!(egress.quota.pause_threshold, 90);
        assert_eq!(egress.quota.alert_levels, vec![50, 75]);
        assert_eq!(egress.retry.attempt_timeout, Duration::from_secs(90));
        assert_eq!(
            (egress.concurrency.min, egress.concurrency.max),
            (8, 8),
            "a fixed concurrency"
        );
        // Through a proxy, with the defaults.
        let s = settings(&["--proxy", "http://127.0.0.1:8090"], "input: a\noutput: b").unwrap();
        let config = s.config();
        assert!(config.via_proxy);
        assert_eq!(config.state_dir, PathBuf::from("b.state"));
        assert_eq!(config.egress.quota.alert_levels, vec![60, 80, 95]);
        assert_eq!(config.egress.retry.attempt_timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            config.egress.retry.backoff,
            sluice_egress::ClassBackoff::default()
        );
        // A backoff from the file, another from its flag.
        let s = settings(
            &["--backoff-server-error", "1s..3s"],
            "input: a\noutput: b\nupstream: http://h\nbackoff_rate_limited: 2m..10m",
        )
        .unwrap();
        let backoff = s.config().egress.retry.backoff;
        assert_eq!(backoff.rate_limited.base, Duration::from_secs(120));
        assert_eq!(backoff.rate_limited.max, Duration::from_secs(600));
        assert_eq!(backoff.server_error.base, Duration::from_secs(1));
        assert_eq!(backoff.server_error.max, Duration::from_secs(3));
    }

    #[test]
    fn flags_override_the_file() {
        let s = settings(
            &[
                "--output",
                "other.jsonl",
                "--proxy",
                "http://127.0.0.1:8090",
                "--concurrency",
                "auto",
                "--retry-failed=false",
                "--rpm",
                "700",
                "--alert-levels",
                "90",
                "--max-wait",
                "1h",
                "--no-idempotency-key=false",
                "--log-format",
                "human",
            ],
            FULL,
        )
        .unwrap();
        assert_eq!(s.output, PathBuf::from("other.jsonl"));
        // --proxy overrides the file's upstream.
        assert_eq!(s.target, Target::Proxy("http://127.0.0.1:8090".to_owned()));
        assert_eq!(s.concurrency, Concurrency::Auto);
        assert!(!s.retry_failed);
        assert_eq!(s.quota.rpm, Some(700));
        assert_eq!(s.quota.alert_levels, vec![90]);
        assert_eq!(s.max_wait, Duration::from_secs(3600));
        assert!(s.idempotency_keys);
        assert_eq!(s.log_format, "human");
        assert_eq!(s.origins.origin("rpm"), "'--rpm'");
        assert_eq!(s.origins.origin("upstream"), "'--upstream'");
        // What the flags leave out still comes from the file.
        assert_eq!(s.input, PathBuf::from("requests.jsonl"));
        assert_eq!(s.quota.tpm, Some(200_000));
        assert_eq!(s.origins.origin("tpm"), "'tpm' in batch.yaml:9");
        // A bare boolean flag turns on.
        let s = settings(
            &["--retry-failed", "--no-idempotency-key"],
            "input: a\noutput: b\nupstream: http://h",
        )
        .unwrap();
        assert!(s.retry_failed && !s.idempotency_keys);
    }

    #[test]
    fn defaults_fill_what_nothing_sets() {
        let s = Settings::merge(
            &args(&["--input", "a", "--output", "b", "--upstream", "http://h"]),
            None,
        )
        .unwrap();
        assert_eq!(s.concurrency, Concurrency::Auto);
        assert!(!s.retry_failed);
        assert_eq!(s.quota.pause_threshold, 80);
        assert_eq!(s.quota.alert_levels, vec![60, 80, 95]);
        assert_eq!((s.quota.rpm, s.quota.daily_tokens), (None, None));
        assert_eq!(s.max_wait, DEFAULT_MAX_WAIT);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert!(s.idempotency_keys);
        assert_eq!(
            (s.progress.as_str(), s.log_format.as_str()),
            ("auto", "human")
        );
        assert_eq!(s.origins.file_note(), None);
        // A key set to nothing is not set.
        let s = settings(
            &[],
            "input: a\noutput: b\nupstream: http://h\nrpm: ~\nprogress:\n",
        )
        .unwrap();
        assert_eq!((s.quota.rpm, s.progress.as_str()), (None, "auto"));
    }

    #[test]
    fn the_input_the_output_and_one_target_are_needed() {
        for (flags, text, expected) in [
            (
                &[][..],
                "output: b\nupstream: http://h",
                "no input file: give --input PATH, set SLUICE_BATCH_INPUT, or write `input: PATH`",
            ),
            (
                &["--input", "a"][..],
                "upstream: http://h",
                "no results file: give --output PATH, set SLUICE_BATCH_OUTPUT",
            ),
            (
                &["--input", "a", "--output", "b"][..],
                "",
                "nowhere to send the requests: give --upstream URL or --proxy URL",
            ),
            (
                &[][..],
                "input: a\noutput: b\nupstream: http://h\nproxy: http://p",
                "'upstream' in batch.yaml:3 and 'proxy' in batch.yaml:4 both say where to send the requests",
            ),
        ] {
            let error = settings(flags, text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn bad_values_name_the_file_the_line_the_key_and_the_value() {
        for (text, expected) in [
            (
                "rpm: 0",
                "batch.yaml:1: invalid value '0' for 'rpm': must be at least 1",
            ),
            (
                "\nconcurrency: lots",
                "batch.yaml:2: invalid value 'lots' for 'concurrency': expected auto or a number",
            ),
            ("max_wait: soon", "invalid value 'soon' for 'max_wait'"),
            (
                "timeout: 0s",
                "invalid value '0s' for 'timeout': must be more than zero",
            ),
            (
                "alert_levels: [60, 95, 80]",
                "invalid value '60,95,80' for 'alert_levels': levels must be ascending",
            ),
            ("daily_tokens: -5", "invalid value '-5' for 'daily_tokens'"),
            (
                "upstream: ftp://h",
                "batch.yaml:1: invalid value 'ftp://h' for 'upstream': expected an http:// or https:// URL",
            ),
            (
                "retry_failed: maybe",
                "invalid value 'maybe' for 'retry_failed'",
            ),
            (
                "progress: loud",
                "invalid value 'loud' for 'progress': expected auto, bar, log or none",
            ),
            (
                "log_format: xml",
                "invalid value 'xml' for 'log_format': expected human or json",
            ),
            (
                "input: ''",
                "invalid value '' for 'input': must not be empty",
            ),
        ] {
            let error = settings(
                &["--input", "a", "--output", "b", "--upstream", "http://h"],
                text,
            )
            .unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        // A bad value is an error even where a flag overrides it, and so is a bad target
        // where the other flag overrides it.
        for (flags, text, expected) in [
            (
                &["--rpm", "5"][..],
                "rpm: 0",
                "batch.yaml:1: invalid value '0' for 'rpm'",
            ),
            (
                &["--proxy", "http://p"][..],
                "upstream: h",
                "batch.yaml:1: invalid value 'h' for 'upstream'",
            ),
        ] {
            let error = settings(flags, text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        for (text, expected) in [
            (
                "max-wait: 1h",
                "batch.yaml:1: unknown setting 'max-wait' (did you mean 'max_wait'?)",
            ),
            (
                "input: a\nrequests_per_minute: 5",
                "batch.yaml:2: unknown setting 'requests_per_minute'; the settings are input, output,",
            ),
            (
                "rpm: 5\nrpm: 6",
                "batch.yaml:2: 'rpm' is set twice (first on line 1)",
            ),
        ] {
            let error = file(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn every_flag_has_a_variable_and_a_key() {
        let mut cli = crate::cli::Cli::command();
        cli.build();
        let batch = cli.find_subcommand("batch").unwrap();
        let mut keys = Vec::new();
        for arg in batch.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(
                env,
                Some(format!("SLUICE_BATCH_{}", id.to_ascii_uppercase())),
                "{id}"
            );
            if id != "config" {
                keys.push(id);
            }
        }
        keys.sort_unstable();
        let mut file_keys = FILE_KEYS.keys.to_vec();
        file_keys.sort_unstable();
        assert_eq!(keys, file_keys);
    }

    #[test]
    fn the_example_file_is_valid_and_lists_every_key() {
        let text = include_str!("../../../../examples/egress/batch.yaml");
        let file = ConfigFile::parse(text, "batch.yaml", &FILE_KEYS).unwrap();
        let s = Settings::merge(&args(&[]), Some(&file)).unwrap();
        assert_eq!(
            s.target,
            Target::Upstream("https://api.openai.com".to_owned())
        );
        assert_eq!((s.quota.rpm, s.quota.tpm), (Some(500), Some(200_000)));
        assert_eq!(s.quota.alert_levels, vec![60, 80, 95]);
        for key in FILE_KEYS.keys {
            let listed = text.lines().any(|line| {
                line.trim_start_matches("# ")
                    .starts_with(&format!("{key}:"))
            });
            assert!(listed, "examples/egress/batch.yaml does not list '{key}'");
        }
    }
}
