//! What every long-running subcommand sets up the same way: logging and stop signals.

use tracing_subscriber::EnvFilter;

/// The log filter: `SLUICE_LOG`, else `RUST_LOG`, else `info`.
pub(crate) fn log_filter() -> EnvFilter {
    EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Logs to stderr, as human lines or (`format == "json"`) one JSON object per event.
pub(crate) fn init_logging(format: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr);
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
