//! The command line: every flag, its help text and how its value is parsed.
//!
//! Values are parsed by the core's own `FromStr` impls ([`Rate`], [`AlgorithmKind`]), so
//! the CLI accepts exactly what configuration files will, and clap turns their errors into
//! `error: invalid value '10/x' for '--policy <RATE>': ...` with exit code 2. The other
//! values are parsed by [`crate::values`], which config files share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use sluice_core::{AlgorithmKind, Backoff, Policy, Rate};

use crate::values::{
    AlertLevels, Concurrency, Entry, LOG_FORMATS, LimitSpec, PROGRESS_MODES, ServerUrl, Token,
    at_least_one, parse_alert_levels, parse_backoff, parse_base_url, parse_bool, parse_concurrency,
    parse_count, parse_duration, parse_percent, parse_reason, parse_size, parse_timeout, parse_ttl,
};

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

    /// Show how a running server sees one key: the rule that matches it, any override, the
    /// units left and when they refill, and why.
    ///
    /// Talks to the admin API of `sluice serve --admin-token TOKEN`; nothing is debited.
    Status(StatusArgs),

    /// Forget one key's counters on a running server, so it has its whole limit again.
    ///
    /// Talks to the admin API of `sluice serve --admin-token TOKEN`. Exits 1 when no limited
    /// rule applies to the key.
    Reset(ResetArgs),

    /// Set, list or delete overrides on a running server: a different limit, no limit, or a
    /// block for one exact key, until deleted or until they expire.
    ///
    /// Talks to the admin API of `sluice serve --admin-token TOKEN`. Overrides live where the
    /// server keeps its state (in Redis, every instance applies them within a second).
    Override(OverrideArgs),

    /// Run a reverse proxy in front of a quota-limited upstream (OpenAI, any HTTP API that
    /// answers 429): every request is paced to the quota, retried when the upstream says
    /// so, and answered at once with 429 or 503 when it cannot go in time.
    ///
    /// Point an SDK's base URL at it. Streams are relayed as they arrive; Authorization
    /// passes through untouched. Its own endpoints: /_sluice/healthz and /_sluice/metrics
    /// (also /healthz and /metrics unless --no-root-endpoints).
    Proxy(ProxyArgs),

    /// Send a JSON Lines file of requests to a quota-limited upstream, paced to its quota,
    /// and write each answer to a JSON Lines results file. Resumable: after Ctrl-C or a
    /// kill, run the same command again and it continues where it stopped.
    Batch(BatchArgs),
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

    /// Ask Envoy to add the IETF `RateLimit-Policy` and `RateLimit` headers to responses,
    /// and `Retry-After` (the wait for the next unit) to refusals.
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

    /// A new connection must send a complete request head within this, and on HTTP/1 every
    /// later one within this of the previous answer; else it is closed. [default: 10s]
    #[arg(long, value_name = "DURATION", env = "SLUICE_HEADER_READ_TIMEOUT", value_parser = parse_timeout, help_heading = "Connections (each port)")]
    pub(crate) header_read_timeout: Option<Duration>,

    /// A connection with no request in flight for this long is closed. [default: 60s]
    #[arg(long, value_name = "DURATION", env = "SLUICE_IDLE_TIMEOUT", value_parser = parse_timeout, help_heading = "Connections (each port)")]
    pub(crate) idle_timeout: Option<Duration>,

    /// A request not answered within this (its body included) gets HTTP 408 or gRPC
    /// CANCELLED. [default: 30s]
    #[arg(long, value_name = "DURATION", env = "SLUICE_REQUEST_TIMEOUT", value_parser = parse_timeout, help_heading = "Connections (each port)")]
    pub(crate) request_timeout: Option<Duration>,

    /// Open connections per port; beyond it new connections are closed at once (logged,
    /// and counted in sluice_connections_refused_total). [default: 4096]
    #[arg(long, value_name = "N", env = "SLUICE_MAX_CONNECTIONS", value_parser = parse_count, help_heading = "Connections (each port)")]
    pub(crate) max_connections: Option<u32>,

    /// HTTP/2: streams one connection may have open at once. [default: 256]
    #[arg(long, value_name = "N", env = "SLUICE_HTTP2_MAX_CONCURRENT_STREAMS", value_parser = parse_count, help_heading = "Connections (each port)")]
    pub(crate) http2_max_concurrent_streams: Option<u32>,

    /// HTTP/2: ping a connection after this long without a frame from it. [default: 30s]
    #[arg(long, value_name = "DURATION", env = "SLUICE_HTTP2_KEEPALIVE_INTERVAL", value_parser = parse_timeout, help_heading = "Connections (each port)")]
    pub(crate) http2_keepalive_interval: Option<Duration>,

    /// HTTP/2: close a connection whose answer to a ping takes longer. [default: 20s]
    #[arg(long, value_name = "DURATION", env = "SLUICE_HTTP2_KEEPALIVE_TIMEOUT", value_parser = parse_timeout, help_heading = "Connections (each port)")]
    pub(crate) http2_keepalive_timeout: Option<Duration>,

    /// HTTP/2: the largest frame a client may send, 16KiB to 16MiB - 1. [default: 16KiB]
    #[arg(long, value_name = "SIZE", env = "SLUICE_HTTP2_MAX_FRAME_SIZE", value_parser = parse_size, help_heading = "Connections (each port)")]
    pub(crate) http2_max_frame_size: Option<usize>,

    /// HTTP/2: the largest header list a request may have. [default: 16KiB]
    #[arg(long, value_name = "SIZE", env = "SLUICE_HTTP2_MAX_HEADER_LIST_SIZE", value_parser = parse_size, help_heading = "Connections (each port)")]
    pub(crate) http2_max_header_list_size: Option<usize>,

    /// Log lines for humans or one JSON object per line.
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub(crate) log_format: String,
}

