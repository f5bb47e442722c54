//! `berth inspect`: manifest or index, artifact type, annotations, platforms, config,
//! layers and sizes, and the referrers of a registry image; with `--layers`, the layer
//! report of [`berth_client::layers`] (each layer streamed once).

use std::io::Write;

use berth_client::{Location, PlatformFilter};
use clap::Args;

use super::{block_on, print_json, Common};

/// Show what an image is: manifest or index, artifact type, annotations, platforms, config
/// (entrypoint, env, labels, created), layer sizes and total compressed size, and for a
/// registry image its referrers (signatures, SBOMs: the manifests whose subject it is).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth inspect localhost:5000/app:1.0
  berth inspect localhost:5000/app:1.0 --platform linux/arm64
  berth inspect --raw localhost:5000/app:1.0 | jq .      # the exact manifest bytes
  berth inspect --json oci:./layout:1.0
  berth inspect docker-archive:app.tar
  berth inspect --layers localhost:5000/app:1.0           # wasted bytes, zstd estimate
  berth inspect --layers --json localhost:5000/app:1.0 --platform linux/amd64")]
pub struct InspectArgs {
    /// Image (registry reference, oci:, oci-archive: or docker-archive:).
    reference: String,
    /// Print the exact manifest or index bytes.
    #[arg(long, conflicts_with = "json")]
    raw: bool,
    /// Print a JSON summary (with a `referrers` array for a registry image).
    #[arg(long)]
    json: bool,
    /// Read every layer (once, streamed) and report per layer: sizes compressed and
    /// not, files added, bytes wasted (overwritten or deleted later), duplicate files,
    /// the zstd recompression estimate, and the image's efficiency score.
    #[arg(long, conflicts_with = "raw")]
    layers: bool,
    /// For an index, also show this platform's image (with --layers, the image to read).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<PlatformFilter>,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    block_on(async move {
        let clients = args.common.clients()?;
        let loc = Location::parse(&args.reference)?;
        let src = berth_client::open_source(&clients, &loc).await?;
        if args.raw {
            let m = src.root().await?;
            std::io::stdout().write_all(&m.bytes)?;
            return Ok(());
        }
        if args.layers {
            let report =
                berth_client::layers::layer_report(src.as_ref(), args.platform.as_ref()).await?;
            return if args.json {
                print_json(&report)
            } else {
                print!("{}", report.to_text());
                Ok(())
            };
        }
        let info = berth_client::inspect::inspect(src.as_ref(), args.platform.as_ref()).await?;
        if args.json {
            print_json(&info)
        } else {
            print!("{}", info.to_text());
            Ok(())
        }
    })
}
