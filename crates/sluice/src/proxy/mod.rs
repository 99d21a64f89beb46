//! `sluice proxy`: its settings (flags and environment variables over the `--config`
//! file over defaults, see `crate::settings`), logging, the listener and signals around
//! [`sluice_egress::proxy::serve`].

use anyhow::Context as _;
use sluice_egress::proxy::ProxyConfig;
use sluice_egress::{Egress, TokioClock};
use sluice_redis::RedisStore;
use sluice_server::redact;
use sluice_store::Store;
use tokio::net::TcpListener;

use crate::cli::ProxyArgs;
use crate::process::{init_logging, shutdown_signal};
use settings::{Settings, egress_config, explain, proxy_config};

mod settings;

/// Runs the proxy until Ctrl-C or SIGTERM.
pub(crate) fn run(args: &ProxyArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args).unwrap_or_else(|usage| usage.exit());
    let proxy = proxy_config(&settings).unwrap_or_else(|usage| usage.exit());
    let config = egress_config(&settings, &proxy);
    init_logging(&settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match &settings.redis {
            Some(url) => {
                let store = connect(url, &settings).await?;
                let egress = Egress::with_store(config, store, TokioClock::new())
                    .map_err(|e| anyhow::anyhow!(explain(&e, &settings)))?;
                let store = format!("redis {}", redact_all(url));
                listen(&settings, proxy, egress, &store).await
            }
            None => {
                let egress =
                    Egress::new(config).map_err(|e| anyhow::anyhow!(explain(&e, &settings)))?;
                listen(&settings, proxy, egress, "memory").await
            }
        }
    })
}

async fn connect(url: &str, settings: &Settings) -> anyhow::Result<RedisStore> {
    let urls: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
    let store = if urls.len() > 1 {
        RedisStore::connect_cluster(&urls).await
    } else {
        RedisStore::connect(url).await
    };
    store.with_context(|| {
        format!(
            "cannot connect to Redis at {} ({})",
            redact_all(url),
            settings.origins.origin("redis")
        )
    })
}

fn redact_all(urls: &str) -> String {
    urls.split(',')
        .map(|u| redact(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

async fn listen<S: Store + 'static>(
    settings: &Settings,
    proxy: ProxyConfig,
    egress: Egress<S>,
    store: &str,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "cannot listen on {} ({})",
            settings.listen,
            settings.origins.origin("listen")
        )
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(
        listen = %format!("http://{addr}"),
        upstream = %proxy.upstream,
        store,
        "sluice proxy listening on http://{addr}, forwarding to {} (health at /_sluice/healthz, metrics at /_sluice/metrics)",
        proxy.upstream
    );
    if let Some((path, note)) = settings.origins.file_note() {
        tracing::info!(config = %path, "{note}");
    }
    let quota = &settings.quota;
    tracing::info!(
        rpm = quota.rpm,
        tpm = quota.tpm,
        daily_limit = quota.daily_limit,
        daily_tokens = quota.daily_tokens,
        pause_threshold = quota.pause_threshold,
        max_concurrency = settings.max_concurrency,
        max_attempts = settings.max_attempts,
        coalesce = settings.coalesce,
        "quota settings: {}, {}",
        quota.describe(),
        if settings.coalesce {
            "identical requests in flight coalesced"
        } else {
            "no coalescing"
        }
    );
    sluice_egress::proxy::serve(proxy, listener, egress, shutdown_signal()).await?;
    tracing::info!("sluice proxy stopped");
    Ok(())
}
