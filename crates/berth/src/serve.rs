//! `berth serve`: configuration, logging, signals, then the server library.

use std::path::PathBuf;

use anyhow::Context;
use berth_server::Config;
use clap::Args;

/// Run the registry (OCI Distribution Spec v1.1).
///
/// Settings come from defaults, then the --config file, then BERTH_* environment
/// variables (BERTH_LISTEN, BERTH_DATA_DIR, BERTH_MAX_MANIFEST_BYTES,
/// BERTH_UPLOAD_IDLE_TIMEOUT, BERTH_TLS_CERT, BERTH_TLS_KEY, BERTH_INSECURE_OPEN,
/// BERTH_TOKEN_SERVICE, BERTH_TOKEN_REALM, BERTH_TOKEN_TTL), then these flags. Logs go to stderr; BERTH_LOG sets the
/// filter (e.g. BERTH_LOG=debug) and BERTH_LOG_FORMAT=json prints JSON lines.
#[derive(Args)]
#[command(after_help = "Examples:
  berth serve                                   # 127.0.0.1:5000, data in ./berth-data
  berth serve --listen 127.0.0.1:5050 --data-dir /var/lib/berth
  berth serve --config berth.toml
  BERTH_DATA_DIR=/srv/registry berth serve
  berth serve --listen 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem

With no account the registry is open to anyone who can reach it, so it only listens on
a loopback address unless --insecure-open; create accounts with `berth admin`.")]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Directory for blobs and metadata [default: ./berth-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Delete upload sessions idle this long (e.g. 30m, 24h) [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = berth_server::config::parse_duration)]
    upload_idle_timeout: Option<std::time::Duration>,
    /// PEM certificate chain: serve HTTPS (HTTP/1.1 and HTTP/2) instead of plain HTTP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow a non-loopback address while no account exists (anyone could push and delete).
    #[arg(long)]
    insecure_open: bool,
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
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(t) = args.upload_idle_timeout {
        config.upload_idle_timeout = t;
    }
    if let Some(c) = args.tls_cert {
        config.tls_cert = Some(c);
    }
    if let Some(k) = args.tls_key {
        config.tls_key = Some(k);
    }
    config.insecure_open |= args.insecure_open;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let state = berth_server::build_state(&config)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        // `url` is the machine-readable field (BERTH_LOG_FORMAT=json) that tests and
        // scripts wait for; the message says the same for people.
        tracing::info!(url = %url, data_dir = %config.data_dir.display(), "berth registry listening on {url}");
        berth_server::run(listener, state, shutdown_signal()).await?;
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
