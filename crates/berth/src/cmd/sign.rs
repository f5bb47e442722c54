//! `berth sign` and `berth attest`: sign an image, or attach a signed attestation, in
//! cosign's formats. The work is in `berth_client::sign`; this module reads the key and
//! the predicate, and prints what was pushed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use berth_client::sign::{sign_image, Claim, Format, SignOptions, Signed};
use berth_trust::KeySigner;
use clap::Args;

use crate::cmd::{block_on, print_json, registry_ref, Common};

/// Largest predicate file `attest` reads: an SBOM of a large image is a few MiB, and the
/// registry refuses manifests and small blobs far beyond that anyway.
const MAX_PREDICATE_BYTES: u64 = 64 << 20;

/// Keyless signing is not offered; the help of both commands says why.
const KEYLESS_NOTE: &str =
    "Keyless signing (a Fulcio certificate and a Rekor transparency log entry instead of a
key) needs the public Sigstore services and is not supported: sign with a key.";

/// Sign an image with a key, in cosign's formats.
///
/// The reference is resolved once to its manifest digest, and that digest is signed (for
/// an index the index, and with --recursive every child too). By default the signature is
/// a cosign v3 Sigstore bundle stored as an OCI 1.1 referrer (the referrers tag schema on
/// registries without the referrers API); --legacy writes cosign v2's simple signing in
/// the sha256-<hex>.sig tag instead, keeping earlier signatures.
#[derive(Args, Debug)]
#[command(after_help = format!("The key is cosign's encrypted key (`berth key generate`, `cosign generate-key-pair`)
with its password in COSIGN_PASSWORD or asked on the terminal, or an unencrypted PKCS#8
or EC PEM key (ECDSA P-256/P-384, Ed25519).

{KEYLESS_NOTE}

cosign verifies these with `cosign verify --key cosign.pub --insecure-ignore-tlog IMAGE`
(they have no transparency log entry): cosign v3 both formats, cosign v2 the --legacy one.

Examples:
  berth sign registry.example.com/team/app:1.2.3 --key cosign.key
  berth sign registry.example.com/team/app@sha256:3f1c… --key cosign.key --recursive
  berth sign localhost:5000/app:1 --key cosign.key -a build=4711 -a by=ci --json
  COSIGN_PASSWORD=\"$PW\" berth sign localhost:5000/app:1 --key cosign.key --legacy"))]
pub struct SignArgs {
    /// The image to sign: REGISTRY/NAME[:TAG][@DIGEST].
    image: String,
    #[command(flatten)]
    how: How,
    /// Add this annotation to the signed payload, KEY=VALUE; repeat.
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// Attach a signed attestation (an in-toto statement) to an image, in cosign's formats.
///
/// The predicate file's JSON becomes the statement's predicate, of the type --type names.
/// The statement is signed like `berth sign` signs: a Sigstore bundle referrer by
/// default, or with --legacy a DSSE envelope layer of cosign v2's sha256-<hex>.att tag.
#[derive(Args, Debug)]
#[command(after_help = format!("--type takes slsaprovenance (v0.2), slsaprovenance1, spdxjson, cyclonedx, link, vuln,
openvex, custom, or any predicate type URI.

{KEYLESS_NOTE}

cosign verifies these with `cosign verify-attestation --key cosign.pub --insecure-ignore-tlog
--type TYPE IMAGE`.

Examples:
  berth attest registry.example.com/team/app:1.2.3 --key cosign.key --predicate sbom.spdx.json --type spdxjson
  berth attest localhost:5000/app:1 --key cosign.key --predicate provenance.json --type slsaprovenance --recursive
  berth attest localhost:5000/app:1 --key cosign.key --predicate vex.json --type https://openvex.dev/ns --legacy"))]
pub struct AttestArgs {
    /// The image to attest: REGISTRY/NAME[:TAG][@DIGEST].
    image: String,
    /// The predicate: a JSON file (an SPDX or CycloneDX document, SLSA provenance…).
    #[arg(long, value_name = "FILE")]
    predicate: PathBuf,
    /// The predicate type: a name (see below) or a URI.
    #[arg(long = "type", value_name = "TYPE", default_value = "custom")]
    predicate_type: String,
    #[command(flatten)]
    how: How,
    #[command(flatten)]
    common: Common,
}

/// The options `sign` and `attest` share.
#[derive(Args, Debug)]
struct How {
    /// The private key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// For an index, sign every platform's manifest too.
    #[arg(long)]
    recursive: bool,
    /// Write cosign v2's layout (a layer of the sha256-<hex>.sig or .att tag) instead of
    /// a cosign v3 bundle referrer.
    #[arg(long)]
    legacy: bool,
    /// Print what was pushed as JSON.
    #[arg(long)]
    json: bool,
}

/// Parses `KEY=VALUE` annotations (each as `berth verify` reads them).
pub fn parse_annotations(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            super::verify::parse_annotation(kv).map_err(|e| anyhow::anyhow!("annotation {e}"))
        })
        .collect()
}

