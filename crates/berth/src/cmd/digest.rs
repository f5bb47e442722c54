//! `berth digest`: the digest a reference resolves to.

use berth_client::{Location, PlatformFilter};
use clap::Args;

use super::{block_on, Common};

/// Print the digest of the manifest or index a reference names.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth digest localhost:5000/app:1.0
  berth digest localhost:5000/app:1.0 --platform linux/arm64
  berth digest oci:./layout:1.0")]
pub struct DigestArgs {
    /// Image (registry reference or local transport).
    reference: String,
    /// For an index, print the digest of this platform's image instead.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<PlatformFilter>,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: DigestArgs) -> anyhow::Result<()> {
    block_on(async move {
        let clients = args.common.clients()?;
        let loc = Location::parse(&args.reference)?;
        if let (Location::Registry(r), None) = (&loc, &args.platform) {
            println!("{}", berth_client::index::resolve(&clients, r).await?);
            return Ok(());
        }
        let src = berth_client::open_source(&clients, &loc).await?;
        let info = berth_client::inspect::inspect(src.as_ref(), args.platform.as_ref()).await?;
        match (&args.platform, info.image) {
            (Some(_), Some(img)) => println!("{}", img.digest),
            _ => println!("{}", info.digest),
        }
        Ok(())
    })
}
