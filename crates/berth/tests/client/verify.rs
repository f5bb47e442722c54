//! `berth verify`, `verify-attestation` and `verify --release` as a customer runs them:
//! signatures made here with `berth_trust` and pushed with `berth_client`, checked by the
//! real binary, with its output and exit codes (0 valid, 7 nothing valid, 3 not found,
//! 2 usage).

use std::collections::BTreeMap;
use std::path::Path;

use berth_client::image::Manifest;
use berth_client::{ClientOptions, Clients};
use berth_oci::{media_types as mt, Descriptor, Digest, Reference, RepoName};
use berth_trust::bundle::Bundle;
use berth_trust::intoto::{predicate_type_uri, Statement, COSIGN_SIGN_PREDICATE};
use berth_trust::oci::{
    append_legacy_layer, bundle_referrer, legacy_tag, Artifact, LegacyKind, LegacyLayer,
    SubjectDescriptor,
};
use berth_trust::simple_signing::{self, Payload};
use berth_trust::{KeySigner, PrivateKey};

use super::{berth, ok, Registry};

const CREATED: &str = "2026-12-01T10:11:12Z";

fn client(reg: &Registry) -> berth_client::Registry {
    Clients::new(ClientOptions {
        docker_config: Some("/nonexistent/config.json".into()),
        ..ClientOptions::default()
    })
    .unwrap()
    .registry(&reg.host)
    .unwrap()
}

/// Pushes an artifact's blobs, then its manifest by digest or under `tag`.
fn push(reg: &Registry, repo: &str, artifact: &Artifact, tag: Option<&str>) {
    let c = client(reg);
    let repo = RepoName::parse(repo).unwrap();
    let m =
        Manifest::from_bytes(artifact.manifest.clone().into(), Some(artifact.media_type)).unwrap();
    let reference = match tag {
        Some(t) => Reference::parse(t).unwrap(),
        None => Reference::Digest(m.digest.clone()),
    };
    reg.rt.block_on(async {
        for blob in &artifact.blobs {
            let desc = Descriptor {
                media_type: blob.media_type.clone(),
                digest: blob.digest.clone(),
                size: blob.bytes.len() as u64,
                urls: vec![],
                annotations: Default::default(),
                platform: None,
                artifact_type: None,
            };
            c.put_blob_bytes(&repo, &desc, blob.bytes.clone().into())
                .await
                .unwrap();
        }
        c.put_manifest(&repo, &reference, &m).await.unwrap();
    });
}

/// The subject descriptor of a manifest in the registry.
fn subject(reg: &Registry, repo: &str, digest: &Digest) -> SubjectDescriptor {
    let c = client(reg);
    let d = reg
        .rt
        .block_on(c.head_manifest(
            &RepoName::parse(repo).unwrap(),
            &Reference::Digest(digest.clone()),
        ))
        .unwrap()
        .unwrap();
    SubjectDescriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
    }
}

