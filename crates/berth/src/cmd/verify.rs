//! `berth verify` and `berth verify-attestation`: check a registry image's signatures or
//! attestations against public keys, and with `--release` run the release checklist.
//!
//! The finding and checking is `berth_client::verify`; this module reads keys and
//! arguments, resolves the reference once, prints the report and turns "nothing valid"
//! into [`NotVerified`], which `main` maps to [`EXIT_NOT_VERIFIED`].

use std::path::PathBuf;

use anyhow::Context as _;
use berth_client::progress::human_bytes;
use berth_client::verify::{
    self, Check, ManifestTrust, PlatformReport, Policy, ReleaseReport, Sbom, SignatureReport,
    Signed,
};
use berth_client::{ClientError, ImageRef};
use berth_oci::Digest;
use berth_trust::{PublicKey, SignatureFormat, Verdict};
use clap::Args;
use serde_json::json;

use super::{block_on, print_json, registry_ref, Common};

/// The exit code when verification ran and found nothing valid: no valid signature (or
/// attestation) by the given keys, or a failed release check.
pub const EXIT_NOT_VERIFIED: u8 = 7;

/// Verification ran and did not pass; the report was printed.
#[derive(Debug)]
pub struct NotVerified(pub String);

impl std::fmt::Display for NotVerified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotVerified {}

/// Verify an image's signatures (cosign v3 bundles and cosign v2 `.sig`) against public keys.
///
/// The reference is resolved to a digest once; every signature of that digest is found
/// (OCI referrers, the referrers tag schema on registries without the API, the
/// `sha256-<hex>.sig` tag) and checked: the key, that the signed digest is the resolved
/// one, and the required annotations. Each is printed: who (key and fingerprint), what
/// (digest, format), when (its `created` annotation, which is not signed), or why it
/// fails. Keyless signatures (Fulcio certificates, Rekor entries) are not supported.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 at least one valid signature (with --release: every check passed);
7 no valid signature (with --release: a check failed); 2 usage, 3 image not found,
4 authentication, 6 network, 1 other errors.

Examples:
  berth verify --key cosign.pub localhost:5000/app:1.0
  berth verify --key old.pub --key new.pub -a env=prod localhost:5000/app@sha256:...
  berth verify --key cosign.pub --json registry.example.com/team/app:1.0 | jq .checks
  berth verify --key cosign.pub --release localhost:5000/app:1.0

--release is the release checklist in one command: for every platform of the index (or the
single manifest), every blob pulled into an empty temporary directory and its digest and size
verified, a valid signature of the platform manifest or of its index, and an SBOM (a verified
SPDX/CycloneDX attestation, or an SPDX/CycloneDX referrer) on the platform or its index.

