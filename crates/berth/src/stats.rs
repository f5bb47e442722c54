//! `berth stats`: download and inspection numbers of a repository from a Berth
//! registry's stats API, as a table on a terminal or JSON for scripts.

use berth_client::registry::repo_scope;
use clap::{Args, ValueEnum};

use crate::cmd::{block_on, print_json, registry_ref, Common};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum By {
    Version,
    Platform,
    Client,
    Day,
    Account,
}

impl By {
    fn as_str(self) -> &'static str {
        match self {
            By::Version => "version",
            By::Platform => "platform",
            By::Client => "client",
            By::Day => "day",
            By::Account => "account",
        }
    }
}

/// Show who downloads a repository: by version, platform, client, day or account.
///
/// Reads the stats API of a Berth registry (GET /api/v1/stats/repositories/NAME). A
/// download is a fetch of image content (a platform manifest GET; an index fetched with
/// one child is one download of that child's platform). Metadata-only fetches (an index
/// alone, or a HEAD with no GET after it, such as `berth inspect`) are counted apart as
/// inspections. `--by account` (which account pulled which version) is for
/// administrators of the repository.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth stats localhost:5000/team/app
  berth stats localhost:5000/team/app --by platform --since 7d
  berth stats registry.example.com/team/app --by client --json
  berth stats registry.example.com/team/app --by account")]
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
        // Downloads by account need admin on the repository, so a token must ask for it.
        let scope = match args.by {
            By::Account => format!("repository:{}:*", r.repository),
            _ => repo_scope(&r.repository, false),
        };
        let resp = registry.send(&[scope], |c| c.get(&url)).await?;
        let what = format!("download statistics of {}/{}", r.registry, r.repository);
        let resp = registry.check(resp, "GET stats", &what).await?;
        let v: serde_json::Value = resp.json().await?;
        if args.json {
            return print_json(&v);
        }
        print!("{}", table(&v, args.by));
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

/// The text table of a stats answer: one row per group (per account and version with
/// `--by account`), the total, and the inspections.
fn table(v: &serde_json::Value, by: By) -> String {
    use std::fmt::Write;
    let total = v["total"].as_u64().unwrap_or(0);
    let share = |n: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * n as f64 / total as f64
        }
    };
    let name = |k: &serde_json::Value, empty: &'static str| -> String {
        k.as_str()
            .filter(|k| !k.is_empty())
            .unwrap_or(empty)
            .to_owned()
    };
    let mut out = String::new();
    let groups = v["groups"].as_array().cloned().unwrap_or_default();
    if matches!(by, By::Account) {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:>10} {:>7}",
            "ACCOUNT", "VERSION", "DOWNLOADS", "SHARE"
        );
        for g in &groups {
            let account = name(&g["key"], "(anonymous)");
            for row in g["versions"].as_array().into_iter().flatten() {
                let n = row["downloads"].as_u64().unwrap_or(0);
                let version = name(&row["version"], "(unknown)");
                let _ = writeln!(
                    out,
                    "{account:<24} {version:<16} {n:>10} {:>6.1}%",
                    share(n)
                );
            }
        }
        let _ = writeln!(out, "{:<41} {total:>10}", "total");
    } else {
        let _ = writeln!(
            out,
            "{:<32} {:>10} {:>7}",
            by.as_str().to_uppercase(),
            "DOWNLOADS",
            "SHARE"
        );
        for g in &groups {
            let n = g["downloads"].as_u64().unwrap_or(0);
            let key = name(&g["key"], "(unknown)");
            let _ = writeln!(out, "{key:<32} {n:>10} {:>6.1}%", share(n));
        }
        let _ = writeln!(out, "{:<32} {total:>10}", "total");
    }
    let _ = writeln!(
        out,
        "inspections (metadata only, not downloads): {}",
        v["inspections"]["total"].as_u64().unwrap_or(0)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_table_lists_each_version_an_account_pulled() {
        let v = serde_json::json!({
            "total": 5,
            "groups": [
                {"key": "", "downloads": 1, "versions": [{"version": "1.0", "downloads": 1}]},
                {"key": "carol", "downloads": 4, "versions": [
                    {"version": "1.0", "downloads": 1}, {"version": "", "downloads": 3}]},
            ],
            "inspections": {"total": 7, "groups": []},
        });
        let text = table(&v, By::Account);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ACCOUNT"), "{text}");
        assert!(
            lines[1].starts_with("(anonymous)") && lines[1].contains("20.0%"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("carol") && lines[2].contains(" 1.0 "),
            "{text}"
        );
        assert!(
            lines[3].starts_with("carol") && lines[3].contains("(unknown)"),
            "{text}"
        );
        assert!(lines[3].contains("60.0%"), "{text}");
        assert!(
            lines[4].starts_with("total") && lines[4].ends_with(" 5"),
            "{text}"
        );
        assert_eq!(lines[5], "inspections (metadata only, not downloads): 7");
    }
}
