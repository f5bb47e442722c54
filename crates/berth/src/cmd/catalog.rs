//! `berth catalog`: the repositories of a registry.

use clap::Args;

use super::{block_on, host_arg, print_json, Common};

/// List the repositories of a registry, following pagination.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth catalog localhost:5000
  berth catalog --json registry.example.com")]
pub struct CatalogArgs {
    /// Registry host[:port].
    host: String,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: CatalogArgs) -> anyhow::Result<()> {
    block_on(async move {
        let clients = args.common.clients()?;
        let repos = clients.registry(&host_arg(&args.host))?.catalog().await?;
        if args.json {
            return print_json(&repos);
        }
        for r in repos {
            println!("{r}");
        }
        Ok(())
    })
}
