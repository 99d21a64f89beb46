//! Putting it together: build the store the configuration names, serve HTTP and gRPC on
//! the given listeners, watch the configuration, stop gracefully.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sluice_core::MonotonicClock;
use sluice_redis::RedisStore;
use sluice_store::{FallbackConfig, FallbackStore, MemoryStore};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tower::Service as _;

use crate::admin::{self, Series};
use crate::backend::{Backend, RedisBackend};
use crate::config::{Config, ConfigError, StoreConfig};
use crate::edges::{Acceptor, ConnectionLimits, InvalidLimit, TrackLayer};
use crate::grpc::RlsService;
use crate::limiter::Limiter;
use crate::overrides::{OverrideStore, OverrideStoreError, RedisOverrides};
use crate::{http, reload};

/// How often overrides set by other instances are picked up.
const OVERRIDE_SYNC: Duration = Duration::from_millis(500);

/// How often the store's housekeeping runs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What `sluice serve` was asked to do, beyond its listeners.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// The config file or directory; `None` serves [`Config::demo`].
    pub config_path: Option<PathBuf>,
    /// Use this Redis instead of the config's `store:` (comma-separated URLs: a cluster).
    pub redis: Option<String>,
    /// Ask Envoy to add `RateLimit-Policy`/`RateLimit` headers to its responses.
    pub ratelimit_headers: bool,
    /// Reload the configuration when its files change (ignored without `config_path`).
    pub watch: bool,
    /// Enables the admin API with this bearer token (`None`: the admin API is disabled).
    pub admin_token: Option<String>,
    /// Where overrides persist on the in-memory store (with Redis they live in Redis).
    pub overrides_file: Option<PathBuf>,
    /// What a client may hold of each listener (connections, time, HTTP/2 streams).
    pub connections: ConnectionLimits,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration did not load.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A connection limit cannot work.
    #[error(transparent)]
    Limits(#[from] InvalidLimit),
    /// Redis could not be reached at start.
    #[error("cannot connect to Redis at {url}: {source}")]
    Redis {
        /// The URL(s), without password.
        url: String,
        /// What redis-rs said.
        source: sluice_redis::RedisError,
    },
    /// The file watcher could not start.
    #[error("cannot watch the configuration: {0}")]
    Watch(#[from] notify::Error),
    /// The override store could not be opened.
    #[error("overrides: {0}")]
    Overrides(#[from] OverrideStoreError),
    /// A listener failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Loads the configuration and applies `--redis`.
pub fn load_config(options: &ServeOptions) -> Result<Config, ConfigError> {
    let mut config = match &options.config_path {
        Some(path) => Config::load(path)?,
        None => Config::demo(),
    };
    if let Some(redis) = &options.redis {
        config.store = redis_store(redis, config.store.clone());
    }
    Ok(config)
}

fn redis_store(urls: &str, current: StoreConfig) -> StoreConfig {
    let urls: Vec<String> = urls
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    let timeout = match current {
        StoreConfig::Redis { timeout, .. } => timeout,
        StoreConfig::Memory => FallbackConfig::default().timeout,
    };
    StoreConfig::Redis {
        cluster: urls.len() > 1,
        urls,
        timeout,
    }
}

/// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests.
pub async fn serve(
    options: ServeOptions,
    http: TcpListener,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    options.connections.validate()?;
    let config = load_config(&options)?;
    match config.store.clone() {
        StoreConfig::Memory => {
            let overrides = OverrideStore::local(options.overrides_file.clone())?;
            let limiter = Limiter::new(config, MemoryStore::new()).with_override_store(overrides);
            run(limiter, &options, http, grpc, shutdown).await
        }
        StoreConfig::Redis {
            urls,
            cluster,
            timeout,
        } => {
            let backend = connect_redis(&urls, cluster, timeout).await?;
            let overrides = RedisOverrides::connect(&urls, cluster)
                .await
                .map_err(OverrideStoreError::from)?;
            let limiter =
                Limiter::new(config, backend).with_override_store(OverrideStore::Redis(overrides));
            run(limiter, &options, http, grpc, shutdown).await
        }
    }
}

/// A server [`spawn`]ed on the current tokio runtime: where it listens, and how to stop it.
#[derive(Debug)]
pub struct Spawned {
    /// The HTTP listener's address.
    pub http: SocketAddr,
    /// The gRPC listener's address.
    pub grpc: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Spawned {
    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    ///
    /// # Errors
    ///
    /// What [`serve`] failed with (e.g. a config that did not load), or a panic of its
    /// task as [`ServeError::Io`].
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
    }
}

/// [`serve`] on two new loopback listeners (free ports) as a task of the current tokio
/// runtime: an embedded server, as tests, benchmarks and in-process tools want one.
///
/// # Errors
///
/// [`ServeError::Io`] when a listener cannot be bound. Errors of the server itself (a
/// config that does not load) come from [`Spawned::stop`].
pub async fn spawn(options: ServeOptions) -> Result<Spawned, ServeError> {
    let http = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let grpc = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(options, http, grpc, async {
        let _ = stopped.await;
    }));
    Ok(Spawned {
        http: http_addr,
        grpc: grpc_addr,
        stop,
        task,
    })
}

async fn connect_redis(
    urls: &[String],
    cluster: bool,
    timeout: Duration,
) -> Result<RedisBackend, ServeError> {
    let connected = if cluster {
        RedisStore::connect_cluster(urls).await
    } else {
        match urls.first() {
            Some(url) => RedisStore::connect(url).await,
            None => RedisStore::connect("redis://127.0.0.1:6379/").await,
        }
    };
    let redis = connected.map_err(|source| ServeError::Redis {
        url: urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(","),
        source,
    })?;
    let config = FallbackConfig {
        timeout,
        ..FallbackConfig::default()
    };
    Ok(FallbackStore::with_config(
        redis,
        MemoryStore::new(),
        config,
        MonotonicClock::new(),
    ))
}

/// A Redis URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// Serves `limiter` on the listeners until `shutdown` resolves.
pub async fn run<B: Backend>(
    limiter: Limiter<B>,
    options: &ServeOptions,
    http: TcpListener,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    limiter.sync_overrides().await?;
    let limiter = Arc::new(limiter);
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });

    let _watcher = match (&options.config_path, options.watch) {
        (Some(path), true) => Some(reload::watch(Arc::clone(&limiter), path.clone())?),
        _ => None,
    };
    let series = Arc::new(Series::default());
    let sweeper = Arc::clone(&limiter);
    every(SWEEP_INTERVAL, stopped.clone(), move || {
        sweeper.backend().sweep();
        std::future::ready(())
    });
    // The admin API's per-second series (per domain and per limit), from the cumulative
    // counters; and the hot keys' sampling, to last second's request rate.
    let (sampler, samples) = (Arc::clone(&limiter), Arc::clone(&series));
    every(Duration::from_secs(1), stopped.clone(), move || {
        samples.sample_limiter(&sampler);
        sampler.adapt_hot_keys();
        std::future::ready(())
    });
    // Overrides other instances set.
    let syncer = Arc::clone(&limiter);
    every(OVERRIDE_SYNC, stopped.clone(), move || {
        let limiter = Arc::clone(&syncer);
        async move {
            if let Err(err) = limiter.sync_overrides().await {
                tracing::warn!(error = %err, "cannot read overrides; the last ones known stay in force");
            }
        }
    });

    let app = http::router(Arc::clone(&limiter)).merge(admin::router(
        Arc::clone(&limiter),
        options.admin_token.as_deref(),
        series,
    ));
    let limits = options.connections;
    limits.validate()?;
    let metrics = limiter.metrics();
    let http = Acceptor::new(http, "http", limits, Arc::clone(&metrics.http_connections));
    let grpc = Acceptor::new(grpc, "grpc", limits, Arc::clone(&metrics.grpc_connections));
    let http_server = serve_http(http, app, limits, until(stopped.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    let rls = RlsService::new(Arc::clone(&limiter), options.ratelimit_headers).into_server();
    health.set_serving::<RateLimitServer<B>>().await;
    let grpc_server = tonic::transport::Server::builder()
        .timeout(limits.request_timeout)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
        .max_frame_size(limits.http2_max_frame_size)
        .http2_max_header_list_size(limits.http2_max_header_list_size)
        .layer(TrackLayer)
        .add_service(health_service)
        .add_service(rls)
        .serve_with_incoming_shutdown(grpc.into_stream(), until(stopped));

    let ((), grpc_result) = tokio::join!(http_server, grpc_server);
    grpc_result?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves `app` on the HTTP listener (HTTP/1.1 and h2c) under `limits` until `stop`
/// resolves, then lets the requests in flight finish.
async fn serve_http(
    acceptor: Acceptor,
    app: axum::Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_frame_size(limits.http2_max_frame_size)
        .max_header_list_size(limits.http2_max_header_list_size);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let guarded = tokio::select! {
            guarded = acceptor.accept() => guarded,
            () = &mut stop => break,
        };
        let conn = Arc::clone(&guarded.info().conn);
        let app = app.clone();
        let service = service_fn(move |request: ::http::Request<Incoming>| {
            let in_flight = conn.begin();
            let mut app = app.clone();
            async move {
                let answer = tokio::time::timeout(
                    limits.request_timeout,
                    app.call(request.map(axum::body::Body::new)),
                )
                .await;
                drop(in_flight);
                Ok::<_, Infallible>(match answer {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => http::problem(
                        ::http::StatusCode::REQUEST_TIMEOUT,
                        "Request Timeout",
                        &format!(
                            "the request was not answered within {:?} (--request-timeout)",
                            limits.request_timeout
                        ),
                        None,
                    ),
                })
            }
        });
        let counters = Arc::clone(&acceptor.counters);
        let connection = builder
            .serve_connection(TokioIo::new(guarded), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // hyper's own header read timeout, between HTTP/1 requests.
                if e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout)
                {
                    counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(error = %e, "an HTTP connection ended with an error");
            }
        });
    }
    drop(acceptor);
    graceful.shutdown().await;
}

type RateLimitServer<B> = envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer<RlsService<B>>;

async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Runs `tick` every `period` until the server stops.
fn every<F, Fut>(period: Duration, mut stopped: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = ticks.tick() => tick().await,
                _ = stopped.changed() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:hunter2@db:6379/0"),
            "redis://:***@db:6379/0"
        );
        assert_eq!(redact("rediss://me:pw@db/"), "rediss://me:***@db/");
        assert_eq!(redact("redis://db:6379/"), "redis://db:6379/");
    }

    #[test]
    fn several_redis_urls_are_a_cluster() {
        let store = redis_store("redis://a:1, redis://b:2", StoreConfig::Memory);
        let StoreConfig::Redis { urls, cluster, .. } = store else {
            panic!("{store:?}")
        };
        assert!(cluster);
        assert_eq!(urls, ["redis://a:1", "redis://b:2"]);
    }
}
