//! `berth migrate`: moves a registry between backends (a data directory with files +
//! SQLite, or whatever a `berth.toml` names: S3, PostgreSQL), resumably. The work is in
//! `berth_server::migrate`; this is arguments, locks and progress.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use berth_server::backends::{self, Create};
use berth_server::config::{MetadataBackend, Settings, Storage};
use berth_server::migrate::{Destination, MigrateReport, Observer, Source};
use berth_server::service::{Registry, RegistryParts};
use berth_server::Config;
use clap::Args;

/// Copy a whole registry into other backends without changing one digest.
///
/// Each side is a data directory (the embedded default: files + SQLite) or a berth.toml
/// naming its backends (`storage = "s3"`, `database_url = "postgres://..."`). Blobs,
/// manifests with their tags, signatures and other referrers, accounts, grants, public
/// patterns and the audit log are copied; download counters are not. Stop the servers
/// of both sides first (a data directory is locked while it is read or written). What
/// the destination already holds is skipped, so an interrupted run resumes when run
/// again; digests are verified on the way in.
#[derive(Args)]
#[command(after_help = "Examples:
  berth migrate --from /var/lib/berth --to berth.toml        # into S3 + PostgreSQL
  berth migrate --from berth.toml --to /var/lib/berth-back    # and back
  berth migrate --from old-data --to new-data --json")]
pub struct MigrateArgs {
    /// The registry to copy: a data directory or a berth.toml.
    #[arg(long, value_name = "DIR|FILE")]
    from: PathBuf,
    /// Where to copy it: a data directory (created if absent) or a berth.toml.
    #[arg(long, value_name = "DIR|FILE")]
    to: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Print no progress, only the report and errors.
    #[arg(long, short)]
    quiet: bool,
}

/// A side's configuration: a TOML file, or the defaults on a data directory. `BERTH_*`
/// variables are not applied: they would apply to both sides at once.
fn side(path: &Path) -> anyhow::Result<Config> {
    if path.is_file() {
        Ok(Config::load(Some(path), Settings::default())
            .with_context(|| format!("reading {}", path.display()))?)
    } else {
        Ok(Config {
            data_dir: path.to_owned(),
            ..Default::default()
        })
    }
}

/// Whether a side keeps anything in its data directory (files, or the SQLite database),
/// which must then be locked against a server using it at the same time.
fn uses_data_dir(c: &Config) -> anyhow::Result<bool> {
    Ok(c.storage == Storage::Fs || matches!(c.metadata_backend()?, MetadataBackend::Sqlite(_)))
}

/// Progress bars on a terminal: one per blob being copied, and the steps.
struct Bars {
    bar: Option<indicatif::ProgressBar>,
}

impl Observer for Bars {
    fn plan(&self, _blobs: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_length(bytes);
        }
    }

    fn blob(&self, _digest: &berth_oci::Digest, size: u64, _copied: bool) {
        if let Some(b) = &self.bar {
            b.inc(size);
        }
    }

    fn note(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_owned());
        }
    }
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    crate::check_env()?;
    let from = side(&args.from)?;
    let to = side(&args.to)?;
    let same_dir = uses_data_dir(&from)?
        && uses_data_dir(&to)?
        && from
            .data_dir
            .canonicalize()
            .ok()
            .is_some_and(|a| to.data_dir.canonicalize().ok().is_some_and(|b| a == b));
    if same_dir || args.from == args.to {
        bail!("--from and --to name the same registry");
    }
    let bar = (!args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ) {
            b.set_style(style);
        }
        b.set_message("blobs");
        b
    });
    let observer = Bars { bar };
    let report = crate::cmd::block_on(async {
        // The source is opened as an administrator would (it must exist), the
        // destination may be created; both data directories are locked throughout.
        let _from_lock = match uses_data_dir(&from)? {
            true => Some(
                backends::lock_data_dir(&from)
                    .context("the source's data directory is in use (stop its server first)")?,
            ),
            false => None,
        };
        let _to_lock =
            match uses_data_dir(&to)? {
                true => Some(backends::lock_data_dir(&to).context(
                    "the destination's data directory is in use (stop its server first)",
                )?),
                false => None,
            };
        let src = backends::open_meta(&from, Create::No)?;
        let source = Source {
            blobs: backends::open_blobs(&from)?,
            meta: src.meta,
            accounts: src.accounts,
        };
        let dst = backends::open_meta(&to, Create::Yes)?;
        let blobs = backends::open_blobs(&to)?;
        let registry = Registry::new(RegistryParts {
            blobs,
            meta: dst.meta.clone(),
            policy: Arc::new(berth_server::policy::Policy::new(&to.tag_policy)?),
            // No subscriber: copying is not pushing (no audit rows, no webhooks).
            events: berth_server::events::Events::new(Vec::new()),
            max_manifest_bytes: to.max_manifest_bytes.max(from.max_manifest_bytes),
            upload_idle_timeout: to.upload_idle_timeout,
        });
        let destination = Destination {
            registry,
            meta: dst.meta,
            accounts: dst.accounts,
        };
        let report = berth_server::migrate::migrate(&source, &destination, &observer).await?;
        anyhow::Ok(report)
    })?;
    if let Some(b) = &observer.bar {
        b.finish_and_clear();
    }
    print(&report, args.json)
}

fn print(r: &MigrateReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "blobs: {} copied ({} bytes), {} already there, {} more links",
        r.blobs_copied, r.bytes_copied, r.blobs_present, r.links_made
    );
    println!(
        "manifests: {} copied, {} already there, {} tags, {} repositories",
        r.manifests_pushed, r.manifests_present, r.tags, r.repositories
    );
    println!(
        "accounts: {} created; {} public patterns; {} audit entries",
        r.accounts_created, r.public_patterns, r.audit_entries
    );
    if !r.pending_tags_skipped.is_empty() {
        println!(
            "not copied (waiting for a signature): {}",
            r.pending_tags_skipped.join(", ")
        );
    }
    Ok(())
}
