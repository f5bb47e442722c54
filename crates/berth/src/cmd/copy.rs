//! `berth copy`, `berth push` and `berth pull`: one copy engine, three spellings.

use berth_client::transport::{RegistryDestination, RegistrySource};
use berth_client::{copy_image, CopyOptions, CopyReport, Location, PlatformFilter};
use clap::Args;

use super::{block_on, default_jobs, print_json, Common};

/// Options of every transfer.
#[derive(Args, Debug, Clone)]
pub struct TransferFlags {
    /// Copy only this platform of a multi-platform index (os/arch[/variant]).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<PlatformFilter>,
    /// Blobs transferred at once [default: 2 x CPUs, between 4 and 8].
    #[arg(long, short, value_name = "N")]
    jobs: Option<usize>,
    /// Print a JSON report of what was copied on stdout.
    #[arg(long)]
    json: bool,
    /// Do not copy the referrers (signatures, attestations, SBOMs) of the manifests
    /// copied. By default they are copied, recursively, with their digests intact.
    #[arg(long)]
    no_referrers: bool,
    #[command(flatten)]
    common: Common,
}

/// Copy an image, or a multi-platform index with every platform, between any two
/// locations: registries, OCI layouts (oci:DIR[:TAG]), OCI tarballs
/// (oci-archive:FILE[:TAG]) and docker save tarballs (docker-archive:FILE[:NAME:TAG]).
///
/// Blobs the destination has are skipped, blobs in the same registry are mounted, large
/// blobs go in chunks that resume after a dropped connection. Digests are preserved.
///
/// Signatures, attestations and SBOMs travel with the image: the referrers of every
/// manifest copied (OCI referrers API or tag schema, and cosign v2 `sha256-<hex>.sig`,
/// `.att`, `.sbom` tags) are copied too, recursively, onto registries with or without the
/// referrers API and into OCI layouts, so signatures stay valid on the far side
/// (--no-referrers skips them; docker and OCI tarballs do not hold them).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth copy docker.io/library/alpine:3.19 localhost:5000/alpine:3.19
  berth copy localhost:5000/app:1.0 registry.example.com/team/app:1.0 --jobs 8
  berth copy localhost:5000/app:1.0 localhost:5000/app-arm:1.0 --platform linux/arm64
  berth copy --all-tags localhost:5000/app registry.example.com/mirror/app
  berth copy localhost:5000/app:1.0 oci:./app-layout:1.0
  berth copy localhost:5000/app:1.0 registry.example.com/app:1.0 --no-referrers
  berth copy docker-archive:app.tar localhost:5000/app:1.0")]
pub struct CopyArgs {
    /// Source image.
    src: String,
    /// Destination image.
    dst: String,
    /// Copy every tag of the source repository (both sides must be registries).
    #[arg(long)]
    all_tags: bool,
    #[command(flatten)]
    flags: TransferFlags,
}

/// Push a local image (OCI layout or tarball) to a registry.
///
/// SRC is oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]; a bare
/// path is an OCI layout directory, or a docker-archive if it ends in .tar.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth push ./app-layout localhost:5000/app:1.0
  berth push oci:./layout:1.0 registry.example.com/team/app:1.0
  berth push app.tar localhost:5000/app:1.0              # docker save output
  berth push oci-archive:app-oci.tar localhost:5000/app:1.0")]
pub struct PushArgs {
    /// Local image.
    src: String,
    /// Registry reference.
    dst: String,
    #[command(flatten)]
    flags: TransferFlags,
}

/// Pull an image from a registry into an OCI layout or a tarball.
///
/// DST is oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]; a bare
/// path is an OCI layout directory, or a docker-archive if it ends in .tar. A failed pull
/// leaves nothing under the final name.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth pull localhost:5000/app:1.0 ./app-layout
  berth pull docker.io/library/alpine:3.19 alpine.tar     # then: docker load -i alpine.tar
  berth pull localhost:5000/app:1.0 oci-archive:app.tar --platform linux/arm64
  berth pull localhost:5000/app:1.0 oci:./layout:1.0")]
