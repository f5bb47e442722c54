//! `berth tag`: more tags for an image, without moving any layer.

use clap::Args;

use super::{block_on, registry_ref, Common};

/// Tag an image in its repository with one or more new tags. Only the manifest is
/// pushed again; no layer moves.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth tag localhost:5000/app:1.0.3 1.0 1 latest
  berth tag localhost:5000/app@sha256:4f1c... stable
  berth tag --force localhost:5000/app:1.0.2 latest   # move latest back; needs admin")]
pub struct TagArgs {
    /// Existing image.
    src: String,
    /// New tags.
    #[arg(required = true)]
    tags: Vec<String>,
    /// Override a Berth registry's tag policy (release tags are immutable, floating tags
    /// only move forward); needs admin.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: TagArgs) -> anyhow::Result<()> {
    block_on(async move {
        let src = registry_ref(&args.src)?;
        let tags = args
            .tags
            .iter()
            .map(|t| berth_oci::Tag::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        let clients = args.common.clients()?;
        let digest = berth_client::index::retag_with(&clients, &src, &tags, args.force).await?;
        if !args.common.quiet {
            for t in &tags {
                eprintln!("tagged {}:{t}", src.name());
            }
        }
        println!("{digest}");
        Ok(())
    })
}
