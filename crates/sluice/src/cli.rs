//! The command line: every flag, its help text and how its value is parsed.
//!
//! Values are parsed by the core's own `FromStr` impls ([`Rate`], [`AlgorithmKind`]), so
//! the CLI accepts exactly what configuration files will, and clap turns their errors into
//! `error: invalid value '10/x' for '--policy <RATE>': ...` with exit code 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use sluice_core::{AlgorithmKind, Policy, Rate};

/// Keep traffic inside its limits: rate limits and quotas for your API and for the APIs you
/// call.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Ask a limit (in memory, or shared in Redis) for several decisions in a row and print
    /// each one.
    ///
    /// Useful to see what a policy does before configuring it: how much burst it allows,
    /// how fast it refills, what a client would be told to wait. Refusals are normal
    /// output; the exit code is 0 whenever the decisions were made.
    Check(CheckArgs),

    /// Run the rate limit server: Envoy's rate limit service over gRPC and an HTTP JSON API
    /// (`POST /v1/check`), with Prometheus metrics at `/metrics`.
    ///
    /// Without --config it serves a small built-in demo configuration on the in-memory
    /// store. The configuration is reloaded when its files change; an invalid change is
    /// refused and the previous configuration keeps serving.
    Serve(ServeArgs),
}

/// Flags of `sluice serve`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sluice serve\n  \
    sluice serve --config examples/config/ --http 0.0.0.0:8080 --grpc 0.0.0.0:8081\n  \
    sluice serve --config ratelimit.yaml --redis redis://127.0.0.1:6379/\n  \
    sluice serve --check-config ratelimit.yaml\n\n\
    Then: curl -s localhost:8080/v1/check -d '{\"domain\":\"demo\",\"descriptors\":[{\"entries\":[{\"key\":\"user\",\"value\":\"42\"}]}]}'")]
pub(crate) struct ServeArgs {
    /// A sluice config file, an envoy ratelimit domain file, or a directory of them.
    #[arg(long, value_name = "PATH", env = "SLUICE_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Address of the HTTP JSON API, metrics and health checks.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "SLUICE_HTTP"
    )]
    pub(crate) http: SocketAddr,

    /// Address of the gRPC rate limit service (envoy.service.ratelimit.v3).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8081",
        env = "SLUICE_GRPC"
    )]
    pub(crate) grpc: SocketAddr,

    /// Share limits through this Redis instead of the config's store (several
    /// comma-separated URLs: the seed nodes of a Redis Cluster).
    #[arg(long, value_name = "URL", env = "SLUICE_REDIS_URL")]
    pub(crate) redis: Option<String>,

    /// Validate this configuration, print what it holds or what is wrong, and exit
    /// (non-zero when invalid).
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub(crate) check_config: Option<PathBuf>,

    /// Ask Envoy to add the IETF `RateLimit-Policy` and `RateLimit` headers to responses.
    #[arg(long)]
    pub(crate) ratelimit_headers: bool,

    /// Do not reload the configuration when its files change (SIGHUP still reloads).
    #[arg(long)]
    pub(crate) no_watch: bool,

    /// Enable the admin API (`/admin/v1/...`) and the dashboard's data, for clients that send
    /// `Authorization: Bearer TOKEN`. Without it the admin API is disabled.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SLUICE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub(crate) admin_token: Option<String>,

    /// Keep overrides in this JSON file so they survive a restart (in-memory store only;
    /// with Redis, overrides live in Redis).
    #[arg(long, value_name = "PATH", env = "SLUICE_OVERRIDES_FILE")]
    pub(crate) overrides_file: Option<PathBuf>,

    /// Log lines for humans or one JSON object per line.
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub(crate) log_format: String,
}

/// Flags of `sluice check`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sluice check --policy 10/s --times 12\n  \
    sluice check --policy 3/min --algorithm sliding_log --times 5 --json\n  \
    sluice check --policy 5/s --burst 2 --times 20 --interval 100ms\n  \
    sluice check --policy 100/min --key alice --redis redis://127.0.0.1:6379/")]
pub(crate) struct CheckArgs {
    /// The rate: LIMIT/PERIOD, e.g. 100/s, 5000/min, 10/1h30m, 3/500ms.
    #[arg(long, value_name = "RATE")]
    pub(crate) policy: Rate,

    /// How the limit counts: gcra (token bucket), fixed_window, sliding_window,
    /// sliding_log or concurrency.
    #[arg(long, value_name = "NAME", default_value = "gcra")]
    pub(crate) algorithm: AlgorithmKind,

    /// Most units admitted at once (gcra only; defaults to the limit).
    #[arg(long, value_name = "N")]
    pub(crate) burst: Option<u64>,

    /// The key whose limit is asked. Without --redis every run starts from a fresh
    /// in-memory store.
    #[arg(long, value_name = "KEY", default_value = "cli")]
    pub(crate) key: String,

    /// Decide in a shared Redis instead of in memory (e.g. redis://127.0.0.1:6379/), so
    /// that several `sluice check` processes on one key share one limit.
    #[arg(long, value_name = "URL", env = "SLUICE_REDIS_URL")]
    pub(crate) redis: Option<String>,

    /// Units each decision asks for (e.g. tokens of an LLM call).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) cost: u64,

    /// How many decisions to make, one after the other.
    #[arg(long, value_name = "M", default_value_t = 1, value_parser = at_least_one)]
    pub(crate) times: u64,

    /// Pause between decisions, to watch the limit refill: e.g. 50ms, 1.5s, 1m30s.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub(crate) interval: Duration,

    /// Print one JSON object per decision instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

impl CheckArgs {
    /// The policy the flags describe. A combination the core rejects (a burst on an
    /// algorithm without one, a zero burst) comes back as a usage error naming `--burst`.
    pub(crate) fn policy(&self) -> Result<Policy, clap::Error> {
        let policy = Policy::new(self.algorithm, self.policy);
        let Some(burst) = self.burst else {
            return Ok(policy);
        };
        policy.with_burst(burst).map_err(|err| {
            let mut cli = Cli::command();
            cli.build();
            let message = format!("invalid value '{burst}' for '--burst <N>': {err}");
            match cli.find_subcommand_mut("check") {
                Some(check) => check.error(ErrorKind::ValueValidation, message),
                None => cli.error(ErrorKind::ValueValidation, message),
            }
        })
    }
}

/// A count that must be at least one.
fn at_least_one(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(format!("not a whole number: {err}")),
    }
}

/// Parses a duration with the core's one duration grammar (`50ms`, `1.5s`, `1m30s`, `0`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    sluice_core::time::parse_duration(text.trim()).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_in_every_documented_form() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("0", ms(0)),
            ("50ms", ms(50)),
            ("1.5s", ms(1500)),
            ("1m30s", ms(90_000)),
            ("2min", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("250us", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_name_the_bad_part() {
        for (text, part) in [
            ("50", "missing unit"),
            ("5x", "\"x\""),
            ("ms", "\"ms\""),
            ("", "empty"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(part), "{text}: {err}");
        }
    }

    #[test]
    fn burst_on_a_window_is_a_usage_error_naming_the_flag() {
        let cli = Cli::try_parse_from([
            "sluice",
            "check",
            "--policy",
            "10/s",
            "--algorithm",
            "fixed_window",
            "--burst",
            "3",
        ])
        .unwrap();
        let Command::Check(args) = cli.command else {
            panic!("parsed as check")
        };
        let err = args.policy().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("'--burst <N>'"), "{err}");
    }

    #[test]
    fn times_must_be_positive() {
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("x").is_err());
        assert_eq!(at_least_one("3"), Ok(3));
    }
}