/// How to reach a server's admin API; shared by `status`, `reset` and `override`.
#[derive(Debug, Args)]
pub(crate) struct AdminConnection {
    /// The server's HTTP address (its --http), as an http:// URL. https is not supported
    /// yet: reach a remote server through an SSH tunnel or a TLS-terminating proxy.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        env = "SLUICE_SERVER"
    )]
    pub(crate) server: ServerUrl,

    /// The admin token the server was started with (its --admin-token). Prefer the
    /// environment variable: a flag is visible to other users in the process list.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SLUICE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Token,

    /// Print the server's JSON answer (one line) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The key a command is about: a domain and its descriptor entries, in order.
#[derive(Debug, Args)]
pub(crate) struct DescriptorArgs {
    /// The domain, as in the server's configuration.
    #[arg(long, value_name = "DOMAIN", value_parser = NonEmptyStringValueParser::new())]
    pub(crate) domain: String,

    /// A descriptor entry, NAME=VALUE (NAME alone: an empty value). Repeat it for a
    /// descriptor of several entries, in the order the configuration nests them.
    #[arg(long = "key", value_name = "NAME=VALUE", required = true)]
    pub(crate) keys: Vec<Entry>,
}

/// Flags of `sluice status`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    export SLUICE_ADMIN_TOKEN=...\n  \
    sluice status --domain api --key user=42\n  \
    sluice status --domain api --key user=42 --key path=/search --server http://10.0.0.5:8080\n  \
    sluice status --domain api --key user=42 --json")]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) descriptor: DescriptorArgs,

    #[command(flatten)]
    pub(crate) connection: AdminConnection,
}

/// Flags of `sluice reset`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    export SLUICE_ADMIN_TOKEN=...\n  \
    sluice reset --domain api --key user=42\n  \
    sluice reset --domain api --key user=42 --key path=/search")]
pub(crate) struct ResetArgs {
    #[command(flatten)]
    pub(crate) descriptor: DescriptorArgs,

    #[command(flatten)]
    pub(crate) connection: AdminConnection,
}

