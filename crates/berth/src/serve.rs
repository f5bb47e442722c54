//! `berth serve`: configuration, logging, signals, then the server library.

use std::path::PathBuf;

use anyhow::Context;
use berth_server::config::Settings;
use berth_server::Config;
use clap::Args;

/// Run the registry (OCI Distribution Spec v1.1).
///
/// Settings come from defaults, then the --config file, then BERTH_* environment
/// variables, then these flags; every setting below has all three forms (the file key is
/// the flag's name with underscores). An unknown BERTH_* variable is an error. Logs go
/// to stderr; BERTH_LOG sets the filter (e.g. BERTH_LOG=debug) and BERTH_LOG_FORMAT=json
/// prints JSON lines.
#[derive(Args)]
#[command(after_help = "Examples:
  berth serve                                   # 127.0.0.1:5000, data in ./berth-data
  berth serve --listen 127.0.0.1:5050 --data-dir /var/lib/berth
  berth serve --config berth.toml
  BERTH_DATA_DIR=/srv/registry BERTH_ANALYTICS=off berth serve
  berth serve --listen 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem

With no account the registry is open to anyone who can reach it, so it only listens on
a loopback address unless --insecure-open; create accounts with `berth admin`.")]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("BERTH_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    crate::check_env()?;
    // Clap has merged the variables and the flags of every setting (flags win).
    let config = Config::load(args.config.as_deref(), args.settings)?;
    // Before anything opens files: the connection limit is derived from this limit.
    match berth_server::listener::raise_open_files_limit() {
        Ok(Some(n)) => tracing::debug!(open_files = n, "open-file limit raised to {n}"),
        Ok(None) => tracing::debug!("open-file limit: unlimited"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        // The port first: a port in use must not leave a new data directory behind.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let state = berth_server::build_state(&config)?;
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let data_dir = config.data_dir.display().to_string();
        berth_server::run_with_ready(listener, state, shutdown_signal(), |addr| {
            let url = format!("{scheme}://{addr}");
            // `url` is the machine-readable field (BERTH_LOG_FORMAT=json) that tests and
            // scripts wait for; the message says the same for people.
            tracing::info!(url = %url, data_dir = %data_dir, "berth registry listening on {url}");
        })
        .await?;
        tracing::info!("berth registry stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
