//! `berth tags`: every tag of a repository, following pagination.

use berth_client::layout::LayoutIndex;
use berth_client::Location;
use clap::Args;

use super::{block_on, print_json, Common};

/// List all tags of a repository (or of an OCI layout), one per line.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth tags localhost:5000/app
  berth tags --json docker.io/library/alpine
  berth tags oci:./layout")]
pub struct TagsArgs {
    /// Repository (any tag or digest is ignored).
    repository: String,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: TagsArgs) -> anyhow::Result<()> {
    block_on(async move {
        let tags = match Location::parse(&args.repository)? {
            Location::Registry(r) => {
                let clients = args.common.clients()?;
                clients.registry(&r.registry)?.tags(&r.repository).await?
            }
            Location::Layout { path, .. } => LayoutIndex::read(&path)?.tags(),
            other => anyhow::bail!("cannot list tags of {other}"),
        };
        if args.json {
            return print_json(&tags);
        }
        for t in tags {
            println!("{t}");
        }
        Ok(())
    })
}
