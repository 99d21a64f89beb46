//! `sluice proxy`: its settings (flags and environment variables over the `--config`
//! file over defaults), logging, the listener and signals around
//! [`sluice_egress::proxy::serve`].
//!
//! The config file is YAML, one key per setting, named as the flags are in snake_case
//! (`pause_threshold` for `--pause-threshold`), each value in the flag's own syntax and
//! checked by the flag's own parser, so that a file and a command line mean the same. Its
//! errors name the file, the line, the key and the value, as a flag's name the flag and
//! the value; an unknown key is an error, not a silently ignored typo.

use anyhow::Context as _;
use sluice_egress::proxy::ProxyConfig;
use sluice_egress::{Egress, TokioClock};
use sluice_redis::RedisStore;
use sluice_server::server::redact;
use sluice_store::Store;
use tokio::net::TcpListener;

use crate::cli::ProxyArgs;
use crate::process::{init_logging, shutdown_signal};
use settings::{Settings, egress_config, explain, proxy_config};

mod file;
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
            settings.origin("redis")
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
            settings.origin("listen")
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
    if let Some((path, taken)) = &settings.file {
        let keys: Vec<&str> = taken.keys().copied().collect();
        tracing::info!(
            config = %path,
            "settings from {path}: {}",
            if keys.is_empty() { "none (flags and environment override all)".to_owned() } else { keys.join(", ") }
        );
    }
    let config = describe(settings);
    tracing::info!(
        rpm = settings.rpm,
        tpm = settings.tpm,
        daily_limit = settings.daily_limit,
        daily_tokens = settings.daily_tokens,
        pause_threshold = settings.pause_threshold,
        max_concurrency = settings.max_concurrency,
        max_attempts = settings.max_attempts,
        coalesce = settings.coalesce,
        "quota settings: {config}"
    );
    sluice_egress::proxy::serve(proxy, listener, egress, shutdown_signal()).await?;
    tracing::info!("sluice proxy stopped");
    Ok(())
}

fn describe(settings: &Settings) -> String {
    let known = |value: Option<u64>, unit: &str| {
        value.map_or_else(
            || format!("{unit} learned from headers"),
            |v| format!("{v} {unit}"),
        )
    };
    let coalescing = if settings.coalesce {
        "identical requests in flight coalesced"
    } else {
        "no coalescing"
    };
    format!(
        "{}, {}, pause batch work at {} %, alerts at {:?} %, {coalescing}",
        known(settings.rpm, "requests/min"),
        known(settings.tpm, "tokens/min"),
        settings.pause_threshold,
        settings.alert_levels
    )
}