/// Reads a predicate file as JSON.
pub fn read_predicate(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_PREDICATE_BYTES {
        bail!(
            "{} is {len} bytes; predicates are limited to {MAX_PREDICATE_BYTES} bytes",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a JSON document", path.display()))
}

pub fn run_sign(args: SignArgs) -> anyhow::Result<()> {
    let annotations = parse_annotations(&args.annotations)?;
    run(
        &args.image,
        &args.how,
        &args.common,
        Claim::Signature,
        annotations,
    )
}

pub fn run_attest(args: AttestArgs) -> anyhow::Result<()> {
    let predicate_type = berth_trust::intoto::predicate_type_uri(&args.predicate_type)
        .map_err(|e| berth_client::ClientError::Usage(e.to_string()))?;
    let predicate = read_predicate(&args.predicate)?;
    let claim = Claim::Attestation {
        predicate_type,
        predicate,
    };
    run(&args.image, &args.how, &args.common, claim, BTreeMap::new())
}

fn run(
    image: &str,
    how: &How,
    common: &Common,
    claim: Claim,
    annotations: BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let image = registry_ref(image)?;
    // The key (and its password) first: nothing is pushed if it cannot be read.
    let signer = KeySigner::new(crate::cmd::key::read_private_key(&how.key)?);
    let opts = SignOptions {
        format: if how.legacy {
            Format::Legacy
        } else {
            Format::Bundle
        },
        recursive: how.recursive,
        annotations,
        created: None,
    };
    let clients = common.clients()?;
    let reg = clients.registry(&image.registry)?;
    let signed = block_on(async { Ok(sign_image(&reg, &image, &signer, &claim, &opts).await?) })?;
    let fingerprint = signer.public_key().fingerprint();
    if how.json {
        return print_json(&serde_json::json!({
            "image": image.name(),
            "key_fingerprint": fingerprint,
            "signed": signed,
        }));
    }
    for s in &signed {
        println!("{}", describe(&image.name(), s));
    }
    if !common.quiet {
        eprintln!("key fingerprint (sha256 of the public key): {fingerprint}");
    }
    Ok(())
}

/// One line about a pushed signature.
fn describe(name: &str, s: &Signed) -> String {
    let what = if s.predicate_type == berth_trust::intoto::COSIGN_SIGN_PREDICATE {
        "signed".to_owned()
    } else {
        format!("attested ({})", s.predicate_type)
    };
    match (&s.format, &s.tag) {
        (Format::Legacy, Some(tag)) => format!(
            "{what} {name}@{}: {tag} ({} layers)",
            s.subject,
            s.layers.unwrap_or(1)
        ),
        _ => format!(
            "{what} {name}@{}: bundle referrer {}",
            s.subject, s.artifact
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_must_be_key_value() {
        let a = parse_annotations(&["a=1".into(), "b=x=y".into(), "c=".into()]).unwrap();
        assert_eq!(a["a"], "1");
        assert_eq!(a["b"], "x=y");
        assert_eq!(a["c"], "");
        assert!(parse_annotations(&["novalue".into()]).is_err());
        assert!(parse_annotations(&["=v".into()]).is_err());
    }

    #[test]
    fn predicates_are_json_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("p.json");
        std::fs::write(&good, r#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
        assert_eq!(read_predicate(&good).unwrap()["spdxVersion"], "SPDX-2.3");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "not json").unwrap();
        let e = read_predicate(&bad).unwrap_err().to_string();
        assert!(e.contains("not a JSON document"), "{e}");
    }

    #[test]
    fn lines_say_what_was_pushed() {
        let s = Signed {
            subject: berth_oci::Digest::sha256(b"i"),
            subject_media_type: berth_oci::media_types::OCI_MANIFEST.into(),
            format: Format::Legacy,
            predicate_type: berth_trust::intoto::COSIGN_SIGN_PREDICATE.into(),
            artifact: berth_oci::Digest::sha256(b"s"),
            tag: Some("sha256-abc.sig".into()),
            layers: Some(2),
        };
        let line = describe("h/app", &s);
        assert!(line.starts_with("signed h/app@sha256:"), "{line}");
        assert!(line.ends_with("sha256-abc.sig (2 layers)"), "{line}");
        let b = Signed {
            format: Format::Bundle,
            predicate_type: "https://spdx.dev/Document".into(),
            tag: None,
            layers: None,
            ..s
        };
        let line = describe("h/app", &b);
        assert!(
            line.starts_with("attested (https://spdx.dev/Document)"),
            "{line}"
        );
        assert!(line.contains("bundle referrer sha256:"), "{line}");
    }
}