/// Flags of `sluice override`.
#[derive(Debug, Args)]
pub(crate) struct OverrideArgs {
    /// What to do with overrides.
    #[command(subcommand)]
    pub(crate) command: OverrideCommand,
}

/// The subcommands of `sluice override`.
#[derive(Debug, Subcommand)]
pub(crate) enum OverrideCommand {
    /// Set (or replace) the override of one key: a limit of its own, no limit, or a block.
    Set(OverrideSetArgs),

    /// List the overrides in force.
    List(OverrideListArgs),

    /// Delete the override of one key: the configured limit applies again.
    Delete(OverrideDeleteArgs),
}

/// What an override does: exactly one of `--limit`, `--unlimited`, `--block`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct OverrideAction {
    /// Apply this limit instead of the configured one: N/UNIT, with UNIT second, minute,
    /// hour or day (or s, min, h, d), e.g. 100/min.
    #[arg(long, value_name = "N/UNIT")]
    pub(crate) limit: Option<LimitSpec>,

    /// Let every request of the key through.
    #[arg(long)]
    pub(crate) unlimited: bool,

    /// Refuse every request of the key.
    #[arg(long)]
    pub(crate) block: bool,
}

/// Flags of `sluice override set`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    export SLUICE_ADMIN_TOKEN=...\n  \
    sluice override set --domain api --key user=42 --limit 1000/min --reason \"paid plan\"\n  \
    sluice override set --domain api --key user=42 --block --ttl 1h --reason abuse\n  \
    sluice override set --domain api --key user=42 --unlimited --ttl 30m")]
pub(crate) struct OverrideSetArgs {
    #[command(flatten)]
    pub(crate) descriptor: DescriptorArgs,

    #[command(flatten)]
    pub(crate) action: OverrideAction,

    /// How --limit counts: gcra (token bucket), fixed_window, sliding_window, sliding_log
    /// or concurrency (default gcra).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["unlimited", "block"])]
    pub(crate) algorithm: Option<AlgorithmKind>,

    /// Delete the override after this long (at least 1s, in whole seconds): e.g. 90s, 1h,
    /// 1h30m, 7d. Without it the override stays until deleted.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub(crate) ttl: Option<u64>,

    /// Why, for the next operator (shown by `sluice override list`).
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    pub(crate) reason: Option<String>,

    #[command(flatten)]
    pub(crate) connection: AdminConnection,
}

/// Flags of `sluice override list`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    export SLUICE_ADMIN_TOKEN=...\n  \
    sluice override list\n  \
    sluice override list --json")]
pub(crate) struct OverrideListArgs {
    #[command(flatten)]
    pub(crate) connection: AdminConnection,
}

/// Flags of `sluice override delete`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    export SLUICE_ADMIN_TOKEN=...\n  \
    sluice override delete --domain api --key user=42")]
pub(crate) struct OverrideDeleteArgs {
    #[command(flatten)]
    pub(crate) descriptor: DescriptorArgs,