The equivalent cosign v3 command (Berth's bundles carry no transparency-log entry):
  cosign verify --key cosign.pub --insecure-ignore-tlog=true IMAGE"
)]
pub struct VerifyArgs {
    /// Image in a registry (REGISTRY/NAME:TAG or REGISTRY/NAME@DIGEST).
    reference: String,
    /// Public key (PKIX PEM, as `cosign.pub`); repeat to accept any of several keys.
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
    /// Require this annotation in the signed payload (repeatable), as `cosign verify -a`.
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE", value_parser = parse_annotation)]
    annotations: Vec<(String, String)>,
    /// Run the release checklist: blobs, signatures and SBOM of every platform.
    #[arg(long)]
    release: bool,
    /// Print the report as JSON (for CI); the exit code says the verdict.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// Verify an image's attestations (cosign v3 bundles, cosign v2 `.att`) against public keys.
///
/// Like `berth verify`, for in-toto attestations: each is checked against the keys, its
/// subject against the resolved digest, and its predicate type against `--type`; the
/// predicate type of each is printed.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 at least one valid attestation; 7 none; 2 usage,
3 image not found, 4 authentication, 6 network, 1 other errors.

Examples:
  berth verify-attestation --key cosign.pub localhost:5000/app:1.0
  berth verify-attestation --key cosign.pub --type spdxjson localhost:5000/app:1.0
  berth verify-attestation --key cosign.pub --type https://example.com/test/v1 --json localhost:5000/app:1.0

The equivalent cosign v3 command:
  cosign verify-attestation --key cosign.pub --type spdxjson --insecure-ignore-tlog=true IMAGE"
)]
pub struct VerifyAttestationArgs {
    /// Image in a registry (REGISTRY/NAME:TAG or REGISTRY/NAME@DIGEST).
    reference: String,
    /// Public key (PKIX PEM, as `cosign.pub`); repeat to accept any of several keys.
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
    /// Predicate type: slsaprovenance, slsaprovenance1, spdx, spdxjson, cyclonedx, link,
    /// vuln, openvex, custom or a URI [default: any].
    #[arg(long = "type", value_name = "TYPE")]
    predicate_type: Option<String>,
    /// Require this annotation in the statement's subject (repeatable).
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE", value_parser = parse_annotation)]
    annotations: Vec<(String, String)>,
    /// Print the report as JSON (for CI); the exit code says the verdict.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// Parses one `KEY=VALUE` annotation (the key not empty; the value may hold `=`).
pub(crate) fn parse_annotation(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The keys given, each with the file it came from (to name the signer).
struct Keys(Vec<(String, PublicKey)>);

impl Keys {
    fn load(paths: &[PathBuf]) -> anyhow::Result<Keys> {
        let mut out = Vec::new();
        for path in paths {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let key = PublicKey::from_pem(&pem).map_err(|e| {
                let hint = if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
                    " (this is a private key: verify with the public key, e.g. cosign.pub)"
                } else {
                    ""
                };
                ClientError::Usage(format!("{}: {e}{hint}", path.display()))
            })?;
            out.push((path.display().to_string(), key));
        }
        Ok(Keys(out))
    }

    fn public_keys(&self) -> Vec<PublicKey> {
        self.0.iter().map(|(_, k)| k.clone()).collect()
    }

    /// The file a key fingerprint came from.
    fn name(&self, fingerprint: &str) -> &str {
        self.0
            .iter()
            .find(|(_, k)| k.fingerprint() == fingerprint)
            .map_or("?", |(n, _)| n.as_str())
    }
}

pub fn run_verify(args: VerifyArgs) -> anyhow::Result<()> {
    let keys = Keys::load(&args.keys)?;
    let image = registry_ref(&args.reference)?;
    let policy = Policy::signature(keys.public_keys(), args.annotations.into_iter().collect());
    let json = args.json;
    block_on(async move {
        let clients = args.common.clients()?;
        let reg = clients.registry(&image.registry)?;
        let repo = &image.repository;
        if args.release {
            // The manifest is fetched once, by tag or digest; everything after is by
            // the digest of these bytes.
            let root = reg.get_manifest(repo, &image.reference()).await?;
            let report = verify::check_release(&reg, repo, &root, &policy).await?;
            print_release(&image, &report, &keys, json)?;
            if !report.passed() {
                let failed = report.platforms.iter().filter(|p| !p.passed()).count();
                return Err(NotVerified(if report.platforms.is_empty() {
                    format!("release check of {image} failed: no platform to check")
                } else {
                    format!(
                        "release check of {image} failed: {failed} of {} platforms",
                        report.platforms.len()
                    )
                })
                .into());
            }
            return Ok(());
        }
        let digest = resolve(&reg, &image).await?;
        let report = verify::find_signatures(&reg, repo, &digest, &policy).await?;
        print_signatures(&image, &report, &keys, "signature", json)?;
        if !report.is_valid() {
            return Err(NotVerified(format!(
                "no valid signature of {image} ({digest}) by {}",
                key_list(&keys)
            ))
            .into());
        }
        Ok(())
    })
}

pub fn run_verify_attestation(args: VerifyAttestationArgs) -> anyhow::Result<()> {
    let keys = Keys::load(&args.keys)?;
    let image = registry_ref(&args.reference)?;
    let predicate_type = args
        .predicate_type
        .as_deref()
        .map(berth_trust::intoto::predicate_type_uri)
        .transpose()
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let policy = Policy::attestation(
        keys.public_keys(),
        predicate_type.clone(),
        args.annotations.into_iter().collect(),
    );
    let json = args.json;
    block_on(async move {
        let clients = args.common.clients()?;
        let reg = clients.registry(&image.registry)?;
        let digest = resolve(&reg, &image).await?;
        let report = verify::find_signatures(&reg, &image.repository, &digest, &policy).await?;
        print_signatures(&image, &report, &keys, "attestation", json)?;
        if !report.is_valid() {
            let of_type = predicate_type
                .map(|t| format!(" of type {t}"))
                .unwrap_or_default();
            return Err(NotVerified(format!(
                "no valid attestation{of_type} of {image} ({digest}) by {}",
                key_list(&keys)
            ))
            .into());
        }
        Ok(())
    })
}

/// The digest the reference names, asked once; a missing image is "not found", and a
/// reference by digest must be answered with that digest.
async fn resolve(reg: &berth_client::Registry, image: &ImageRef) -> anyhow::Result<Digest> {
    let desc = berth_client::sign::resolve(reg, &image.repository, &image.reference()).await?;
    Ok(desc.digest)
}

fn key_list(keys: &Keys) -> String {
    keys.0
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_name(f: SignatureFormat) -> &'static str {
    match f {
        SignatureFormat::Bundle => "bundle",
        SignatureFormat::SimpleSigning => "simple-signing",
        SignatureFormat::LegacyAttestation => "legacy-attestation",
    }
}

fn format_title(f: SignatureFormat) -> &'static str {
    match f {
        SignatureFormat::Bundle => "Sigstore bundle (cosign v3)",
        SignatureFormat::SimpleSigning => "simple signing (cosign v2 .sig)",
        SignatureFormat::LegacyAttestation => "DSSE attestation (cosign v2 .att)",
    }
}

