//! `sluice batch`: its settings (flags and environment variables over the `--config` file
//! over defaults, see `crate::settings`), logging, the progress display and signals around
//! [`sluice_egress::batch::run`], which does the work.
//!
//! By default the log shows warnings and what a person running a batch wants to see:
//! the quota alerts (the first, warning level included) and pauses of the egress client,
//! and this command's own notes. With `--log-format json` every line on stderr is a JSON
//! object, progress lines included.

mod settings;

use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_egress::batch::{BatchProgress, BatchSummary, NoProgress, ProgressSink};

use self::settings::Settings;
use crate::cli::BatchArgs;
use crate::process::{init_logging_to, stop_signal};
use crate::values::Concurrency;

/// Exit code of a run that finished with items in the dead letter.
const EXIT_FAILED_ITEMS: u8 = 3;
/// Exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;
/// How often the plain progress log prints a line.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// The log filter unless `SLUICE_LOG` (or `RUST_LOG`) sets one: warnings, the egress
/// client's quota alerts, pauses and resumptions (logged at info from its `quota` module),
/// and this command's own lines.
const DEFAULT_LOG_FILTER: &str = "warn,sluice_egress::quota=info,sluice::batch=info";

/// Runs the batch; returns the exit code (0 all done, 3 with failures, 130 interrupted).
pub(crate) fn run(args: &BatchArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(args).unwrap_or_else(|usage| usage.exit());
    let config = settings.config();
    let json = settings.log_format == "json";
    let mode = match settings.progress.as_str() {
        "auto" if io::stderr().is_terminal() => "bar",
        "auto" => "log",
        other => other,
    };
    let bar = (mode == "bar").then(new_bar);
    match bar.clone() {
        Some(bar) => init_logging_to(&settings.log_format, DEFAULT_LOG_FILTER, move || {
            BarWriter(bar.clone())
        }),
        None => init_logging_to(&settings.log_format, DEFAULT_LOG_FILTER, io::stderr),
    }
    log_settings(&settings);
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
            tell(
                json,
                "stopped at once; run the same command again to continue",
            );
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
                let sink = LogSink {
                    last: Mutex::default(),
                    json,
                };
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
    Ok(exit_code(&summary, &settings))
}

/// The startup lines: which settings came from the config file, and what the run will do.
fn log_settings(settings: &Settings) {
    if let Some((path, note)) = settings.origins.file_note() {
        tracing::info!(config = %path, "{note}");
    }
    let concurrency = match settings.concurrency {
        Concurrency::Auto => "adaptive".to_owned(),
        Concurrency::Fixed(n) => n.to_string(),
    };
    tracing::info!(
        input = %settings.input.display(),
        output = %settings.output.display(),
        destination = %settings.destination(),
        concurrency,
        "sluice batch: {} to {}, results in {}; concurrency {concurrency}; {}",
        settings.input.display(),
        settings.destination(),
        settings.output.display(),
        settings.quota.describe()
    );
}

/// Says `message` to the person running the batch: on stderr, or with `--log-format json`
/// as a log event, so that every line on stderr is JSON.
fn tell(json: bool, message: &str) {
    if json {
        tracing::warn!("{message}");
    } else {
        eprintln!("{message}");
    }
}

fn exit_code(summary: &BatchSummary, settings: &Settings) -> ExitCode {
    let json = settings.log_format == "json";
    if summary.interrupted {
        tell(
            json,
            &format!(
                "interrupted: {} of {} items done, {} remaining; run the same command again to continue",
                summary.results, summary.items, summary.remaining
            ),
        );
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    let dead = summary.dead_letter_failed + summary.dead_letter_invalid;
    if dead > 0 {
        let retry = if summary.dead_letter_failed > 0 && !settings.retry_failed {
            "; add --retry-failed to send the failed items again"
        } else {
            ""
        };
        tell(
            json,
            &format!(
                "{dead} items are in the dead letter {}{retry}",
                summary.dead_letter.display()
            ),
        );
        return ExitCode::from(EXIT_FAILED_ITEMS);
    }
    ExitCode::SUCCESS
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

/// A line every few seconds, for logs: plain text, or with `--log-format json` a log event
/// with the numbers as fields.
struct LogSink {
    last: Mutex<Option<Duration>>,
    json: bool,
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
        if self.json {
            tracing::info!(
                done = progress.done,
                failed = progress.failed,
                total = progress.total,
                in_flight = progress.in_flight,
                rate_per_minute = progress.rate_per_minute,
                quota_percent = progress.quota_percent,
                paused = progress.paused.as_deref(),
                "{line}"
            );
        } else {
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }

    fn note(&self, message: &str) {
        if self.json {
            tracing::info!("batch: {message}");
        } else {
            let _ = writeln!(io::stderr().lock(), "batch: {message}");
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::EnvFilter;

    use super::*;

    /// A log sink that keeps what is written.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_default_filter_shows_quota_events_and_warnings_but_not_the_engines_notes() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(DEFAULT_LOG_FILTER))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // As `QuotaEvent::log` logs a warning-level alert and a resumption.
            tracing::info!(target: "sluice_egress::quota", "quota alert: at 60 %");
            tracing::info!(target: "sluice_egress::quota", "quota resumed: requests_per_day");
            tracing::debug!(target: "sluice_egress::quota", "quota debug");
            // This command's own lines, and anyone's warnings.
            tracing::info!(target: "sluice::batch", "sluice batch: a to b");
            tracing::warn!(target: "sluice_egress::client", "could not persist");
            // The engine's notes, which the progress display shows already.
            tracing::info!(target: "sluice_egress::batch", "resuming: 3 of 5 items done");
            tracing::info!(target: "sluice_store::memory", "store info");
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for shown in [
            "quota alert: at 60 %",
            "quota resumed",
            "sluice batch: a to b",
            "could not persist",
        ] {
            assert!(log.contains(shown), "{shown}: {log}");
        }
        for hidden in ["quota debug", "resuming", "store info"] {
            assert!(!log.contains(hidden), "{hidden}: {log}");
        }
    }
}