    #[command(flatten)]
    pub(crate) connection: AdminConnection,
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

/// A usage error (exit code 2) about a value clap could not check itself, shown with the
/// usage of the subcommand at `path` (e.g. `["override", "set"]`).
pub(crate) fn usage_error(path: &[&str], message: String) -> clap::Error {
    fn scoped(command: &mut clap::Command, path: &[&str], message: String) -> clap::Error {
        if let Some((name, rest)) = path.split_first()
            && let Some(sub) = command.find_subcommand_mut(name)
        {
            return scoped(sub, rest, message);
        }
        command.error(ErrorKind::ValueValidation, message)
    }
    let mut cli = Cli::command();
    cli.build();
    scoped(&mut cli, path, message)
}

/// Flags of `sluice batch`.
///
/// Every setting also comes from a `SLUICE_BATCH_*` variable and from the --config file;
/// each is `None` here unless a flag or a variable set it, so that the file can fill it in
/// (see `batch::Settings`).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").args(["upstream", "proxy"])))]
#[command(
    after_help = "Each input line: {\"id\": \"a1\", \"method\": \"POST\", \"path\": \"/v1/chat/completions\", \"headers\": {...}, \"body\": {...}, \"priority\": 0}\n\
    Each results line: {\"id\", \"status\", \"body\", \"attempts\", \"latency_ms\"}. Invalid lines and items that\n\
    failed for good go to <state>/dead-letter.jsonl with their line number and reason.\n\n\
    Settings come from flags, then SLUICE_BATCH_* environment variables, then the --config\n\
    file (examples/egress/batch.yaml), then the defaults. Logs (stderr) show quota alerts and\n\
    pauses; SLUICE_LOG sets another filter (e.g. debug).\n\n\
    Exit codes: 0 every item in the results; 3 finished with items in the dead letter;\n\
    130 interrupted (run the same command again to continue); 1 error; 2 bad flags.\n\n\
    Examples:\n  \
    sluice batch --input requests.jsonl --output results.jsonl --upstream https://api.openai.com --rpm 500 --tpm 200000\n  \
    sluice batch --input requests.jsonl --output results.jsonl --proxy http://127.0.0.1:8090\n  \
    sluice batch --input requests.jsonl --output results.jsonl --upstream https://api.openai.com --retry-failed\n  \
    sluice batch --config batch.yaml --daily-limit 10000 --alert-levels 50,90 --log-format json"
)]
#[command(mut_arg("rpm", |arg| arg.env("SLUICE_BATCH_RPM")))]
#[command(mut_arg("tpm", |arg| arg.env("SLUICE_BATCH_TPM")))]
#[command(mut_arg("daily_limit", |arg| arg.env("SLUICE_BATCH_DAILY_LIMIT")))]
#[command(mut_arg("daily_tokens", |arg| arg.env("SLUICE_BATCH_DAILY_TOKENS")))]
#[command(mut_arg("pause_threshold", |arg| arg.env("SLUICE_BATCH_PAUSE_THRESHOLD")))]
#[command(mut_arg("alert_levels", |arg| arg.env("SLUICE_BATCH_ALERT_LEVELS")))]
#[command(mut_arg("backoff_rate_limited", |arg| arg.env("SLUICE_BATCH_BACKOFF_RATE_LIMITED")))]
#[command(mut_arg("backoff_quota_exhausted", |arg| arg.env("SLUICE_BATCH_BACKOFF_QUOTA_EXHAUSTED")))]
#[command(mut_arg("backoff_server_error", |arg| arg.env("SLUICE_BATCH_BACKOFF_SERVER_ERROR")))]
pub(crate) struct BatchArgs {
    /// Read the settings from this YAML file (keys as the flags are named, in snake_case:
    /// input, upstream, rpm, alert_levels, ...). Flags and environment variables override
    /// it.
    #[arg(long, value_name = "FILE", env = "SLUICE_BATCH_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// The requests: one JSON object per line. Required here, in the environment or in the
    /// --config file.
    #[arg(long, value_name = "PATH", env = "SLUICE_BATCH_INPUT")]
    pub(crate) input: Option<PathBuf>,

    /// The results: one JSON object per line, appended to (it records what is done).
    /// Required here, in the environment or in the --config file.
    #[arg(long, value_name = "PATH", env = "SLUICE_BATCH_OUTPUT")]
    pub(crate) output: Option<PathBuf>,

    /// Send to this upstream: each item's path is appended (e.g. https://api.openai.com).
    /// This or --proxy is required, here, in the environment or in the --config file.
    #[arg(long, value_name = "URL", env = "SLUICE_BATCH_UPSTREAM", value_parser = parse_base_url)]
    pub(crate) upstream: Option<String>,

    /// Send through this `sluice proxy` instead (its base URL); requests carry their
    /// priority in x-sluice-priority.
    #[arg(long, value_name = "URL", env = "SLUICE_BATCH_PROXY", value_parser = parse_base_url)]
    pub(crate) proxy: Option<String>,