pub struct PullArgs {
    /// Registry reference.
    src: String,
    /// Local destination.
    dst: String,
    #[command(flatten)]
    flags: TransferFlags,
}

fn options(flags: &TransferFlags) -> CopyOptions {
    CopyOptions {
        platform: flags.platform.clone(),
        jobs: flags.jobs.unwrap_or_else(default_jobs).max(1),
        referrers: !flags.no_referrers,
        ..CopyOptions::default()
    }
}

async fn transfer(src: Location, dst: Location, flags: &TransferFlags) -> anyhow::Result<()> {
    let clients = flags.common.clients()?;
    let source = berth_client::open_source(&clients, &src).await?;
    if matches!(dst, Location::DockerArchive { .. }) {
        // Refused before any blob moves, rather than when the manifest is written.
        berth_client::archive::check_docker_image(&source.root().await?, &src.to_string())?;
    }
    let dest = berth_client::open_destination(&clients, &dst, source.as_ref())?;
    let report = copy_image(
        source.as_ref(),
        dest.as_ref(),
        &options(flags),
        flags.common.progress(),
    )
    .await?;
    finish(&report, &dest.describe(), flags)
}

fn finish(report: &CopyReport, to: &str, flags: &TransferFlags) -> anyhow::Result<()> {
    if flags.json {
        return print_json(report);
    }
    if !flags.common.quiet {
        eprintln!(
            "copied {to}: {} blobs ({} copied, {} skipped, {} mounted), {} manifests, {} referrers",
            report.blobs,
            report.copied,
            report.skipped,
            report.mounted,
            report.manifests,
            report.referrers
        );
    }
    println!("{}", report.digest);
    Ok(())
}

pub fn run_copy(args: CopyArgs) -> anyhow::Result<()> {
    block_on(async move {
        let src = Location::parse(&args.src)?;
        let dst = Location::parse(&args.dst)?;
        if !args.all_tags {
            return transfer(src, dst, &args.flags).await;
        }
        let (Location::Registry(src), Location::Registry(dst)) = (src, dst) else {
            anyhow::bail!("--all-tags copies between registry repositories");
        };
        if src.tag.is_some() || src.digest.is_some() {
            anyhow::bail!("--all-tags takes a repository without tag or digest");
        }
        let clients = args.flags.common.clients()?;
        let sreg = clients.registry(&src.registry)?;
        let dreg = clients.registry(&dst.registry)?;
        let opts = options(&args.flags);
        let mut tags = sreg.tags(&src.repository).await?;
        if opts.referrers {
            // Signature and referrers-index tags come with the images they belong to.
            tags.retain(|t| !berth_client::referrers::is_artifact_tag(t));
        }
        let mut reports = Vec::new();
        for t in tags {
            let tag = berth_oci::Tag::parse(&t)?;
            let s = RegistrySource::new(sreg.clone(), src.with_tag(tag.clone()));
            let d = RegistryDestination::new(
                dreg.clone(),
                berth_client::ImageRef::new(&dst.registry, dst.repository.clone()).with_tag(tag),
            );
            let report = copy_image(&s, &d, &opts, args.flags.common.progress()).await?;
            if !args.flags.json {
                println!("{t} {}", report.digest);
            }
            reports.push(serde_json::json!({"tag": t, "report": report}));
        }
        if args.flags.json {
            print_json(&reports)?;
        }
        Ok(())
    })
}

pub fn run_push(args: PushArgs) -> anyhow::Result<()> {
    block_on(async move {
        let src = Location::parse_local(&args.src)?;
        let dst = super::registry_ref(&args.dst)?;
        transfer(src, Location::Registry(dst), &args.flags).await
    })
}

pub fn run_pull(args: PullArgs) -> anyhow::Result<()> {
    block_on(async move {
        let src = super::registry_ref(&args.src)?;
        let dst = Location::parse_local(&args.dst)?;
        transfer(Location::Registry(src), dst, &args.flags).await
    })
}
