//! `berth stats`: download numbers of a repository from a Berth registry's stats API,
//! as a table on a terminal or JSON for scripts.

use berth_client::registry::repo_scope;
use clap::{Args, ValueEnum};

use crate::cmd::{block_on, print_json, registry_ref, Common};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum By {
    Version,
    Platform,
    Client,
    Day,
}

impl By {
    fn as_str(self) -> &'static str {
        match self {
            By::Version => "version",
            By::Platform => "platform",
            By::Client => "client",
            By::Day => "day",
        }
    }
}

/// Show who downloads a repository: by version, platform, client or day.
///
/// Reads the stats API of a Berth registry (GET /api/v1/stats/repositories/NAME). A
/// download is a manifest GET; an index fetched with one child is one download of that
/// child's platform.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth stats localhost:5000/team/app
  berth stats localhost:5000/team/app --by platform --since 7d
  berth stats registry.example.com/team/app --by client --json")]
pub struct StatsArgs {
    /// Repository on a Berth registry (a tag or digest is ignored).
    repository: String,
    /// How to group the downloads.
    #[arg(long, value_enum, default_value = "version")]
    by: By,
    /// Only downloads newer than this (e.g. 24h, 7d, 30d).
    #[arg(long, default_value = "30d")]
    since: String,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    block_on(async move {
        let r = registry_ref(&args.repository)?;
        let clients = args.common.clients()?;
        let registry = clients.registry(&r.registry)?;
        let url = registry.url(&format!(
            "/api/v1/stats/repositories/{}?by={}&since={}",
            r.repository,
            args.by.as_str(),
            args.since
        ));
        let resp = registry
            .send(&[repo_scope(&r.repository, false)], |c| c.get(&url))
            .await?;
        let what = format!("download statistics of {}/{}", r.registry, r.repository);
        let resp = registry.check(resp, "GET stats", &what).await?;
        let v: serde_json::Value = resp.json().await?;
        if args.json {
            return print_json(&v);
        }
        let total = v["total"].as_u64().unwrap_or(0);
        println!(
            "{:<32} {:>10} {:>7}",
            args.by.as_str().to_uppercase(),
            "DOWNLOADS",
            "SHARE"
        );
        for g in v["groups"].as_array().into_iter().flatten() {
            let key = g["key"]
                .as_str()
                .filter(|k| !k.is_empty())
                .unwrap_or("(unknown)");
            let n = g["downloads"].as_u64().unwrap_or(0);
            let share = if total == 0 {
                0.0
            } else {
                100.0 * n as f64 / total as f64
            };
            println!("{key:<32} {n:>10} {share:>6.1}%");
        }
        println!("{:<32} {total:>10}", "total");
        let req = &v["requests"];
        println!(
            "bytes served: {}; requests: {}, errors: {} ({:.1}%)",
            v["bytes_served"].as_u64().unwrap_or(0),
            req["total"].as_u64().unwrap_or(0),
            req["errors"].as_u64().unwrap_or(0),
            100.0 * req["error_rate"].as_f64().unwrap_or(0.0)
        );
        Ok(())
    })
}