    /// Where the dead letter, the in-flight journal and the quota state live (default:
    /// <output>.state next to the results).
    #[arg(long, value_name = "DIR", env = "SLUICE_BATCH_STATE")]
    pub(crate) state: Option<PathBuf>,

    /// Requests in flight at once: auto (adaptive, 1 to 100) or a fixed number (default
    /// auto).
    #[arg(long, value_name = "auto|N", env = "SLUICE_BATCH_CONCURRENCY", value_parser = parse_concurrency)]
    pub(crate) concurrency: Option<Concurrency>,

    /// Send the items that failed for good in an earlier run again. --retry-failed=false
    /// turns off what the config file turned on.
    #[arg(
        long,
        value_name = "BOOL",
        env = "SLUICE_BATCH_RETRY_FAILED",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    pub(crate) retry_failed: Option<bool>,

    #[command(flatten)]
    pub(crate) quota: QuotaArgs,

    #[command(flatten)]
    pub(crate) backoff: BackoffArgs,

    /// How long one item may wait for the quota or a failing upstream before it fails for
    /// good: e.g. 30m, 24h (default 24h).
    #[arg(long, value_name = "DURATION", env = "SLUICE_BATCH_MAX_WAIT", value_parser = parse_duration)]
    pub(crate) max_wait: Option<Duration>,

    /// How long one attempt may take before it times out (default 10m).
    #[arg(long, value_name = "DURATION", env = "SLUICE_BATCH_TIMEOUT", value_parser = parse_timeout)]
    pub(crate) timeout: Option<Duration>,

    /// Do not send Idempotency-Key headers (then a POST is not retried after a timeout or
    /// a broken connection). --no-idempotency-key=false turns off what the config file
    /// turned on.
    #[arg(
        long,
        value_name = "BOOL",
        env = "SLUICE_BATCH_NO_IDEMPOTENCY_KEY",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    pub(crate) no_idempotency_key: Option<bool>,

    /// How to show progress: a bar on a terminal, else a log line every few seconds
    /// (default auto).
    #[arg(long, value_name = "HOW", env = "SLUICE_BATCH_PROGRESS", value_parser = PROGRESS_MODES)]
    pub(crate) progress: Option<String>,

    /// Log lines for humans or one JSON object per line, progress lines included (default
    /// human).
    #[arg(long, value_name = "FORMAT", env = "SLUICE_BATCH_LOG_FORMAT", value_parser = LOG_FORMATS)]
    pub(crate) log_format: Option<String>,
}

/// The upstream's quota as `sluice proxy` and `sluice batch` both take it: one
/// declaration, one validation. Each subcommand gives every flag its variable
/// (`SLUICE_PROXY_RPM`, `SLUICE_BATCH_RPM`, ...) and reads the same keys from its config
/// file (`crate::settings::QuotaSettings`).
#[derive(Debug, Args)]
pub(crate) struct QuotaArgs {
    /// The upstream's requests per minute, when known in advance (the pace starts there;
    /// its x-ratelimit headers correct it).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub(crate) rpm: Option<u64>,

    /// The upstream's tokens per minute, when known in advance.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub(crate) tpm: Option<u64>,

    /// Requests per UTC day; the count survives restarts in the proxy's --state-file or
    /// the batch's state directory.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub(crate) daily_limit: Option<u64>,

    /// Tokens per UTC day (counted from the answers' usage), kept as --daily-limit is.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub(crate) daily_tokens: Option<u64>,

    /// Pause batch work at this percentage of any quota until its reset, 1 to 100
    /// (default 80). In the proxy, requests sent with x-sluice-priority: interactive go on
    /// to 100.
    #[arg(long, value_name = "P", value_parser = parse_percent)]
    pub(crate) pause_threshold: Option<u8>,

