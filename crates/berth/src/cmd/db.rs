//! `berth db update` and `berth db info`: the local vulnerability index of `berth scan`.
//! The import is `berth_scan::db::import`; this module resolves the directory and
//! downloads `http(s)://` sources (the only network step of scanning) to files first.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

/// Manage the vulnerability index `berth scan` reads.
#[derive(Args, Debug)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Subcommand, Debug)]
enum DbCommand {
    Update(UpdateArgs),
    Info(InfoArgs),
}

/// Import OSV records into the index: osv.dev's per-ecosystem `all.zip` dumps, OSV JSON
/// files, or directories holding either. Ecosystems in the sources replace those in the
/// index; the others are kept.
#[derive(Args, Debug)]
#[command(
    after_help = "Sources: a local path (all.zip, a .json record, or a directory searched for both),
file://PATH, or an http(s):// URL of an all.zip, downloaded first.

Examples:
  berth db update --from https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip
  berth db update --from ~/osv/Debian/all.zip --from ~/osv/PyPI/all.zip
  berth db update --from ./osv-records/ --db ./osv-index"
)]
pub struct UpdateArgs {
    /// A source of OSV records (repeatable).
    #[arg(long, value_name = "DIR|FILE|URL", required = true)]
    from: Vec<String>,
    /// The index directory [default: $XDG_CACHE_HOME/berth/osv or ~/.cache/berth/osv].
    #[arg(long, value_name = "DIR", env = "BERTH_OSV_DB")]
    db: Option<PathBuf>,
}

/// Show what the index holds: ecosystems, record counts, when and from where.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The index directory [default: $XDG_CACHE_HOME/berth/osv or ~/.cache/berth/osv].
    #[arg(long, value_name = "DIR", env = "BERTH_OSV_DB")]
    db: Option<PathBuf>,
    /// Print `meta.json` as it is.
    #[arg(long)]
    json: bool,
}

/// The index directory: the flag, else the default under the user's cache directory.
pub fn resolve_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match flag.or_else(berth_scan::db::default_dir) {
        Some(dir) => Ok(dir),
        None => bail!("no cache directory (neither XDG_CACHE_HOME nor HOME is set): pass --db DIR"),
    }
}

pub fn run(args: DbArgs) -> anyhow::Result<()> {
    match args.command {
        DbCommand::Update(args) => update(args),
        DbCommand::Info(args) => info(args),
    }
}

fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let dir = resolve_dir(args.db)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut paths = Vec::new();
    let mut downloads = Vec::new();
    for (i, source) in args.from.iter().enumerate() {
        if source.starts_with("http://") || source.starts_with("https://") {
            let path = dir.join(format!("download-{}-{i}.zip", std::process::id()));
            downloads.push(path.clone());
            eprintln!("Downloading {source}");
            if let Err(e) = super::block_on(download(source, &path)) {
                remove_all(&downloads);
                return Err(e);
            }
            paths.push(path);
        } else {
            paths.push(PathBuf::from(
                source.strip_prefix("file://").unwrap_or(source),
            ));
        }
    }
    let result = berth_scan::db::import(&paths, &args.from, &dir);
    remove_all(&downloads);
    let summary = result?;
    for (eco, records) in &summary.records {
        println!("{eco}: {records} records");
    }
    println!(
        "Imported into {} in {:.1}s ({} records skipped: withdrawn, unsupported ecosystem or unreadable).",
        dir.display(),
        summary.seconds,
        summary.skipped
    );
    Ok(())
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        // A download left behind would only waste space; the import's result matters more.
        let _ = std::fs::remove_file(p);
    }
}

/// Streams `url` into `path`.
async fn download(url: &str, path: &Path) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot download {url}"))?
        .error_for_status()
        .with_context(|| format!("cannot download {url}"))?;
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("cannot download {url}"))?
    {
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    file.flush().await?;
    Ok(())
}

fn info(args: InfoArgs) -> anyhow::Result<()> {
    let dir = resolve_dir(args.db)?;
    let db = berth_scan::Db::open(&dir)?;
    if args.json {
        return super::print_json(db.meta());
    }
    println!("Index: {}", dir.display());
    for (eco, m) in &db.meta().ecosystems {
        println!(
            "{eco}: {} records, {} packages, imported {} from {}",
            m.records,
            m.packages,
            m.imported,
            m.sources.join(", ")
        );
    }
    Ok(())
}
