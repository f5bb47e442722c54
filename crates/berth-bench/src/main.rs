//! `berth-bench`: the load generator of Berth's benchmark harness (`bench/run`).
//!
//! # Layout
//! - [`suite`]: the schedule of issue 6 (rounds alternating the targets' order, CPU and
//!   memory of each server read from `/proc` around every step), as JSON lines.
//! - [`workloads`]: pushes, pulls, small blobs, manifest GETs, tag paging; plain OCI
//!   Distribution API, so any registry can be measured.
//! - [`http`]: a deliberately minimal HTTP/1.1 client, so that the load generator takes
//!   as little of a 2-core machine as possible from the servers it measures.
//! - [`memory`]: peak server memory as blob size grows (one fresh server per size).
//! - [`tls`]: TLS blob GETs over HTTP/1.1 and HTTP/2, rollout fan-out, memory per
//!   idle and slow connection, and the TLS limits (one-core AES-GCM, rustls loopback).
//! - [`limits`]: the machine's ceilings (one-core SHA-256, write+fdatasync, loopback).
//! - [`procstat`], [`data`]: `/proc` readings; random blobs and digests.
//!
//! Only loopback addresses are accepted as targets, and every loop is bounded in
//! requests and time.

mod data;
mod http;
mod limits;
mod memory;
mod procstat;
mod seal;
mod suite;
mod tls;
mod workloads;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Load generator for Berth's benchmark harness; see docs/benchmarks.md.
#[derive(Parser)]
#[command(name = "berth-bench", version)]
struct Cli {
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every workload against every target for several rounds.
    Suite(Box<suite::SuiteArgs>),
    /// Peak memory of one fresh server over a push, chunked push and pull of one blob.
    Memory(memory::MemoryArgs),
    /// TLS and HTTP/2 blob GETs, fan-out of many clients, memory per connection.
    Tls(Box<tls::TlsArgs>),
    /// Measure only this machine's limits and print them as JSON.
    Limits {
        /// Directory on the disk to probe.
        #[arg(long)]
        dir: PathBuf,
        /// Bytes to hash, write and send (MiB).
        #[arg(long, default_value_t = 1024)]
        mib: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Suite(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads.max(1))
            .enable_all()
            .build()?
            .block_on(suite::run(*args)),
        Command::Memory(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads.max(1))
            .enable_all()
            .build()?
            .block_on(memory::run(args)),
        Command::Tls(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads.max(1))
            .enable_all()
            .build()?
            .block_on(tls::run(*args)),
        Command::Limits { dir, mib } => {
            let data = data::random_bytes(9, mib.max(1) << 20);
            let out = serde_json::json!({
                "sha256_one_core_MBps": limits::sha256(&data) / 1e6,
                "disk_write_fdatasync_MBps": limits::disk_write_sync(&dir, &data)? / 1e6,
                "fdatasync_4k_per_s": limits::fsyncs_per_second(&dir, 200)?,
                "loopback_tcp_MBps": limits::loopback_tcp(&data, data.len() as u64 * 2)? / 1e6,
            });
            println!("{out}");
            Ok(())
        }
    }
}
