//! `berth tags`: every tag of a repository, following pagination. Tags that attach
//! signatures, attestations and SBOMs are left out unless `--all` (Berth hides them
//! itself; for other registries and layouts they are filtered here, by the same rule).

use berth_client::layout::LayoutIndex;
use berth_client::referrers::is_artifact_tag;
use berth_client::Location;
use clap::Args;

use super::{block_on, print_json, Common};

/// List all tags of a repository (or of an OCI layout), one per line.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth tags localhost:5000/app
  berth tags --json docker.io/library/alpine
  berth tags --all localhost:5000/app     # with sha256-<hex>.sig and the like
  berth tags oci:./layout")]
pub struct TagsArgs {
    /// Repository (any tag or digest is ignored).
    repository: String,
    /// Print a JSON array (with --all, an object: {"tags": [...], "pending": [{"tag",
    /// "digest", "since"}]}).
    #[arg(long)]
    json: bool,
    /// Also list the tags that attach signatures, attestations and SBOMs (cosign v2's
    /// sha256-<hex>.sig/.att/.sbom, the referrers tag schema's sha256-<hex>), which Berth
    /// hides by default, and the release tags a trust policy holds back until their
    /// image is signed ("waiting for signature").
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: TagsArgs) -> anyhow::Result<()> {
    block_on(async move {
        let mut pending = Vec::new();
        let tags = match Location::parse(&args.repository)? {
            Location::Registry(r) => {
                let clients = args.common.clients()?;
                let reg = clients.registry(&r.registry)?;
                if args.all {
                    pending = reg.pending_tags(&r.repository).await?;
                    reg.tags_all(&r.repository).await?
                } else {
                    let mut tags = reg.tags(&r.repository).await?;
                    tags.retain(|t| !is_artifact_tag(t));
                    tags
                }
            }
            Location::Layout { path, .. } => {
                let mut tags = LayoutIndex::read(&path)?.tags();
                if !args.all {
                    tags.retain(|t| !is_artifact_tag(t));
                }
                tags
            }
            other => anyhow::bail!("cannot list tags of {other}"),
        };
        if args.json && args.all {
            return print_json(&serde_json::json!({ "tags": tags, "pending": pending }));
        }
        if args.json {
            return print_json(&tags);
        }
        for t in tags {
            println!("{t}");
        }
        for p in pending {
            println!(
                "{}\twaiting for signature of {} since {}",
                p.tag, p.digest, p.since
            );
        }
        Ok(())
    })
}