    /// Quota usage percentages that log an alert, ascending (warning, critical...,
    /// emergency; default 60,80,95).
    #[arg(long, value_name = "P,P,...", value_parser = parse_alert_levels)]
    pub(crate) alert_levels: Option<AlertLevels>,
}

/// How long a retry waits after each class of failure when the upstream gave no
/// `Retry-After`, as `sluice proxy` and `sluice batch` both take it (variables and file
/// keys as for [`QuotaArgs`]; `crate::settings::BackoffSettings`).
#[derive(Debug, Args)]
pub(crate) struct BackoffArgs {
    /// Backoff after a 429 without Retry-After, MIN..MAX: the first retry waits between
    /// half and all of MIN, each next one up to twice as long, at most MAX (default
    /// 60s..5m).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_backoff)]
    pub(crate) backoff_rate_limited: Option<Backoff>,

    /// Backoff after the upstream says its quota is spent (default 5m..1h).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_backoff)]
    pub(crate) backoff_quota_exhausted: Option<Backoff>,

    /// Backoff after a server error, a timeout or a broken connection (default 500ms..4s).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_backoff)]
    pub(crate) backoff_server_error: Option<Backoff>,
}

/// Flags of `sluice proxy`.
///
/// Every setting but --no-root-endpoints also comes from a `SLUICE_PROXY_*` variable and
/// from the --config file; each is `None` here unless a flag or a variable set it, so that
/// the file can fill it in (see `proxy::Settings`).
#[derive(Debug, Args)]
#[command(
    after_help = "Settings come from flags, then SLUICE_PROXY_* environment variables, then the\n\
    --config file (examples/egress/openai.yaml), then the defaults.\n\n\
    Examples:\n  \
    sluice proxy --upstream https://api.openai.com --rpm 500 --tpm 200000\n  \
    sluice proxy --upstream https://api.openai.com --listen 0.0.0.0:8090 --redis redis://10.0.0.7:6379/ --daily-limit 10000\n  \
    sluice proxy --config egress.yaml --rpm 1000\n  \
    SLUICE_PROXY_UPSTREAM=http://127.0.0.1:8080 sluice proxy --log-format json\n\n\
    Then point the SDK at it: OpenAI(base_url=\"http://127.0.0.1:8090/v1\"). Requests may carry\n\
    x-sluice-priority (batch, interactive or 0-255), x-sluice-tenant and x-sluice-max-wait (e.g. 30s)."
)]
#[command(mut_arg("rpm", |arg| arg.env("SLUICE_PROXY_RPM")))]
#[command(mut_arg("tpm", |arg| arg.env("SLUICE_PROXY_TPM")))]
#[command(mut_arg("daily_limit", |arg| arg.env("SLUICE_PROXY_DAILY_LIMIT")))]
#[command(mut_arg("daily_tokens", |arg| arg.env("SLUICE_PROXY_DAILY_TOKENS")))]
#[command(mut_arg("pause_threshold", |arg| arg.env("SLUICE_PROXY_PAUSE_THRESHOLD")))]
#[command(mut_arg("alert_levels", |arg| arg.env("SLUICE_PROXY_ALERT_LEVELS")))]
#[command(mut_arg("backoff_rate_limited", |arg| arg.env("SLUICE_PROXY_BACKOFF_RATE_LIMITED")))]
#[command(mut_arg("backoff_quota_exhausted", |arg| arg.env("SLUICE_PROXY_BACKOFF_QUOTA_EXHAUSTED")))]
#[command(mut_arg("backoff_server_error", |arg| arg.env("SLUICE_PROXY_BACKOFF_SERVER_ERROR")))]
pub(crate) struct ProxyArgs {
    /// Read the settings from this YAML file (keys as the flags are named, in snake_case:
    /// upstream, rpm, pause_threshold, ...). Flags and environment variables override it.
    #[arg(long, value_name = "FILE", env = "SLUICE_PROXY_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// The upstream's base URL; each request's path and query are appended to it
    /// (https://api.openai.com, or https://api.openai.com/v1 for clients whose base URL has
    /// no /v1). Required here, in the environment or in the --config file.
    #[arg(long, value_name = "URL", env = "SLUICE_PROXY_UPSTREAM")]
    pub(crate) upstream: Option<String>,