/// One line saying who signed what and when.
fn verdict_line(v: &Verdict, keys: &Keys, kind: &str) -> String {
    let mut line = format!(
        "{} signed by {} (fingerprint {}) for {}",
        format_title(v.format),
        keys.name(&v.key_fingerprint),
        v.key_fingerprint,
        v.digest
    );
    if kind == "attestation" {
        line.push_str(&format!(", predicate {}", v.predicate_type));
    }
    if let Some(identity) = &v.identity {
        line.push_str(&format!(", identity {identity}"));
    }
    if !v.annotations.is_empty() {
        let a: Vec<String> = v
            .annotations
            .iter()
            .map(|(k, val)| format!("{k}={val}"))
            .collect();
        line.push_str(&format!(", annotations {}", a.join(",")));
    }
    line.push_str(&format!(
        ", created {}",
        v.created.as_deref().unwrap_or("unknown")
    ));
    line
}

fn check_json(c: &Check, keys: &Keys) -> serde_json::Value {
    let mut v = match &c.outcome {
        Ok(v) => json!({
            "valid": true,
            "format": format_name(v.format),
            "key": keys.name(&v.key_fingerprint),
            "key_fingerprint": v.key_fingerprint,
            "digest": v.digest.to_string(),
            "identity": v.identity,
            "predicate_type": v.predicate_type,
            "annotations": v.annotations,
            "created": v.created,
        }),
        Err(e) => json!({"valid": false, "error": e.to_string()}),
    };
    v["source"] = json!(c.origin.to_string());
    v
}

fn signatures_json(report: &SignatureReport, keys: &Keys) -> serde_json::Value {
    json!({
        "digest": report.digest.to_string(),
        "valid": report.is_valid(),
        "checks": report.checks.iter().map(|c| check_json(c, keys)).collect::<Vec<_>>(),
        "skipped": report.skipped,
    })
}

