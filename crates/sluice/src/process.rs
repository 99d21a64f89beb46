//! What every long-running subcommand sets up the same way: logging and stop signals.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The log filter: `SLUICE_LOG`, else `RUST_LOG`, else `default` (e.g. `info`).
fn log_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default))
}

/// Logs to stderr, as human lines or (`format == "json"`) one JSON object per event, with
/// the filter `SLUICE_LOG`, else `RUST_LOG`, else `info`.
pub(crate) fn init_logging(format: &str) {
    init_logging_to(format, "info", std::io::stderr);
}

/// Logs to `writer`, as human lines or (`format == "json"`) one JSON object per event,
/// with the filter `SLUICE_LOG`, else `RUST_LOG`, else `default_filter`.
pub(crate) fn init_logging_to<W>(format: &str, default_filter: &str, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_filter))
        .with_writer(writer);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub(crate) async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// [`stop_signal`], then a log line saying that the server drains.
pub(crate) async fn shutdown_signal() {
    stop_signal().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
}