    /// Where the proxy listens (default 127.0.0.1:8090).
    #[arg(long, value_name = "ADDR", env = "SLUICE_PROXY_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,

    /// Pace through this Redis, shared with every proxy (and sluice client) of the same
    /// --name there, so that several machines spend one quota (comma-separated URLs: the
    /// seed nodes of a Redis Cluster).
    #[arg(
        long,
        value_name = "URL",
        env = "SLUICE_PROXY_REDIS",
        hide_env_values = true
    )]
    pub(crate) redis: Option<String>,

    /// The upstream's name in logs and metrics, and the key of its shared pacing state
    /// (default: the upstream's host and port).
    #[arg(long, value_name = "NAME", env = "SLUICE_PROXY_NAME", value_parser = NonEmptyStringValueParser::new())]
    pub(crate) name: Option<String>,

    #[command(flatten)]
    pub(crate) quota: QuotaArgs,

    #[command(flatten)]
    pub(crate) backoff: BackoffArgs,

    /// The most requests in flight to the upstream at once (the adaptive limit stays at or
    /// below it; default 100).
    #[arg(long, value_name = "N", env = "SLUICE_PROXY_MAX_CONCURRENCY", value_parser = parse_count)]
    pub(crate) max_concurrency: Option<u32>,

    /// Attempts per request, the first included (1: never retry; default 5).
    #[arg(long, value_name = "N", env = "SLUICE_PROXY_MAX_ATTEMPTS", value_parser = parse_count)]
    pub(crate) max_attempts: Option<u32>,

    /// How long an attempt may wait for the upstream's answer to begin: e.g. 30s, 10m
    /// (default 10m).
    #[arg(long, value_name = "DURATION", env = "SLUICE_PROXY_ATTEMPT_TIMEOUT", value_parser = parse_timeout)]
    pub(crate) attempt_timeout: Option<Duration>,

    /// The largest request body accepted, in bytes (suffixes KiB, MiB, GiB; default 8MiB);
    /// larger ones get 413.
    #[arg(long, value_name = "SIZE", env = "SLUICE_PROXY_MAX_REQUEST_BODY", value_parser = parse_size)]
    pub(crate) max_request_body: Option<usize>,

    /// Keep the quota counts (daily ones included) in this JSON file across restarts.
    #[arg(long, value_name = "PATH", env = "SLUICE_PROXY_STATE_FILE")]
    pub(crate) state_file: Option<PathBuf>,

    /// Let identical requests in flight at the same moment share one upstream call and its
    /// answer: same method, path, query, body and headers (credentials included), GET,
    /// HEAD or a JSON POST, never a stream. Off by default; --coalesce=false turns off what
    /// the config file turned on.
    #[arg(
        long,
        value_name = "BOOL",
        env = "SLUICE_PROXY_COALESCE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    pub(crate) coalesce: Option<bool>,

    /// Forward GET /healthz and /metrics to the upstream instead of answering them (the
    /// proxy's own stay at /_sluice/healthz and /_sluice/metrics).
    #[arg(long)]
    pub(crate) no_root_endpoints: bool,

    /// Log lines for humans or one JSON object per line (default human).
    #[arg(long, value_name = "FORMAT", value_parser = LOG_FORMATS)]
    pub(crate) log_format: Option<String>,
}

/// `sluice COMMAND FLAGS...` parsed, for tests.
#[cfg(test)]
fn parse_command(command: &str, flags: &[&str]) -> Result<Command, clap::Error> {
    let all = ["sluice", command].into_iter().chain(flags.iter().copied());
    Cli::try_parse_from(all).map(|cli| cli.command)
}