fn sign_bundle(
    reg: &Registry,
    repo: &str,
    signer: &KeySigner,
    digest: &Digest,
    annotations: &BTreeMap<String, String>,
) {
    let statement = Statement::cosign_signature(None, digest, annotations);
    let bundle = Bundle::sign_statement(signer, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    let artifact = bundle_referrer(
        bundle,
        &subject(reg, repo, digest),
        COSIGN_SIGN_PREDICATE,
        CREATED,
    )
    .unwrap();
    push(reg, repo, &artifact, None);
}

fn sign_legacy(reg: &Registry, repo: &str, signer: &KeySigner, digest: &Digest) {
    let payload = Payload::new(&format!("{}/{repo}", reg.host), digest, &BTreeMap::new());
    let signed = simple_signing::sign(signer, &payload).unwrap();
    let artifact = append_legacy_layer(None, LegacyLayer::signature(&signed)).unwrap();
    push(
        reg,
        repo,
        &artifact,
        Some(&legacy_tag(digest, LegacyKind::Signature)),
    );
}

fn attest_sbom(reg: &Registry, repo: &str, signer: &KeySigner, digest: &Digest) {
    let spdx = predicate_type_uri("spdxjson").unwrap();
    let statement = Statement::new(
        None,
        digest,
        &spdx,
        serde_json::json!({"spdxVersion": "SPDX-2.3"}),
        &BTreeMap::new(),
    );
    let bundle = Bundle::sign_statement(signer, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    let artifact = bundle_referrer(bundle, &subject(reg, repo, digest), &spdx, CREATED).unwrap();
    push(reg, repo, &artifact, None);
}

/// A key pair: the signer, and its public key written to `dir/name`.
fn key(dir: &Path, name: &str) -> KeySigner {
    let private = PrivateKey::generate_p256().unwrap();
    std::fs::write(dir.join(name), private.public_key().to_pem()).unwrap();
    KeySigner::new(private)
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn verify_prints_who_what_when_and_exits_by_its_verdict() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = d;
    let h = &reg.host;
    let ours = key(d, "cosign.pub");
    let _other = key(d, "other.pub");
    let digest = reg.push_image("app", "1.0", "amd64");
    let prod = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    sign_bundle(&reg, "app", &ours, &digest, &prod);
    sign_legacy(&reg, "app", &ours, &digest);
    let image = format!("{h}/app:1.0");
    let pubkey = d.join("cosign.pub");
    let pubkey = pubkey.to_str().unwrap();
    let other = d.join("other.pub");
    let other = other.to_str().unwrap();
    let fingerprint = ours.public_key().fingerprint();

    let out = ok(&["verify", "--key", pubkey, &image], c);
    assert!(out.contains(&digest.to_string()), "{out}");
    assert!(out.contains(&fingerprint), "{out}");
    assert!(out.contains("Sigstore bundle (cosign v3)"), "{out}");
    assert!(out.contains("simple signing (cosign v2 .sig)"), "{out}");
    assert!(out.contains(&format!("created {CREATED}")), "{out}");
    assert!(out.contains("2 valid signatures of 2 found"), "{out}");

    // The JSON report, and the annotation requirement.
    let json: serde_json::Value = serde_json::from_str(&ok(
        &[
            "verify", "--key", pubkey, "-a", "env=prod", "--json", &image,
        ],
        c,
    ))
    .unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["digest"], digest.to_string());
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{json}");
    // Only the bundle carries the annotation (the legacy payload was signed without it).
    let valid: Vec<_> = checks.iter().filter(|c| c["valid"] == true).collect();
    assert_eq!(valid.len(), 1, "{json}");
    assert_eq!(valid[0]["format"], "bundle");
    assert_eq!(valid[0]["key_fingerprint"], fingerprint);
    assert_eq!(valid[0]["created"], CREATED);
    assert_eq!(valid[0]["annotations"]["env"], "prod");

    let out = berth(&["verify", "--key", pubkey, "-a", "env=staging", &image], c);
    assert_eq!(code(&out), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no valid signature"), "{stderr}");

    // The wrong key: every signature is listed with its reason, exit code 7.
    let out = berth(&["verify", "--key", other, &image], c);
    assert_eq!(code(&out), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("invalid: ").count(), 2, "{stdout}");
    assert!(stdout.contains("signed by another key"), "{stdout}");
    // Either key will do.
    ok(&["verify", "--key", other, "--key", pubkey, &image], c);

    // Not found, unsigned, and a private key given by mistake.
    let out = berth(&["verify", "--key", pubkey, &format!("{h}/app:missing")], c);
    assert_eq!(code(&out), Some(3));
    reg.push_image("app", "unsigned", "arm64");
    let out = berth(
        &["verify", "--key", pubkey, &format!("{h}/app:unsigned")],
        c,
    );
    assert_eq!(code(&out), Some(7));
    assert!(String::from_utf8_lossy(&out.stdout).contains("No signature found"));
    let private = d.join("cosign.key");
    std::fs::write(
        &private,
        PrivateKey::generate_p256()
            .unwrap()
            .to_pkcs8_pem()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let out = berth(&["verify", "--key", private.to_str().unwrap(), &image], c);
    assert_eq!(code(&out), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("private key"));

    // Attestations: the SBOM by type, with its predicate type printed.
    attest_sbom(&reg, "app", &ours, &digest);
    let out = ok(
        &[
            "verify-attestation",
            "--key",
            pubkey,
            "--type",
            "spdxjson",
            &image,
        ],
        c,
    );
    assert!(out.contains("predicate https://spdx.dev/Document"), "{out}");
    assert!(out.contains("1 valid attestation of 1 found"), "{out}");
    let out = berth(
        &[
            "verify-attestation",
            "--key",
            pubkey,
            "--type",
            "cyclonedx",
            &image,
        ],
        c,
    );
    assert_eq!(code(&out), Some(7));
    // The attestation is not a signature: verify still counts two.
    let out = ok(&["verify", "--key", pubkey, &image], c);
    assert!(
        out.contains("2 valid signatures of 2 found; 1 other artifacts skipped"),
        "{out}"
    );
}

/// Pushes an index of `images` (digest, arch) under `repo:tag`; returns its digest.
fn push_index(reg: &Registry, repo: &str, tag: &str, images: &[(&Digest, &str)]) -> Digest {
    let entries: Vec<_> = images
        .iter()
        .map(|(d, arch)| {
            let s = subject(reg, repo, d);
            serde_json::json!({
                "mediaType": s.media_type, "digest": s.digest, "size": s.size,
                "platform": {"os": "linux", "architecture": arch},
            })
        })
        .collect();
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": entries,
    }))
    .unwrap();
    let m = Manifest::from_bytes(body.into(), Some(mt::OCI_INDEX)).unwrap();
    let c = client(reg);
    reg.rt
        .block_on(c.put_manifest(
            &RepoName::parse(repo).unwrap(),
            &Reference::parse(tag).unwrap(),
            &m,
        ))
        .unwrap();
    m.digest
}

