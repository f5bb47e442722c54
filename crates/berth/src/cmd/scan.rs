//! `berth scan`: the packages of an SBOM against the local vulnerability index built by
//! `berth db update`. No network I/O: everything is in `berth_scan`; this module reads
//! the SBOM, prints the findings and turns the `--severity` threshold into the exit
//! status.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use berth_scan::{report, sbom, Db, Severity};
use clap::Args;

use super::db::resolve_dir;
use super::print_json;

/// The scan found vulnerabilities at or above the `--severity` threshold; the report was
/// printed. `main` exits with status 1.
#[derive(Debug)]
pub struct ThresholdReached(pub String);

impl std::fmt::Display for ThresholdReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ThresholdReached {}

/// Match the packages of an SBOM against known vulnerabilities (OSV records).
///
/// Prints each vulnerability's id, package, installed and fixed versions, and severity
/// (from the record's CVSS v3 vector, else its CVSS v4 vector, else its severity word).
/// Packages are read from an SPDX 2.3 JSON (purl external references) or CycloneDX
/// JSON (component purls) document. Supported: Debian, Ubuntu, Alpine, PyPI, npm, Go, crates.io, Maven.
#[derive(Args, Debug)]
#[command(
    after_help = "The index is built beforehand by `berth db update`; a scan does no network I/O.
Exit status: 0, or 1 when --severity is given and a finding is at or above it (and on errors).
Without --severity the exit status does not depend on the findings.

Examples:
  berth db update --from https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip
  berth scan --sbom app.spdx.json
  berth scan app.cdx.json --severity high
  berth scan --sbom app.spdx.json --sarif > berth.sarif

  berth scan localhost:5000/team/app:1.0 --severity critical   # an image: its SBOM made on the way
  berth scan oci:./layout:1.0 --platform linux/arm64

A TARGET that is an existing file is read as an SBOM (from berth sbom, syft or trivy);
anything else is an image (registry reference, oci:, oci-archive: or docker-archive:),
whose layers are read as `berth sbom` reads them."
)]
pub struct ScanArgs {
    /// An SBOM file, or an image reference to make the SBOM of.
    #[arg(value_name = "TARGET", conflicts_with = "sbom")]
    target: Option<String>,
    /// The SBOM to scan: SPDX 2.3 JSON or CycloneDX JSON.
    #[arg(long, value_name = "FILE")]
    sbom: Option<PathBuf>,
    /// The index directory [default: $XDG_CACHE_HOME/berth/osv or ~/.cache/berth/osv].
    #[arg(long, value_name = "DIR", env = "BERTH_OSV_DB")]
    db: Option<PathBuf>,
    /// Exit with status 1 when a finding is at or above this severity: unknown, none,
    /// low, medium, high or critical.
    #[arg(long, value_name = "LEVEL")]
    severity: Option<Severity>,
    /// Print the findings as JSON.
    #[arg(long, conflicts_with = "sarif")]
    json: bool,
    /// Print the findings as SARIF 2.1.0 (for code-scanning dashboards).
    #[arg(long)]
    sarif: bool,
    /// For an image index, the platform's image [default: this machine's].
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<berth_client::PlatformFilter>,
    #[command(flatten)]
    common: super::Common,
}

/// The packages of an image, read from its layers as `berth sbom` reads them.
fn image_packages(args: &ScanArgs, reference: &str) -> anyhow::Result<Vec<berth_scan::Package>> {
    let loc = berth_client::Location::parse(reference)?;
    let talk = !args.common.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    super::block_on(async {
        let clients = args.common.clients()?;
        let src = berth_client::open_source(&clients, &loc).await?;
        if talk {
            eprintln!("reading the layers of {}…", src.describe());
        }
        let scanned = berth_client::sbom::inventory(
            src.as_ref(),
            args.platform.as_ref(),
            super::default_jobs(),
        )
        .await?;
        if !args.common.quiet {
            for note in &scanned.inventory.notes {
                eprintln!("note: {note}");
            }
        }
        Ok(scanned
            .inventory
            .packages
            .iter()
            .filter(|p| !p.purl.is_empty())
            .map(|p| berth_scan::Package::new(p.purl.clone()))
            .collect())
    })
}

/// The packages of an SBOM file.
fn sbom_packages(path: &PathBuf) -> anyhow::Result<Vec<berth_scan::Package>> {
    if !path.is_file() {
        bail!("{} is not a file", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    sbom::packages(&bytes).with_context(|| format!("cannot read {}", path.display()))
}

pub fn run(args: ScanArgs) -> anyhow::Result<()> {
    // The index first: a missing one is said before any layer is read.
    let db = Db::open(&resolve_dir(args.db.clone())?)?;
    let packages = match (&args.sbom, &args.target) {
        (Some(path), _) => sbom_packages(path)?,
        (None, Some(t)) if std::path::Path::new(t).is_file() => sbom_packages(&PathBuf::from(t))?,
        (None, Some(reference)) => image_packages(&args, reference)?,
        (None, None) => bail!(
            "nothing to scan: pass an SBOM file or an image (berth scan FILE|REF, or --sbom FILE)"
        ),
    };
    let findings = berth_scan::scan(&packages, &db);
    for (reason, count) in berth_scan::unchecked(&packages, &db) {
        if reason == "unsupported" {
            eprintln!("note: {count} package(s) of an unsupported type or without a version were not checked");
        } else {
            eprintln!(
                "note: the index has no {reason} records; {count} {reason} package(s) were not checked \
                 (berth db update --from .../{reason}/all.zip)"
            );
        }
    }
    if args.json {
        print_json(&report::json(&findings, packages.len()))?;
    } else if args.sarif {
        print_json(&report::sarif(&findings, env!("CARGO_PKG_VERSION")))?;
    } else if findings.is_empty() {
        println!("No known vulnerabilities in {} packages.", packages.len());
    } else {
        print!("{}", report::table(&findings));
        let mut counts: Vec<String> = Vec::new();
        for level in [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
            Severity::None,
            Severity::Unknown,
        ] {
            let n = findings.iter().filter(|f| f.severity == level).count();
            if n > 0 {
                counts.push(format!("{n} {level}"));
            }
        }
        println!(
            "\n{} vulnerabilities in {} packages ({}).",
            findings.len(),
            packages.len(),
            counts.join(", ")
        );
    }
    if let Some(threshold) = args.severity {
        let n = report::at_or_above(&findings, threshold);
        if n > 0 {
            return Err(ThresholdReached(format!(
                "{n} vulnerabilit{} at or above {threshold}",
                if n == 1 { "y" } else { "ies" }
            ))
            .into());
        }
    }
    Ok(())
}
