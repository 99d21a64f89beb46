//! `sluice serve`: logging, listeners and signals around [`sluice_server::serve`].

use anyhow::Context as _;
use sluice_server::config::{Config, StoreConfig};
use sluice_server::{ConnectionLimits, ServeOptions, load_config, redact};
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
    let options = options(args)?;
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

/// The server's options from the flags; connection limits not given keep their defaults.
fn options(args: &ServeArgs) -> anyhow::Result<ServeOptions> {
    let default = ConnectionLimits::default();
    let size = |flag: &str, value: Option<usize>, default: u32| match value {
        None => Ok(default),
        Some(bytes) => u32::try_from(bytes)
            .map_err(|_| anyhow::anyhow!("invalid value {bytes} for --{flag}: too large")),
    };
    let connections = ConnectionLimits {
        header_read_timeout: args
            .header_read_timeout
            .unwrap_or(default.header_read_timeout),
        idle_timeout: args.idle_timeout.unwrap_or(default.idle_timeout),
        request_timeout: args.request_timeout.unwrap_or(default.request_timeout),
        max_connections: args
            .max_connections
            .map_or(default.max_connections, |n| n as usize),
        http2_max_concurrent_streams: args
            .http2_max_concurrent_streams
            .unwrap_or(default.http2_max_concurrent_streams),
        http2_keepalive_interval: args
            .http2_keepalive_interval
            .unwrap_or(default.http2_keepalive_interval),
        http2_keepalive_timeout: args
            .http2_keepalive_timeout
            .unwrap_or(default.http2_keepalive_timeout),
        http2_max_frame_size: size(
            "http2-max-frame-size",
            args.http2_max_frame_size,
            default.http2_max_frame_size,
        )?,
        http2_max_header_list_size: size(
            "http2-max-header-list-size",
            args.http2_max_header_list_size,
            default.http2_max_header_list_size,
        )?,
    };
    connections.validate().map_err(|e| {
        anyhow::anyhow!("invalid value {} for --{}: {}", e.value, e.field, e.reason)
    })?;
    Ok(ServeOptions {
        config_path: args.config.clone(),
        redis: args.redis.clone(),
        ratelimit_headers: args.ratelimit_headers,
        watch: !args.no_watch,
        admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
        overrides_file: args.overrides_file.clone(),
        connections,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn options_of(args: &[&str]) -> anyhow::Result<ServeOptions> {
        let cli = Cli::try_parse_from([&["sluice", "serve"], args].concat()).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        options(&args)
    }

    #[test]
    fn connection_limits_default_and_each_flag_sets_its_field() {
        let defaults = options_of(&[]).expect("valid");
        assert_eq!(defaults.connections, ConnectionLimits::default());
        let set = options_of(&[
            "--header-read-timeout=2s",
            "--idle-timeout=5s",
            "--request-timeout=7s",
            "--max-connections=100",
            "--http2-max-concurrent-streams=8",
            "--http2-keepalive-interval=3s",
            "--http2-keepalive-timeout=1s",
            "--http2-max-frame-size=32KiB",
            "--http2-max-header-list-size=4KiB",
        ])
        .expect("valid");
        assert_eq!(
            set.connections,
            ConnectionLimits {
                header_read_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(7),
                max_connections: 100,
                http2_max_concurrent_streams: 8,
                http2_keepalive_interval: Duration::from_secs(3),
                http2_keepalive_timeout: Duration::from_secs(1),
                http2_max_frame_size: 32_768,
                http2_max_header_list_size: 4096,
            }
        );
    }

    #[test]
    fn an_impossible_limit_is_an_error_naming_the_flag_and_value() {
        let err = options_of(&["--http2-max-frame-size=1KiB"]).expect_err("too small");
        assert_eq!(
            err.to_string(),
            "invalid value 1024 for --http2-max-frame-size: must be from 16384 to 16777215 bytes (RFC 9113)"
        );
        let err = options_of(&["--http2-max-header-list-size=8GiB"]).expect_err("too large");
        assert_eq!(
            err.to_string(),
            "invalid value 8589934592 for --http2-max-header-list-size: too large"
        );
        let err = Cli::try_parse_from(["sluice", "serve", "--idle-timeout=0s"]).expect_err("zero");
        assert!(err.to_string().contains("must be more than zero"), "{err}");
    }
}
