//! `sluice serve`: logging, listeners and signals around [`sluice_server::serve`].

use anyhow::Context as _;
use sluice_server::config::{Config, StoreConfig};
use sluice_server::{ServeOptions, load_config, redact};
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::process::{init_logging, shutdown_signal};

/// Runs the server until Ctrl-C or SIGTERM, or validates a configuration
/// (`--check-config`).
pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.check_config {
        let config = Config::load(path)?;
        println!("{}: valid", path.display());
        println!("{}", describe(&config));
        return Ok(());
    }
    init_logging(&args.log_format);
    let options = ServeOptions {
        config_path: args.config.clone(),
        redis: args.redis.clone(),
        ratelimit_headers: args.ratelimit_headers,
        watch: !args.no_watch,
        admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
        overrides_file: args.overrides_file.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Load once up front so a bad config fails before binding, with its own message.
        let config = load_config(&options)?;
        let http = TcpListener::bind(args.http)
            .await
            .with_context(|| format!("cannot listen on {} (--http)", args.http))?;
        let grpc = TcpListener::bind(args.grpc)
            .await
            .with_context(|| format!("cannot listen on {} (--grpc)", args.grpc))?;
        match &options.config_path {
            Some(path) => tracing::info!(config = %path.display(), "{}", describe(&config)),
            None => tracing::info!(
                "no --config given: serving the built-in demo configuration ({})",
                describe(&config)
            ),
        }
        tracing::info!(
            http = %format!("http://{}", http.local_addr()?),
            grpc = %grpc.local_addr()?,
            store = %store_name(&config.store),
            "sluice serve listening (HTTP JSON at /v1/check, metrics at /metrics; gRPC envoy.service.ratelimit.v3)"
        );
        match &options.admin_token {
            Some(_) => tracing::info!(
                "admin API enabled at /admin/v1 (bearer token); dashboard at http://{}/dashboard",
                http.local_addr()?
            ),
            None => tracing::info!("admin API disabled (no --admin-token)"),
        }
        sluice_server::serve(options, http, grpc, shutdown_signal()).await?;
        Ok(())
    })
}

/// One line about what a configuration holds.
fn describe(config: &Config) -> String {
    let domains: Vec<&str> = config.domain_names();
    format!(
        "domains: {}; store: {}",
        domains.join(", "),
        store_name(&config.store)
    )
}

fn store_name(store: &StoreConfig) -> String {
    match store {
        StoreConfig::Memory => "memory".to_owned(),
        StoreConfig::Redis { urls, cluster, .. } => {
            let urls: Vec<String> = urls.iter().map(|u| redact(u)).collect();
            let kind = if *cluster { "redis cluster" } else { "redis" };
            format!("{kind} {}", urls.join(","))
        }
    }
}