#[test]
fn verify_release_prints_one_line_per_platform_and_a_verdict() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = &reg.host;
    let ours = key(d, "cosign.pub");
    let pubkey = d.join("cosign.pub");
    let pubkey = pubkey.to_str().unwrap();
    let amd = reg.push_image("rel", "amd", "amd64");
    let arm = reg.push_image("rel", "arm", "arm64");
    let index = push_index(&reg, "rel", "1.0", &[(&amd, "amd64"), (&arm, "arm64")]);
    let image = format!("{h}/rel:1.0");

    // Unsigned, no SBOM: both platforms fail, exit code 7.
    let out = berth(&["verify", "--release", "--key", pubkey, &image], d);
    assert_eq!(code(&out), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Verdict: FAILED (2 of 2 platforms failed)"),
        "{stdout}"
    );
    assert!(stdout.contains("no valid signature; no SBOM"), "{stdout}");

    // The index signed with an SBOM attestation: every platform passes.
    sign_bundle(&reg, "rel", &ours, &index, &BTreeMap::new());
    attest_sbom(&reg, "rel", &ours, &index);
    let out = ok(&["verify", "--release", "--key", pubkey, &image], d);
    let lines: Vec<&str> = out.lines().collect();
    let platform_line = |p: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no line for {p} in {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let amd_line = platform_line("linux/amd64");
    assert!(
        amd_line.ends_with(" 1 index SPDX attestation (index) ok"),
        "{amd_line}"
    );
    assert!(platform_line("linux/arm64").ends_with(" ok"), "{out}");
    assert!(
        out.contains("Verdict: PASSED (2 platforms checked)"),
        "{out}"
    );

    let json: serde_json::Value = serde_json::from_str(&ok(
        &["verify", "--release", "--json", "--key", pubkey, &image],
        d,
    ))
    .unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["digest"], index.to_string());
    let platforms = json["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    assert_eq!(platforms[0]["platform"], "linux/amd64");
    assert_eq!(platforms[0]["digest"], amd.to_string());
    assert_eq!(platforms[0]["layers"], 1);
    assert_eq!(platforms[0]["blobs_verified"], true);
    assert_eq!(platforms[0]["signed_by"], "index");
    assert_eq!(platforms[0]["sbom"]["kind"], "attestation");

    // Another key: the same registry content fails.
    let _stranger = key(d, "stranger.pub");
    let stranger = d.join("stranger.pub");
    let out = berth(
        &[
            "verify",
            "--release",
            "--key",
            stranger.to_str().unwrap(),
            &image,
        ],
        d,
    );
    assert_eq!(code(&out), Some(7));
}

#[test]
fn forged_signatures_fail_with_their_reason_and_exit_code_7() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = &reg.host;
    let ours = key(d, "cosign.pub");
    let pubkey = d.join("cosign.pub");
    let pubkey = pubkey.to_str().unwrap();
    let none = BTreeMap::new();

    // A tampered payload: it names this image, the signature is of another payload.
    let tampered = reg.push_image("forged", "tampered", "amd64");
    let mut signed = simple_signing::sign(
        &ours,
        &Payload::new("x/y", &Digest::sha256(b"other"), &none),
    )
    .unwrap();
    signed.payload = Payload::new("x/y", &tampered, &none).to_bytes().unwrap();
    let artifact = append_legacy_layer(None, LegacyLayer::signature(&signed)).unwrap();
    push(
        &reg,
        "forged",
        &artifact,
        Some(&legacy_tag(&tampered, LegacyKind::Signature)),
    );

    // A valid signature of another digest, attached as a referrer of this one.
    let elsewhere = reg.push_image("forged", "elsewhere", "arm64");
    let statement = Statement::cosign_signature(None, &Digest::sha256(b"other"), &none);
    let bundle = Bundle::sign_statement(&ours, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    let artifact = bundle_referrer(
        bundle,
        &subject(&reg, "forged", &elsewhere),
        COSIGN_SIGN_PREDICATE,
        CREATED,
    )
    .unwrap();
    push(&reg, "forged", &artifact, None);

    // A truncated bundle.
    let truncated = reg.push_image("forged", "truncated", "s390x");
    let statement = Statement::cosign_signature(None, &truncated, &none);
    let mut bundle = Bundle::sign_statement(&ours, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    bundle.truncate(bundle.len() / 3);
    let artifact = bundle_referrer(
        bundle,
        &subject(&reg, "forged", &truncated),
        COSIGN_SIGN_PREDICATE,
        CREATED,
    )
    .unwrap();
    push(&reg, "forged", &artifact, None);

    for (tag, reason) in [
        ("tampered", "the payload was altered".to_string()),
        (
            "elsewhere",
            format!(
                "the signature is for {}, not for {elsewhere}",
                Digest::sha256(b"other")
            ),
        ),
        ("truncated", "malformed or truncated bundle".to_string()),
    ] {
        let out = berth(
            &["verify", "--key", pubkey, &format!("{h}/forged:{tag}")],
            d,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), Some(7), "{tag}: {stdout}{stderr}");
        assert!(
            stdout.contains("invalid: ") && stdout.contains(&reason),
            "{tag}: {stdout}"
        );
        assert!(stderr.contains("no valid signature"), "{tag}: {stderr}");
        assert!(!stderr.contains("panicked"), "{tag}: {stderr}");
    }
}
