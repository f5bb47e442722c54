//! Client subcommands, one module each. They parse arguments, call `berth_client`, and
//! print results; all the work is in the library.

pub mod catalog;
pub mod copy;
pub mod db;
pub mod delete;
pub mod digest;
pub mod index;
pub mod inspect;
pub mod key;
pub mod login;
pub mod sbom;
pub mod scan;
pub mod sign;
pub mod tag;
pub mod tags;
pub mod verify;

use std::io::IsTerminal;
use std::sync::Arc;

use berth_client::progress::{Bars, Lines, Progress, Quiet};
use berth_client::{ClientOptions, Clients};
use clap::Args;

/// Options every client command takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Use plain HTTP for every registry (localhost and 127.0.0.1 always use it).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Print no progress, only results and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Docker config file with credentials [default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json].
    #[arg(long, value_name = "FILE", env = "BERTH_DOCKER_CONFIG", global = true)]
    pub docker_config: Option<std::path::PathBuf>,
    /// Trust this PEM CA certificate (bundle) for HTTPS registries; with it, loopback
    /// registries are spoken to over HTTPS too.
    #[arg(long, value_name = "FILE", env = "BERTH_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Common {
    pub fn clients(&self) -> anyhow::Result<Clients> {
        let opts = ClientOptions {
            insecure: self.insecure,
            docker_config: self.docker_config.clone(),
            ca_certs: self.ca_cert.iter().cloned().collect(),
            ..ClientOptions::default()
        };
        Ok(Clients::new(opts)?)
    }

    /// Bars on a terminal, event lines otherwise, nothing with --quiet.
    pub fn progress(&self) -> Arc<dyn Progress> {
        if self.quiet {
            Arc::new(Quiet)
        } else if std::io::stderr().is_terminal() {
            Arc::new(Bars::new())
        } else {
            Arc::new(Lines)
        }
    }
}

/// Runs a future on a fresh multi-threaded runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// A sensible default for parallel blob transfers.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| (n.get() * 2).clamp(4, 8))
        .unwrap_or(4)
}

/// Prints a value as one JSON document on stdout.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Parses a registry reference, refusing local transports.
pub fn registry_ref(s: &str) -> anyhow::Result<berth_client::ImageRef> {
    match berth_client::Location::parse(s)? {
        berth_client::Location::Registry(r) => Ok(r),
        other => Err(berth_client::ClientError::Usage(format!(
            "{other} is not a registry reference"
        ))
        .into()),
    }
}

/// A registry host as given on the command line (`https://` and paths are dropped).
pub fn host_arg(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        h => h.to_owned(),
    }
}