fn print_signatures(
    image: &ImageRef,
    report: &SignatureReport,
    keys: &Keys,
    kind: &str,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let mut v = signatures_json(report, keys);
        v["reference"] = json!(image.to_string());
        return print_json(&v);
    }
    println!("Verifying {kind}s of {image} ({})", report.digest);
    for c in &report.checks {
        match &c.outcome {
            Ok(v) => println!("valid:   {} [{}]", verdict_line(v, keys, kind), c.origin),
            Err(e) => println!("invalid: {}: {e}", c.origin),
        }
    }
    let valid = report.verdicts().count();
    let skipped = match report.skipped {
        0 => String::new(),
        n => format!("; {n} other artifacts skipped"),
    };
    if report.checks.is_empty() {
        println!("No {kind} found{skipped}.");
    } else {
        println!(
            "{valid} valid {kind}{} of {} found{skipped}.",
            if valid == 1 { "" } else { "s" },
            report.checks.len()
        );
    }
    Ok(())
}

fn signed_text(s: Signed) -> &'static str {
    match (s.itself, s.by_index) {
        (true, true) => "manifest+index",
        (true, false) => "manifest",
        (false, true) => "index",
        (false, false) => "no",
    }
}

fn sbom_text(sbom: Option<&Sbom>, platform: &Digest) -> String {
    let (what, on) = match sbom {
        None => return "none".to_owned(),
        Some(Sbom::Attestation { predicate_type, on }) => {
            (format!("{} attestation", sbom_family(predicate_type)), on)
        }
        Some(Sbom::Referrer {
            artifact_type, on, ..
        }) => (format!("{} referrer", sbom_family(artifact_type)), on),
    };
    if on == platform {
        what
    } else {
        format!("{what} (index)")
    }
}

fn sbom_family(t: &str) -> &'static str {
    if t.contains("spdx") {
        "SPDX"
    } else {
        "CycloneDX"
    }
}

fn sbom_json(sbom: Option<&Sbom>) -> serde_json::Value {
    match sbom {
        None => serde_json::Value::Null,
        Some(Sbom::Attestation { predicate_type, on }) => json!({
            "kind": "attestation", "predicate_type": predicate_type, "on": on.to_string(),
        }),
        Some(Sbom::Referrer {
            artifact_type,
            on,
            manifest,
        }) => json!({
            "kind": "referrer", "artifact_type": artifact_type, "on": on.to_string(),
            "manifest": manifest.to_string(),
        }),
    }
}

fn trust_json(t: Option<&ManifestTrust>, keys: &Keys) -> serde_json::Value {
    match t {
        None => serde_json::Value::Null,
        Some(t) => json!({
            "signatures": signatures_json(&t.signatures, keys),
            "sboms": t.sboms.iter().map(|s| sbom_json(Some(s))).collect::<Vec<_>>(),
        }),
    }
}

fn platform_json(p: &PlatformReport, keys: &Keys) -> serde_json::Value {
    json!({
        "platform": p.platform,
        "digest": p.digest.to_string(),
        "size": p.size,
        "layers": p.layers,
        "blobs_verified": p.blob_failures.is_empty() && p.error.is_none(),
        "blob_failures": p.blob_failures.iter()
            .map(|f| json!({"digest": f.digest.to_string(), "reason": f.reason}))
            .collect::<Vec<_>>(),
        "signed": p.signed.any(),
        "signed_by": signed_text(p.signed),
        "sbom": sbom_json(p.sbom.as_ref()),
        "passed": p.passed(),
        "problems": p.problems(),
        "trust": trust_json(p.trust.as_ref(), keys),
    })
}

