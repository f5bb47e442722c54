//! `berth index create|add|remove`: multi-platform indexes.

use berth_client::index::{self, Removal};
use berth_client::{CopyOptions, Location, PlatformFilter};
use clap::{Args, Subcommand};

use super::{block_on, default_jobs, registry_ref, Common};

/// Assemble and edit multi-platform indexes (like docker buildx imagetools create).
#[derive(Args, Debug)]
pub struct IndexArgs {
    #[command(subcommand)]
    command: IndexCommand,
}

#[derive(Subcommand, Debug)]
enum IndexCommand {
    Create(CreateArgs),
    Add(AddArgs),
    Remove(RemoveArgs),
}

/// Create an index at DST from per-platform images (the platform is read from each
/// image's config; an index source contributes all its entries). Sources elsewhere are
/// copied into DST's repository first.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth index create localhost:5000/app:1.0 localhost:5000/app:1.0-amd64 localhost:5000/app:1.0-arm64
  berth index create registry.example.com/app:1.0 oci:./amd64 oci:./arm64")]
struct CreateArgs {
    /// The index to create.
    dst: String,
    /// Per-platform images (any location).
    #[arg(required = true)]
    sources: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// Add images to an existing index; an entry with the same platform is replaced.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth index add localhost:5000/app:1.0 localhost:5000/app:1.0-riscv64")]
struct AddArgs {
    /// The index to edit.
    dst: String,
    #[arg(required = true)]
    sources: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// Remove entries from an existing index by platform or digest.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth index remove localhost:5000/app:1.0 --platform linux/arm/v7
  berth index remove localhost:5000/app:1.0 --digest sha256:4f1c...")]
struct RemoveArgs {
    /// The index to edit.
    dst: String,
    /// Remove the entries of this platform.
    #[arg(long, value_name = "PLATFORM")]
    platform: Vec<PlatformFilter>,
    /// Remove the entry with this digest.
    #[arg(long, value_name = "DIGEST")]
    digest: Vec<berth_oci::Digest>,
    #[command(flatten)]
    common: Common,
}

fn locations(sources: &[String]) -> anyhow::Result<Vec<Location>> {
    Ok(sources
        .iter()
        .map(|s| Location::parse(s))
        .collect::<Result<Vec<_>, _>>()?)
}

pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    block_on(async move {
        let opts = CopyOptions {
            jobs: default_jobs(),
            ..CopyOptions::default()
        };
        let digest = match args.command {
            IndexCommand::Create(a) => {
                let clients = a.common.clients()?;
                let dst = registry_ref(&a.dst)?;
                index::create(
                    &clients,
                    &dst,
                    &locations(&a.sources)?,
                    &opts,
                    a.common.progress(),
                )
                .await?
            }
            IndexCommand::Add(a) => {
                let clients = a.common.clients()?;
                let dst = registry_ref(&a.dst)?;
                index::add(
                    &clients,
                    &dst,
                    &locations(&a.sources)?,
                    &opts,
                    a.common.progress(),
                )
                .await?
            }
            IndexCommand::Remove(a) => {
                let clients = a.common.clients()?;
                let dst = registry_ref(&a.dst)?;
                let what: Vec<Removal> = a
                    .platform
                    .into_iter()
                    .map(Removal::Platform)
                    .chain(a.digest.into_iter().map(Removal::Digest))
                    .collect();
                if what.is_empty() {
                    anyhow::bail!("say what to remove with --platform or --digest");
                }
                index::remove(&clients, &dst, &what).await?
            }
        };
        println!("{digest}");
        Ok(())
    })
}
