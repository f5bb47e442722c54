//! `berth sbom`: list what an image holds as an SPDX or CycloneDX document, and with
//! `--attach` push it as a referrer of the image (signed as an attestation with
//! `--key`). The work is in `berth_client::sbom` and `berth_sbom`; this module picks
//! the output and prints.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use berth_client::sign::{sign_subject, Claim, Format as SignFormat, SignOptions};
use berth_client::{Location, PlatformFilter};
use berth_sbom::{Format, Stamp, Subject};
use berth_trust::KeySigner;
use clap::Args;

use super::{block_on, default_jobs, registry_ref, Common};

/// List the software installed in an image as an SBOM (SPDX 2.3 or CycloneDX 1.5 JSON).
///
/// The image's layers are read in order as streams, never unpacked to disk; whiteouts
/// apply, so a package a later layer removes is not listed. Read: dpkg (and distroless
/// status.d), apk, RPM's SQLite database, Python dist-info/egg-info, node_modules
/// packages, Go binaries' build info, `cargo auditable` binaries, Maven pom.properties
/// in jars, and the OS release. Each package has a purl, its licence where recorded and
/// the digest of the layer it came from.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth sbom localhost:5000/app:1.0 > app.spdx.json
  berth sbom localhost:5000/app:1.0 --platform linux/arm64 --format cyclonedx-json -o app.cdx.json
  berth sbom localhost:5000/app:1.0 --attach                 # a referrer of the image
  berth sbom localhost:5000/app:1.0 --attach --key cosign.key # and a signed attestation
  berth sbom oci:./layout:1.0")]
pub struct SbomArgs {
    /// Image (registry reference, oci:, oci-archive: or docker-archive:).
    reference: String,
    /// For an index, the platform's image [default: this machine's].
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<PlatformFilter>,
    /// Document format: spdx-json or cyclonedx-json.
    #[arg(long, value_name = "FORMAT", default_value = "spdx-json")]
    format: Format,
    /// Write the document to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Push the document as an OCI referrer of the image (registry images only).
    #[arg(long)]
    attach: bool,
    /// With --attach, also sign it as an attestation with this private key (as
    /// `berth attest --type spdxjson|cyclonedx` does).
    #[arg(long, value_name = "FILE", requires = "attach")]
    key: Option<PathBuf>,
    /// Layers fetched and read at once.
    #[arg(long, default_value_t = default_jobs())]
    jobs: usize,
    #[command(flatten)]
    common: Common,
}

/// The stamp of a document made now by this binary.
pub fn stamp() -> Stamp {
    Stamp {
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        created: berth_oci::time::rfc3339(berth_oci::time::now()),
    }
}

pub fn run(args: SbomArgs) -> anyhow::Result<()> {
    let loc = Location::parse(&args.reference)?;
    let image = if args.attach {
        Some(registry_ref(&args.reference)?)
    } else {
        None
    };
    // The key (and its password) first: nothing is read or pushed if it cannot be used.
    let signer = match &args.key {
        Some(k) => Some(KeySigner::new(super::key::read_private_key(k)?)),
        None => None,
    };
    let talk = !args.common.quiet && std::io::stderr().is_terminal();
    block_on(async move {
        let clients = args.common.clients()?;
        let src = berth_client::open_source(&clients, &loc).await?;
        if talk {
            eprintln!("reading the layers of {}…", src.describe());
        }
        let scanned =
            berth_client::sbom::inventory(src.as_ref(), args.platform.as_ref(), args.jobs).await?;
        let subject = Subject {
            name: image
                .as_ref()
                .map(|i| i.name())
                .or_else(|| src.image_name())
                .unwrap_or_else(|| src.describe()),
            digest: scanned.manifest.digest.to_string(),
            tag: src.tag(),
            platform: scanned.platform.as_ref().map(|p| p.to_string()),
        };
        let stamp = stamp();
        let doc = args.format.write(&scanned.inventory, &subject, &stamp)?;
        if !args.common.quiet {
            for note in &scanned.inventory.notes {
                eprintln!("note: {note}");
            }
        }
        match &args.output {
            Some(path) => {
                std::fs::write(path, &doc).with_context(|| format!("writing {}", path.display()))?
            }
            None => std::io::stdout().write_all(&doc)?,
        }
        if talk {
            eprintln!(
                "{} packages in {}@{}",
                scanned.inventory.packages.len(),
                subject.name,
                subject.digest
            );
        }
        let Some(image) = image else {
            return Ok(());
        };
        let reg = clients.registry(&image.registry)?;
        let referrer = berth_client::sbom::attach(
            &reg,
            &image.repository,
            &scanned.manifest,
            args.format,
            doc.clone(),
            &stamp.created,
        )
        .await?;
        eprintln!(
            "attached {} to {}: referrer {referrer}",
            args.format.media_type(),
            subject.digest
        );
        if let Some(signer) = &signer {
            let claim = Claim::Attestation {
                predicate_type: args.format.predicate_type().to_owned(),
                predicate: serde_json::from_slice(&doc)?,
            };
            let opts = SignOptions {
                format: SignFormat::Bundle,
                ..SignOptions::default()
            };
            let signed = sign_subject(
                &reg,
                &image.repository,
                &image.name(),
                &scanned.manifest,
                signer,
                &claim,
                &opts,
            )
            .await?;
            eprintln!(
                "attested ({}) {}: bundle referrer {}",
                signed.predicate_type, signed.subject, signed.artifact
            );
        }
        Ok(())
    })
}
