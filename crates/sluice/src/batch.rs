//! `sluice batch`: flags, logging, the progress display and signals around
//! [`sluice_egress::batch::run`], which does the work.

use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_egress::batch::{BatchConfig, BatchProgress, BatchSummary, NoProgress, ProgressSink};
use sluice_egress::concurrency::ConcurrencyConfig;
use tracing_subscriber::EnvFilter;

use crate::cli::{BatchArgs, DEFAULT_PAUSE_THRESHOLD};
use crate::process::stop_signal;
use crate::values::Concurrency;

/// Exit code of a run that finished with items in the dead letter.
const EXIT_FAILED_ITEMS: u8 = 3;
/// Exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;
/// How often the plain progress log prints a line.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Runs the batch; returns the exit code (0 all done, 3 with failures, 130 interrupted).
pub(crate) fn run(args: &BatchArgs) -> anyhow::Result<ExitCode> {
    let config = config(args);
    let mode = match args.progress.as_str() {
        "auto" if io::stderr().is_terminal() => "bar",
        "auto" => "log",
        other => other,
    };
    let bar = (mode == "bar").then(new_bar);
    init_logging(bar.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            stop_signal().await;
            let _ = stop_tx.send(());
            // A second signal: stop at once. Every result line is one write, so this is as
            // safe as a kill; the next run continues.
            stop_signal().await;
            eprintln!("stopped at once; run the same command again to continue");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        });
        let shutdown = async {
            let _ = stop_rx.await;
        };
        match (&bar, mode) {
            (Some(bar), _) => {
                let sink = BarSink { bar: bar.clone() };
                sluice_egress::batch::run(config, &sink, shutdown).await
            }
            (None, "log") => {
                let sink = LogSink::default();
                sluice_egress::batch::run(config, &sink, shutdown).await
            }
            (None, _) => sluice_egress::batch::run(config, &NoProgress, shutdown).await,
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let summary = summary?;
    println!("{summary}");
    Ok(exit_code(&summary, args))
}

fn exit_code(summary: &BatchSummary, args: &BatchArgs) -> ExitCode {
    if summary.interrupted {
        eprintln!(
            "interrupted: {} of {} items done, {} remaining; run the same command again to continue",
            summary.results, summary.items, summary.remaining
        );
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    let dead = summary.dead_letter_failed + summary.dead_letter_invalid;
    if dead > 0 {
        let retry = if summary.dead_letter_failed > 0 && !args.retry_failed {
            "; add --retry-failed to send the failed items again"
        } else {
            ""
        };
        eprintln!(
            "{dead} items are in the dead letter {}{retry}",
            summary.dead_letter.display()
        );
        return ExitCode::from(EXIT_FAILED_ITEMS);
    }
    ExitCode::SUCCESS
}

/// The engine's configuration from the flags.
fn config(args: &BatchArgs) -> BatchConfig {
    let (base_url, via_proxy) = match (&args.upstream, &args.proxy) {
        (Some(url), _) => (url.clone(), false),
        (None, Some(url)) => (url.clone(), true),
        // clap requires one of them.
        (None, None) => (String::new(), false),
    };
    let mut config = BatchConfig::new(&args.input, &args.output, base_url);
    config.via_proxy = via_proxy;
    if let Some(state) = &args.state {
        config.state_dir.clone_from(state);
    }
    config.retry_failed = args.retry_failed;
    config.max_wait = args.max_wait;
    config.idempotency_keys = !args.no_idempotency_key;
    let egress = &mut config.egress;
    let quota = &args.quota;
    egress.pace.requests_per_minute = quota.rpm;
    egress.pace.tokens_per_minute = quota.tpm;
    egress.quota.requests_per_minute = quota.rpm;
    egress.quota.tokens_per_minute = quota.tpm;
    egress.quota.requests_per_day = quota.daily_limit;
    egress.quota.pause_threshold = quota.pause_threshold.unwrap_or(DEFAULT_PAUSE_THRESHOLD);
    egress.retry.attempt_timeout = args.timeout;
    if let Concurrency::Fixed(n) = args.concurrency {
        egress.concurrency = ConcurrencyConfig {
            initial: n,
            min: n,
            max: n,
            ..ConcurrencyConfig::default()
        };
    }
    config.with_window_for_concurrency()
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// A progress bar on the terminal.
struct BarSink {
    bar: ProgressBar,
}

impl ProgressSink for BarSink {
    fn update(&self, progress: &BatchProgress) {
        self.bar.set_length(progress.total);
        self.bar.set_position(progress.done + progress.failed);
        self.bar.set_message(describe(progress, false));
    }

    fn note(&self, message: &str) {
        self.bar.println(message);
    }
}

/// A plain line every few seconds, for logs.
#[derive(Default)]
struct LogSink {
    last: Mutex<Option<Duration>>,
}

impl ProgressSink for LogSink {
    fn update(&self, progress: &BatchProgress) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| progress.elapsed.saturating_sub(at) >= LOG_EVERY);
        if !(due || progress.finished) {
            return;
        }
        *last = Some(progress.elapsed);
        let line = format!(
            "batch: {}/{} {}",
            progress.done + progress.failed,
            progress.total,
            describe(progress, true)
        );
        let _ = writeln!(io::stderr().lock(), "{line}");
    }

    fn note(&self, message: &str) {
        let _ = writeln!(io::stderr().lock(), "batch: {message}");
    }
}

/// The progress after the count: failures, rate, ETA, quota, pause.
fn describe(progress: &BatchProgress, verbose: bool) -> String {
    let mut parts = vec![
        format!("{} failed", progress.failed),
        format!("{:.0}/min", progress.rate_per_minute),
    ];
    if let Some(eta) = progress.eta {
        parts.push(format!("ETA {}", human(eta)));
    }
    if let Some(percent) = progress.quota_percent {
        parts.push(format!("quota {percent:.0} %"));
    }
    if verbose {
        parts.push(format!(
            "in flight {}/{}",
            progress.in_flight, progress.concurrency_limit
        ));
        parts.push(format!("429s {}", progress.rate_limited));
    }
    if let Some(reason) = &progress.paused {
        parts.push(format!("paused: {reason}"));
    }
    parts.join(" · ")
}

/// `45s`, `12m 5s`, `3h 20m`.
fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Logs to stderr (`SLUICE_LOG`, default `warn`), through the progress bar when there is
/// one so that log lines do not tear it.
fn init_logging(bar: Option<ProgressBar>) {
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match bar {
        Some(bar) => builder.with_writer(move || BarWriter(bar.clone())).init(),
        None => builder.with_writer(io::stderr).init(),
    }
}

/// Writes above the progress bar.
struct BarWriter(ProgressBar);

impl io::Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.suspend(|| io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
