//! The accept loop: connections, keep-alive, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sluice_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::config::{ProxyConfig, ProxyConfigError};
use super::forward::{Shared, handle};
use super::upstream::UpstreamClient;
use crate::Egress;

/// How long the accept loop pauses after a failed accept (out of file descriptors), so it
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How long a client may take to send a request's head (HTTP/1.1).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the proxy on `listener` until `shutdown` resolves, forwarding every request
/// through `egress` (see the [module docs](super)). HTTP/1.1 with keep-alive, and HTTP/2
/// with prior knowledge (h2c), on the same port.
///
/// On shutdown it stops accepting, lets requests in flight (streams included) finish for
/// up to [`ProxyConfig::shutdown_grace`], closes what is left, and writes the egress
/// client's quota state file ([`Egress::flush`]).
///
/// Each connection runs on a task of its own; a request's attempts, waits and stream run
/// in its connection's task, and stop when the client goes away.
///
/// # Errors
///
/// A [`ProxyConfigError`] when the configuration cannot work (checked before accepting
/// anything).
pub async fn serve<S, F>(
    config: ProxyConfig,
    listener: TcpListener,
    egress: Egress<S>,
    shutdown: F,
) -> Result<(), ProxyConfigError>
where
    S: Store + 'static,
    F: Future<Output = ()>,
{
    config.validate()?;
    let client = UpstreamClient::new(&config)?;
    let grace = config.shutdown_grace;
    let shared = Arc::new(Shared::new(config, egress.clone(), client));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Streamed chunks are small and late: send each at once.
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(shared, request).await) }
                    });
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "a client connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "requests still in flight after the shutdown grace period: closing them"
        );
    }
    connections.shutdown().await;
    if let Err(e) = egress.flush() {
        tracing::warn!(error = %e, "could not write the quota state file");
    }
    Ok(())
}
