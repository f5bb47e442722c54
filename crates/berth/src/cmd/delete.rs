//! `berth delete`: delete a manifest from a registry.

use clap::Args;

use super::{block_on, registry_ref, Common};

/// Delete an image (its manifest, and so every tag pointing at it) from a registry.
/// A tag is resolved to its digest first, since registries delete by digest.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth delete localhost:5000/app:old
  berth delete localhost:5000/app@sha256:4f1c...
  berth delete --force localhost:5000/app:1.2.3   # a release tag Berth's policy protects")]
pub struct DeleteArgs {
    /// Image to delete.
    reference: String,
    /// Override a Berth registry's tag policy (release tags are immutable); needs admin.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: DeleteArgs) -> anyhow::Result<()> {
    block_on(async move {
        let r = registry_ref(&args.reference)?;
        let clients = args.common.clients()?;
        let digest = berth_client::index::resolve(&clients, &r).await?;
        clients
            .registry(&r.registry)?
            .delete_manifest_with(&r.repository, &digest, args.force)
            .await?;
        if !args.common.quiet {
            eprintln!("deleted {}@{digest}", r.name());
        }
        Ok(())
    })
}
