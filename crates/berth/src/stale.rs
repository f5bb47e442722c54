//! `berth stale`: the images of a Berth registry whose base tag has moved since they
//! were built, from its stale-base API, as a table on a terminal or JSON for scripts.

use clap::Args;

use crate::cmd::{block_on, host_arg, print_json, Common};

/// List images built on a base whose tag has moved since (e.g. `debian:12` rebuilt with
/// security fixes): what to rebuild.
///
/// Reads the stale-base API of a Berth registry (GET /api/v1/stale). The registry
/// records, for every image pushed, the tagged image whose layers are the longest proper
/// prefix of its layers (its base), or the base its `org.opencontainers.image.base.name`
/// and `.base.digest` annotations declare. Only images (and bases) you may pull are
/// listed.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth stale --registry localhost:5000
  berth stale --registry registry.example.com --repo 'team/*'
  berth stale --registry localhost:5000 --json | jq -r '.images[].repository'")]
pub struct StaleArgs {
    /// The Berth registry (HOST:PORT or URL).
    #[arg(long, default_value = "localhost:5000")]
    registry: String,
    /// Only repositories matching this pattern (`*` matches any characters, `/` too).
    #[arg(long, value_name = "PATTERN")]
    repo: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: StaleArgs) -> anyhow::Result<()> {
    block_on(async move {
        let host = host_arg(&args.registry);
        let registry = args.common.clients()?.registry(&host)?;
        let path = match &args.repo {
            Some(p) => format!(
                "/api/v1/stale?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("repo", p)
                    .finish()
            ),
            None => "/api/v1/stale".to_owned(),
        };
        let url = registry.url(&path);
        // A token with the catalog scope lists what the account may pull, as the catalog.
        let resp = registry
            .send(&["registry:catalog:*".to_owned()], |c| c.get(&url))
            .await?;
        let resp = registry
            .check(resp, "GET stale", &format!("stale images of {host}"))
            .await?;
        let v: serde_json::Value = resp.json().await?;
        if args.json {
            return print_json(&v);
        }
        print!("{}", table(&v));
        Ok(())
    })
}

/// How long ago, in the largest whole unit: `3d`, `5h`, `12m`, `40s`.
fn ago(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The first 12 hex digits of a digest.
fn short(d: &str) -> &str {
    let hex = d.split_once(':').map_or(d, |(_, h)| h);
    hex.get(..12).unwrap_or(hex)
}

/// One row per stale image: the tags to rebuild, its base with the digests it was built
/// on and the tag points to now, and how long ago the base moved.
fn table(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let images = v["images"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    if images.is_empty() {
        out.push_str("no stale images\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<32} {:<24} {:<12} {:<12} {:>6}",
        "REBUILD", "BASE", "BUILT ON", "BASE NOW", "MOVED"
    );
    for i in &images {
        let repo = i["repository"].as_str().unwrap_or("");
        let tags: Vec<&str> = i["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        let b = &i["base"];
        let mut base = b["name"].as_str().unwrap_or("").to_owned();
        if b["declared"].as_bool().unwrap_or(false) {
            base.push_str(" (declared)");
        }
        let _ = writeln!(
            out,
            "{:<32} {:<24} {:<12} {:<12} {:>6}",
            format!("{repo}:{}", tags.join(",")),
            base,
            short(b["built_on"].as_str().unwrap_or("")),
            short(b["now"].as_str().unwrap_or("")),
            ago(b["moved_seconds_ago"].as_u64().unwrap_or(0)),
        );
    }
    let _ = writeln!(out, "{} stale image(s)", images.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_the_tags_to_rebuild_and_the_base_digests() {
        let v = serde_json::json!({"images": [{
            "repository": "team/app",
            "digest": "sha256:aa",
            "tags": ["1", "latest"],
            "base": {"name": "base:12", "repository": "base", "tag": "12", "declared": true,
                     "built_on": format!("sha256:{}", "1".repeat(64)),
                     "now": format!("sha256:{}", "2".repeat(64)),
                     "moved_at": "2026-01-01T00:00:00Z", "moved_seconds_ago": 7_300},
        }]});
        let text = table(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("REBUILD"), "{text}");
        assert!(lines[1].starts_with("team/app:1,latest "), "{text}");
        assert!(lines[1].contains("base:12 (declared)"), "{text}");
        assert!(
            lines[1].contains(&"1".repeat(12)) && lines[1].contains(&"2".repeat(12)),
            "{text}"
        );
        assert!(lines[1].ends_with(" 2h"), "{text}");
        assert_eq!(lines[2], "1 stale image(s)");
        assert_eq!(
            table(&serde_json::json!({"images": []})),
            "no stale images\n"
        );
    }
}