/// The flags of `sluice proxy FLAGS...`, for tests.
#[cfg(test)]
pub(crate) fn proxy_args(flags: &[&str]) -> Result<ProxyArgs, clap::Error> {
    match parse_command("proxy", flags)? {
        Command::Proxy(args) => Ok(args),
        other => panic!("parsed as {other:?}"),
    }
}

/// The flags of `sluice batch FLAGS...`, for tests.
#[cfg(test)]
pub(crate) fn batch_args(flags: &[&str]) -> Result<BatchArgs, clap::Error> {
    match parse_command("batch", flags)? {
        Command::Batch(args) => Ok(args),
        other => panic!("parsed as {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
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
    fn an_override_has_exactly_one_action() {
        let set = |extra: &[&str]| {
            let mut args = vec![
                "sluice", "override", "set", "--domain", "api", "--key", "u=1",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|_| ()).map_err(|e| e.kind())
        };
        assert_eq!(set(&["--token", "t", "--block"]), Ok(()));
        assert_eq!(
            set(&[
                "--token",
                "t",
                "--limit",
                "5/min",
                "--algorithm",
                "fixed_window"
            ]),
            Ok(())
        );
        assert_eq!(
            set(&["--token", "t", "--block", "--unlimited"]),
            Err(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            set(&["--token", "t"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            set(&["--token", "t", "--block", "--algorithm", "gcra"]),
            Err(ErrorKind::ArgumentConflict)
        );
    }

    fn proxy(args: &[&str]) -> Result<ProxyArgs, ErrorKind> {
        proxy_args(args).map_err(|e| e.kind())
    }

    #[test]
    fn proxy_flags_left_out_are_none_so_the_config_file_can_set_them() {
        let args = proxy(&[]).unwrap();
        assert_eq!(args.upstream, None);
        assert_eq!(args.listen, None);
        assert_eq!(args.quota.pause_threshold, None);
        assert_eq!(args.coalesce, None);
        assert_eq!(args.log_format, None);
        let args = proxy(&["--coalesce", "--rpm", "5", "--pause-threshold", "90"]).unwrap();
        assert_eq!(args.coalesce, Some(true));
        assert_eq!(args.quota.rpm, Some(5));
        assert_eq!(args.quota.pause_threshold, Some(90));
        assert_eq!(proxy(&["--coalesce=false"]).unwrap().coalesce, Some(false));
        assert_eq!(
            proxy(&["--coalesce=perhaps"]).unwrap_err(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            proxy(&["--log-format", "xml"]).unwrap_err(),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn batch_and_proxy_share_the_quota_flags() {
        let cli = Cli::try_parse_from([
            "sluice",
            "batch",
            "--input",
            "in.jsonl",
            "--output",
            "out.jsonl",
            "--upstream",
            "http://h",
            "--rpm",
            "10",
            "--pause-threshold",
            "95%",
        ])
        .unwrap();
        let Command::Batch(args) = cli.command else {
            panic!("parsed as batch")
        };
        assert_eq!(args.quota.rpm, Some(10));
        assert_eq!(args.quota.pause_threshold, Some(95));
        // Each subcommand gives the quota flags variables of its own.
        let mut cli = Cli::command();
        cli.build();
        let env = |command: &str, arg: &str| {
            cli.find_subcommand(command)
                .and_then(|c| c.get_arguments().find(|a| a.get_id() == arg))
                .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        };
        assert_eq!(env("proxy", "rpm").as_deref(), Some("SLUICE_PROXY_RPM"));
        assert_eq!(
            env("proxy", "pause_threshold").as_deref(),
            Some("SLUICE_PROXY_PAUSE_THRESHOLD")
        );
        assert_eq!(env("batch", "rpm").as_deref(), Some("SLUICE_BATCH_RPM"));
        assert_eq!(
            env("batch", "alert_levels").as_deref(),
            Some("SLUICE_BATCH_ALERT_LEVELS")
        );
        assert_eq!(
            env("proxy", "daily_tokens").as_deref(),
            Some("SLUICE_PROXY_DAILY_TOKENS")
        );
    }
}