fn print_release(
    image: &ImageRef,
    report: &ReleaseReport,
    keys: &Keys,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return print_json(&json!({
            "reference": image.to_string(),
            "digest": report.digest.to_string(),
            "media_type": report.media_type,
            "index": trust_json(report.index.as_ref(), keys),
            "platforms": report.platforms.iter().map(|p| platform_json(p, keys)).collect::<Vec<_>>(),
            "skipped": report.skipped.iter()
                .map(|(d, why)| json!({"digest": d.to_string(), "reason": why}))
                .collect::<Vec<_>>(),
            "passed": report.passed(),
        }));
    }
    let shape = if report.index.is_some() {
        format!("index of {} platforms", report.platforms.len())
    } else {
        "single manifest".to_owned()
    };
    println!("Release check of {image} ({}, {shape})", report.digest);
    if let Some(index) = &report.index {
        for c in &index.signatures.checks {
            match &c.outcome {
                Ok(v) => println!(
                    "index signature valid:   {} [{}]",
                    verdict_line(v, keys, "signature"),
                    c.origin
                ),
                Err(e) => println!("index signature invalid: {}: {e}", c.origin),
            }
        }
    }
    for p in &report.platforms {
        for c in p.trust.iter().flat_map(|t| &t.signatures.checks) {
            if let Err(e) = &c.outcome {
                println!("{} signature invalid: {}: {e}", p.platform, c.origin);
            }
        }
    }
    for (digest, why) in &report.skipped {
        println!("skipped {digest}: not a platform ({why})");
    }
    let width = report
        .platforms
        .iter()
        .map(|p| p.platform.len())
        .max()
        .unwrap_or(0)
        .max("PLATFORM".len());
    println!(
        "{:width$}  {:>10}  {:>6}  {:14}  {:26}  RESULT",
        "PLATFORM", "SIZE", "LAYERS", "SIGNED", "SBOM"
    );
    for p in &report.platforms {
        let problems = p.problems();
        let result = if problems.is_empty() {
            "ok".to_owned()
        } else {
            format!("FAILED: {}", problems.join("; "))
        };
        println!(
            "{:width$}  {:>10}  {:>6}  {:14}  {:26}  {result}",
            p.platform,
            human_bytes(p.size),
            p.layers,
            signed_text(p.signed),
            sbom_text(p.sbom.as_ref(), &p.digest),
        );
    }
    let failed = report.platforms.iter().filter(|p| !p.passed()).count();
    if report.passed() {
        println!(
            "Verdict: PASSED ({} platform{} checked)",
            report.platforms.len(),
            if report.platforms.len() == 1 { "" } else { "s" }
        );
    } else if report.platforms.is_empty() {
        println!("Verdict: FAILED (no platform to check)");
    } else {
        println!(
            "Verdict: FAILED ({failed} of {} platforms failed)",
            report.platforms.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_parse_as_key_value() {
        assert_eq!(
            parse_annotation("env=prod=1").unwrap(),
            ("env".to_owned(), "prod=1".to_owned())
        );
        assert_eq!(
            parse_annotation("empty=").unwrap(),
            ("empty".to_owned(), String::new())
        );
        assert!(parse_annotation("=v").is_err());
        assert!(parse_annotation("novalue").is_err());
    }

    #[test]
    fn sbom_and_signed_columns() {
        let platform = Digest::sha256(b"platform");
        let index = Digest::sha256(b"index");
        assert_eq!(sbom_text(None, &platform), "none");
        let own = Sbom::Attestation {
            predicate_type: "https://spdx.dev/Document".into(),
            on: platform.clone(),
        };
        assert_eq!(sbom_text(Some(&own), &platform), "SPDX attestation");
        let inherited = Sbom::Referrer {
            artifact_type: "application/vnd.cyclonedx+json".into(),
            on: index,
            manifest: Digest::sha256(b"sbom"),
        };
        assert_eq!(
            sbom_text(Some(&inherited), &platform),
            "CycloneDX referrer (index)"
        );
        assert_eq!(
            signed_text(Signed {
                itself: false,
                by_index: true
            }),
            "index"
        );
        assert_eq!(signed_text(Signed::default()), "no");
    }
}
