//! `berth_client::verify` against real registries: signatures and attestations made with
//! `berth_trust` and with the independent `sigstore` crate, pushed as cosign v3 bundle
//! referrers and cosign v2 `.sig`/`.att` tags, found and checked on Berth (referrers API)
//! and on CNCF Distribution (no referrers API: the tag schema). Each kind of forgery is a
//! typed failure of its own candidate, never a panic; and the release check pulls every
//! blob cold, so a blob altered on the registry's disk fails it.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_client::image::Manifest;
use berth_client::verify::{
    check_release, find_signatures, CheckError, Origin, Policy, Sbom, Signed,
};
use berth_client::Registry;
use berth_oci::{Descriptor, Digest, Reference, RepoName};
use berth_trust::bundle::{Bundle, VerificationMaterial};
use berth_trust::dsse::Envelope;
use berth_trust::intoto::{predicate_type_uri, Statement, COSIGN_SIGN_PREDICATE, PAYLOAD_TYPE};
use berth_trust::oci::{
    append_legacy_layer, bundle_referrer, legacy_tag, Artifact, LegacyKind, LegacyLayer,
    SubjectDescriptor,
};
use berth_trust::simple_signing::{self, Payload, SignedPayload};
use berth_trust::{KeySigner, PrivateKey, PublicKey, SignatureFormat, Signer, VerifyError};
use bytes::Bytes;

use crate::fixtures::*;

const CREATED: &str = "2026-12-01T10:11:12Z";

fn no_annotations() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn prod() -> BTreeMap<String, String> {
    BTreeMap::from([("env".to_string(), "prod".to_string())])
}

fn signer() -> KeySigner {
    KeySigner::new(PrivateKey::generate_p256().unwrap())
}

fn subject(m: &Manifest) -> SubjectDescriptor {
    SubjectDescriptor {
        media_type: m.media_type.clone(),
        digest: m.digest.clone(),
        size: m.bytes.len() as u64,
    }
}

/// A cosign v3 signature of `signed` (usually the subject's digest) as a referrer of
/// `subject`.
fn bundle_signature(
    signer: &dyn Signer,
    subject: &SubjectDescriptor,
    signed: &Digest,
    annotations: &BTreeMap<String, String>,
) -> Artifact {
    let statement = Statement::cosign_signature(None, signed, annotations);
    let bundle = Bundle::sign_statement(signer, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    bundle_referrer(bundle, subject, COSIGN_SIGN_PREDICATE, CREATED).unwrap()
}

/// A cosign v3 attestation of `predicate` ("spdxjson", ...) as a referrer of `subject`.
fn bundle_attestation(
    signer: &dyn Signer,
    subject: &SubjectDescriptor,
    predicate: &str,
) -> Artifact {
    let predicate_type = predicate_type_uri(predicate).unwrap();
    let statement = Statement::new(
        None,
        &subject.digest,
        &predicate_type,
        serde_json::json!({"spdxVersion": "SPDX-2.3", "name": "app"}),
        &no_annotations(),
    );
    let bundle = Bundle::sign_statement(signer, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    bundle_referrer(bundle, subject, &predicate_type, CREATED).unwrap()
}

/// A cosign v2 simple-signing signature layer of `digest`.
fn simple_signature(
    signer: &dyn Signer,
    digest: &Digest,
    annotations: &BTreeMap<String, String>,
) -> SignedPayload {
    let payload = Payload::new("registry.test/app", digest, annotations);
    simple_signing::sign(signer, &payload).unwrap()
}

/// Pushes an artifact's blobs, then its manifest by digest or under `tag`.
async fn push(reg: &Registry, repo: &str, artifact: &Artifact, tag: Option<&str>) {
    let repo = RepoName::parse(repo).unwrap();
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
        reg.put_blob_bytes(&repo, &desc, Bytes::from(blob.bytes.clone()))
            .await
            .unwrap();
    }
    let m = Manifest::from_bytes(
        Bytes::from(artifact.manifest.clone()),
        Some(artifact.media_type),
    )
    .unwrap();
    let reference = match tag {
        Some(t) => Reference::parse(t).unwrap(),
        None => Reference::Digest(m.digest.clone()),
    };
    reg.put_manifest(&repo, &reference, &m).await.unwrap();
}

/// Appends a layer to the `.sig`/`.att` manifest of `digest` (creating it) and pushes it.
async fn push_legacy(
    reg: &Registry,
    repo: &str,
    digest: &Digest,
    kind: LegacyKind,
    layer: LegacyLayer,
) {
    let tag = legacy_tag(digest, kind);
    let repo_name = RepoName::parse(repo).unwrap();
    let existing = match reg
        .head_manifest(&repo_name, &Reference::parse(&tag).unwrap())
        .await
        .unwrap()
    {
        Some(d) => Some(
            reg.get_manifest(&repo_name, &Reference::Digest(d.digest))
                .await
                .unwrap()
                .bytes,
        ),
        None => None,
    };
    let artifact = append_legacy_layer(existing.as_deref(), layer).unwrap();
    push(reg, repo, &artifact, Some(&tag)).await;
}

async fn signatures_of_an_image_on(reg: &Registry) {
    let repo = "team/app";
    let img = image(41, 1, 500, "amd64", false);
    push_image(reg, repo, &img, Some("1.0")).await;
    let name = RepoName::parse(repo).unwrap();
    let digest = img.manifest.digest.clone();
    let ours = signer();
    let other = signer();

    push(
        reg,
        repo,
        &bundle_signature(&ours, &subject(&img.manifest), &digest, &prod()),
        None,
    )
    .await;
    push_legacy(
        reg,
        repo,
        &digest,
        LegacyKind::Signature,
        LegacyLayer::signature(&simple_signature(&ours, &digest, &prod())),
    )
    .await;
    // An SBOM attestation beside them: not a signature.
    push(
        reg,
        repo,
        &bundle_attestation(&ours, &subject(&img.manifest), "spdxjson"),
        None,
    )
    .await;

    let key = ours.public_key().clone();
    let report = find_signatures(
        reg,
        &name,
        &digest,
        &Policy::signature(vec![key.clone()], prod()),
    )
    .await
    .unwrap();
    assert!(report.is_valid());
    assert_eq!(report.checks.len(), 2, "{report:#?}");
    assert_eq!(report.skipped, 1, "the SBOM attestation is not a signature");
    let mut formats: Vec<_> = report.verdicts().map(|v| v.format).collect();
    formats.sort_by_key(|f| format!("{f:?}"));
    assert_eq!(
        formats,
        [SignatureFormat::Bundle, SignatureFormat::SimpleSigning]
    );
    for v in report.verdicts() {
        assert_eq!(v.digest, digest);
        assert_eq!(v.key_fingerprint, key.fingerprint());
        assert_eq!(v.annotations.get("env").map(String::as_str), Some("prod"));
    }
    let bundle = report
        .verdicts()
        .find(|v| v.format == SignatureFormat::Bundle)
        .unwrap();
    assert_eq!(bundle.created.as_deref(), Some(CREATED));

    // Another key: both candidates found, neither valid, and each says why.
    let wrong = Policy::signature(vec![other.public_key().clone()], no_annotations());
    let report = find_signatures(reg, &name, &digest, &wrong).await.unwrap();
    assert!(!report.is_valid());
    assert_eq!(report.checks.len(), 2);
    for c in &report.checks {
        match (&c.origin, &c.outcome) {
            (Origin::Referrer { .. }, Err(CheckError::Verify(VerifyError::WrongKey { .. }))) => {}
            (Origin::LegacyTag { .. }, Err(CheckError::Verify(VerifyError::BadSignature))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Any one of several keys will do.
    let either = Policy::signature(
        vec![other.public_key().clone(), key.clone()],
        no_annotations(),
    );
    assert_eq!(
        find_signatures(reg, &name, &digest, &either)
            .await
            .unwrap()
            .verdicts()
            .count(),
        2
    );
    // A required annotation the signatures lack.
    let staging = BTreeMap::from([("env".to_string(), "staging".to_string())]);
    let report = find_signatures(
        reg,
        &name,
        &digest,
        &Policy::signature(vec![key.clone()], staging),
    )
    .await
    .unwrap();
    assert!(!report.is_valid());
    assert!(report.checks.iter().all(|c| matches!(
        c.outcome,
        Err(CheckError::Verify(VerifyError::AnnotationMismatch { .. }))
    )));

    // Attestations: the SBOM by type, and nothing of another type.
    let spdx = predicate_type_uri("spdxjson").unwrap();
    let report = find_signatures(
        reg,
        &name,
        &digest,
        &Policy::attestation(vec![key.clone()], Some(spdx.clone()), no_annotations()),
    )
    .await
    .unwrap();
    assert_eq!(
        report
            .verdicts()
            .map(|v| v.predicate_type.clone())
            .collect::<Vec<_>>(),
        [spdx]
    );
    let report = find_signatures(
        reg,
        &name,
        &digest,
        &Policy::attestation(
            vec![key.clone()],
            Some(predicate_type_uri("cyclonedx").unwrap()),
            no_annotations(),
        ),
    )
    .await
    .unwrap();
    assert!(!report.is_valid());
    assert!(report.checks.is_empty());
}

#[tokio::test]
async fn bundle_and_legacy_signatures_verify_on_berth() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    signatures_of_an_image_on(&reg).await;
}

#[tokio::test]
async fn bundle_and_legacy_signatures_verify_on_distribution() {
    let dist = TestDistribution::start();
    let reg = clients().registry(&dist.host()).unwrap();
    signatures_of_an_image_on(&reg).await;
}

#[tokio::test]
async fn forgeries_fail_each_with_its_reason() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let repo = "forged";
    let name = RepoName::parse(repo).unwrap();
    let ours = signer();
    let key = ours.public_key().clone();
    let policy = Policy::signature(vec![key], no_annotations());
    let outcome_of = |report: berth_client::verify::SignatureReport| {
        assert!(!report.is_valid());
        assert_eq!(report.checks.len(), 1, "{report:#?}");
        report.checks.into_iter().next().unwrap().outcome
    };

    // A tampered payload: the payload says another image, the signature is the original's.
    let img = image(51, 1, 100, "amd64", false);
    push_image(&reg, repo, &img, Some("tampered")).await;
    let d = img.manifest.digest.clone();
    let mut signed = simple_signature(&ours, &Digest::sha256(b"something else"), &no_annotations());
    signed.payload = Payload::new("registry.test/app", &d, &no_annotations())
        .to_bytes()
        .unwrap();
    push_legacy(
        &reg,
        repo,
        &d,
        LegacyKind::Signature,
        LegacyLayer::signature(&signed),
    )
    .await;
    let outcome = outcome_of(find_signatures(&reg, &name, &d, &policy).await.unwrap());
    assert!(
        matches!(outcome, Err(CheckError::Verify(VerifyError::BadSignature))),
        "{outcome:?}"
    );

    // A valid signature of another digest, attached to this image.
    let img = image(52, 1, 100, "amd64", false);
    push_image(&reg, repo, &img, Some("elsewhere")).await;
    let d = img.manifest.digest.clone();
    let foreign = Digest::sha256(b"another image");
    push(
        &reg,
        repo,
        &bundle_signature(&ours, &subject(&img.manifest), &foreign, &no_annotations()),
        None,
    )
    .await;
    let outcome = outcome_of(find_signatures(&reg, &name, &d, &policy).await.unwrap());
    match outcome {
        Err(CheckError::Verify(VerifyError::DigestMismatch { expected, signed })) => {
            assert_eq!(expected, d);
            assert_eq!(signed, foreign.to_string());
        }
        other => panic!("{other:?}"),
    }

    // A truncated bundle, pushed with its (truncated) digest so the bytes arrive intact.
    let img = image(53, 1, 100, "amd64", false);
    push_image(&reg, repo, &img, Some("truncated")).await;
    let d = img.manifest.digest.clone();
    let statement = Statement::cosign_signature(None, &d, &no_annotations());
    let mut bundle = Bundle::sign_statement(&ours, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    bundle.truncate(bundle.len() / 2);
    let artifact = bundle_referrer(
        bundle,
        &subject(&img.manifest),
        COSIGN_SIGN_PREDICATE,
        CREATED,
    )
    .unwrap();
    push(&reg, repo, &artifact, None).await;
    let outcome = outcome_of(find_signatures(&reg, &name, &d, &policy).await.unwrap());
    assert!(
        matches!(
            outcome,
            Err(CheckError::Verify(VerifyError::Malformed { .. }))
        ),
        "{outcome:?}"
    );

    // A legacy attestation whose envelope was signed by another key.
    let img = image(54, 1, 100, "amd64", false);
    push_image(&reg, repo, &img, Some("attested")).await;
    let d = img.manifest.digest.clone();
    let spdx = predicate_type_uri("spdxjson").unwrap();
    let statement = Statement::new(None, &d, &spdx, serde_json::json!({}), &no_annotations());
    let envelope = Envelope::sign(&signer(), PAYLOAD_TYPE, &statement.to_bytes().unwrap()).unwrap();
    push_legacy(
        &reg,
        repo,
        &d,
        LegacyKind::Attestation,
        LegacyLayer::attestation(envelope.to_json().unwrap(), &spdx),
    )
    .await;
    let attestations = Policy::attestation(policy.keys.clone(), None, no_annotations());
    let outcome = outcome_of(
        find_signatures(&reg, &name, &d, &attestations)
            .await
            .unwrap(),
    );
    assert!(
        matches!(outcome, Err(CheckError::Verify(VerifyError::BadSignature))),
        "{outcome:?}"
    );
    // And it is not a signature at all.
    let report = find_signatures(&reg, &name, &d, &policy).await.unwrap();
    assert!(report.checks.is_empty() && report.skipped == 0);
}

/// A signer backed by sigstore-rs, so the signature bytes come from the other
/// implementation.
struct TheirSigner(sigstore::crypto::SigStoreSigner, PublicKey);

impl Signer for TheirSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, berth_trust::SignError> {
        self.0
            .sign(message)
            .map_err(|e| berth_trust::SignError::Failed(e.to_string()))
    }

    fn verification_material(&self) -> VerificationMaterial {
        VerificationMaterial::public_key_hint(self.1.hint())
    }
}

#[tokio::test]
async fn signatures_made_by_sigstore_rs_verify() {
    use sigstore::crypto::SigningScheme;
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let repo = "interop";
    let name = RepoName::parse(repo).unwrap();
    for (i, scheme) in [
        SigningScheme::ECDSA_P256_SHA256_ASN1,
        SigningScheme::ECDSA_P384_SHA384_ASN1,
        SigningScheme::ED25519,
    ]
    .into_iter()
    .enumerate()
    {
        let img = image(60 + i as u64, 1, 100, "amd64", false);
        push_image(&reg, repo, &img, None).await;
        let d = img.manifest.digest.clone();
        let theirs = scheme.create_signer().unwrap();
        let pem = theirs
            .to_sigstore_keypair()
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        let public = PublicKey::from_pem(pem.as_bytes()).unwrap();
        let their = TheirSigner(theirs, public.clone());

        // cosign v2: the raw signature over the payload, made and base64-encoded by them.
        let payload = Payload::new("registry.test/interop", &d, &no_annotations())
            .to_bytes()
            .unwrap();
        let signature = STANDARD.encode(their.0.sign(&payload).unwrap());
        let signed = SignedPayload { payload, signature };
        push_legacy(
            &reg,
            repo,
            &d,
            LegacyKind::Signature,
            LegacyLayer::signature(&signed),
        )
        .await;
        // cosign v3: a bundle whose DSSE signature they made.
        push(
            &reg,
            repo,
            &bundle_signature(&their, &subject(&img.manifest), &d, &no_annotations()),
            None,
        )
        .await;

        let report = find_signatures(
            &reg,
            &name,
            &d,
            &Policy::signature(vec![public.clone()], no_annotations()),
        )
        .await
        .unwrap();
        assert_eq!(report.verdicts().count(), 2, "{scheme:?}: {report:#?}");
        assert!(report
            .verdicts()
            .all(|v| v.key_fingerprint == public.fingerprint()));
    }
}

/// Pushes a two-platform index with the index signed, an SPDX attestation on the index,
/// and nothing on the platforms.
async fn signed_release(
    reg: &Registry,
    repo: &str,
    signer: &KeySigner,
) -> (Manifest, TestImage, TestImage) {
    let (idx, amd, arm) = push_multiarch(reg, repo, "1.0", 70).await;
    push(
        reg,
        repo,
        &bundle_signature(signer, &subject(&idx), &idx.digest, &no_annotations()),
        None,
    )
    .await;
    push(
        reg,
        repo,
        &bundle_attestation(signer, &subject(&idx), "spdxjson"),
        None,
    )
    .await;
    (idx, amd, arm)
}

#[tokio::test]
async fn release_check_passes_a_signed_index_with_an_sbom() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let ours = signer();
    let (idx, amd, _) = signed_release(&reg, "rel", &ours).await;
    let name = RepoName::parse("rel").unwrap();
    let policy = Policy::signature(vec![ours.public_key().clone()], no_annotations());
    let report = check_release(&reg, &name, &idx, &policy).await.unwrap();
    assert!(report.passed(), "{report:#?}");
    assert_eq!(report.platforms.len(), 2);
    let p = &report.platforms[0];
    assert_eq!(p.platform, "linux/amd64");
    assert_eq!(p.digest, amd.manifest.digest);
    assert_eq!(p.layers, 2);
    let blob_bytes: u64 = amd.layers.iter().map(|(d, _)| d.size).sum::<u64>() + amd.config.0.size;
    assert_eq!(p.size, amd.manifest.bytes.len() as u64 + blob_bytes);
    assert_eq!(
        p.signed,
        Signed {
            itself: false,
            by_index: true
        }
    );
    assert!(matches!(&p.sbom, Some(Sbom::Attestation { on, .. }) if *on == idx.digest));

    // With another key nothing is signed, and the SBOM attestation does not count either.
    let stranger = Policy::signature(vec![signer().public_key().clone()], no_annotations());
    let report = check_release(&reg, &name, &idx, &stranger).await.unwrap();
    assert!(!report.passed());
    for p in &report.platforms {
        assert_eq!(p.problems(), ["no valid signature", "no SBOM"]);
    }

    // A platform signed on its own, with an unsigned SBOM referrer, passes on its own:
    // the single-manifest check.
    let solo = image(80, 1, 200, "arm64", false);
    push_image(&reg, "solo", &solo, Some("1.0")).await;
    let solo_name = RepoName::parse("solo").unwrap();
    let report = check_release(&reg, &solo_name, &solo.manifest, &policy)
        .await
        .unwrap();
    assert_eq!(
        report.platforms[0].problems(),
        ["no valid signature", "no SBOM"]
    );
    assert_eq!(
        report.platforms[0].platform, "linux/arm64",
        "read from the config"
    );
    push(
        &reg,
        "solo",
        &bundle_signature(
            &ours,
            &subject(&solo.manifest),
            &solo.manifest.digest,
            &no_annotations(),
        ),
        None,
    )
    .await;
    push(&reg, "solo", &sbom_referrer(&solo.manifest), None).await;
    let report = check_release(&reg, &solo_name, &solo.manifest, &policy)
        .await
        .unwrap();
    assert!(report.passed(), "{report:#?}");
    assert!(
        matches!(&report.platforms[0].sbom, Some(Sbom::Referrer { artifact_type, .. }) if artifact_type == "application/spdx+json")
    );
}

/// An unsigned SPDX document attached as a referrer (as `oras attach` does).
fn sbom_referrer(subject: &Manifest) -> Artifact {
    let doc = br#"{"spdxVersion":"SPDX-2.3"}"#.to_vec();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": berth_oci::media_types::OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": berth_oci::media_types::OCI_EMPTY, "digest": Digest::sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": Digest::sha256(&doc), "size": doc.len()}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.bytes.len()},
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    Artifact {
        manifest_digest: Digest::sha256(&manifest),
        manifest,
        media_type: berth_oci::media_types::OCI_MANIFEST,
        blobs: vec![
            berth_trust::oci::Blob::new(berth_oci::media_types::OCI_EMPTY, b"{}".to_vec()),
            berth_trust::oci::Blob::new("application/spdx+json", doc),
        ],
    }
}

#[tokio::test]
async fn release_check_pulls_every_blob_and_catches_one_altered_on_disk() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let ours = signer();
    let (idx, _, arm) = signed_release(&reg, "rot", &ours).await;
    let name = RepoName::parse("rot").unwrap();
    let policy = Policy::signature(vec![ours.public_key().clone()], no_annotations());
    assert!(check_release(&reg, &name, &idx, &policy)
        .await
        .unwrap()
        .passed());

    // Bit rot: the same number of bytes, other content, behind the registry's back.
    let (layer, bytes) = &arm.layers[1];
    let path = berth.blob_path(&layer.digest);
    let mut rotten = bytes.to_vec();
    rotten[10] ^= 0xff;
    std::fs::write(&path, &rotten).unwrap();

    let report = check_release(&reg, &name, &idx, &policy).await.unwrap();
    assert!(!report.passed());
    assert!(
        report.platforms[0].passed(),
        "{:?}",
        report.platforms[0].problems()
    );
    let arm_report = &report.platforms[1];
    assert_eq!(arm_report.blob_failures.len(), 1, "{arm_report:#?}");
    assert_eq!(arm_report.blob_failures[0].digest, layer.digest);
    assert!(
        arm_report.blob_failures[0]
            .reason
            .contains("digest mismatch"),
        "{arm_report:#?}"
    );
}

/// A signature cosign made (published in sigstore-rs's test suite,
/// `src/cosign/signature_layers.rs`): the key, the simple-signing payload as cosign
/// serialised it, and the signature of `registry-testing.svc.lan/busybox`.
const COSIGN_VECTOR_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu
OSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==
-----END PUBLIC KEY-----
";
const COSIGN_VECTOR_DIGEST: &str =
    "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
const COSIGN_VECTOR_PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"registry-testing.svc.lan/busybox"},"image":{"docker-manifest-digest":"sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"},"type":"cosign container image signature"},"optional":null}"#;
const COSIGN_VECTOR_SIGNATURE: &str =
    "MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=";

#[tokio::test]
async fn a_published_cosign_signature_verifies_from_its_sig_tag() {
    // The image itself is not needed: its signatures are found by its digest.
    let dist = TestDistribution::start();
    let reg = clients().registry(&dist.host()).unwrap();
    let digest: Digest = COSIGN_VECTOR_DIGEST.parse().unwrap();
    let signed = SignedPayload {
        payload: COSIGN_VECTOR_PAYLOAD.as_bytes().to_vec(),
        signature: COSIGN_VECTOR_SIGNATURE.to_string(),
    };
    push_legacy(
        &reg,
        "busybox",
        &digest,
        LegacyKind::Signature,
        LegacyLayer::signature(&signed),
    )
    .await;
    let key = PublicKey::from_pem(COSIGN_VECTOR_KEY.as_bytes()).unwrap();
    let name = RepoName::parse("busybox").unwrap();
    let report = find_signatures(
        &reg,
        &name,
        &digest,
        &Policy::signature(vec![key], no_annotations()),
    )
    .await
    .unwrap();
    let verdicts: Vec<_> = report.verdicts().collect();
    assert_eq!(verdicts.len(), 1, "{report:#?}");
    assert_eq!(verdicts[0].format, SignatureFormat::SimpleSigning);
    assert_eq!(
        verdicts[0].identity.as_deref(),
        Some("registry-testing.svc.lan/busybox")
    );

    // The same signature does not verify for another digest's tag.
    let other = Digest::sha256(b"not busybox");
    push_legacy(
        &reg,
        "busybox",
        &other,
        LegacyKind::Signature,
        LegacyLayer::signature(&signed),
    )
    .await;
    let key = PublicKey::from_pem(COSIGN_VECTOR_KEY.as_bytes()).unwrap();
    let report = find_signatures(
        &reg,
        &name,
        &other,
        &Policy::signature(vec![key], no_annotations()),
    )
    .await
    .unwrap();
    assert!(matches!(
        report.checks[0].outcome,
        Err(CheckError::Verify(VerifyError::DigestMismatch { .. }))
    ));
}

#[tokio::test]
async fn release_check_on_distribution_reads_the_tag_schema() {
    let dist = TestDistribution::start();
    let reg = clients().registry(&dist.host()).unwrap();
    let ours = signer();
    let (idx, _, arm) = signed_release(&reg, "rel", &ours).await;
    let name = RepoName::parse("rel").unwrap();
    let policy = Policy::signature(vec![ours.public_key().clone()], no_annotations());
    let report = check_release(&reg, &name, &idx, &policy).await.unwrap();
    assert!(report.passed(), "{report:#?}");
    assert_eq!(
        report.index.as_ref().unwrap().signatures.verdicts().count(),
        1
    );

    // A platform signed on its own too.
    push(
        &reg,
        "rel",
        &bundle_signature(
            &ours,
            &subject(&arm.manifest),
            &arm.manifest.digest,
            &no_annotations(),
        ),
        None,
    )
    .await;
    let report = check_release(&reg, &name, &idx, &policy).await.unwrap();
    assert_eq!(
        report.platforms[0].signed,
        Signed {
            itself: false,
            by_index: true
        }
    );
    assert_eq!(
        report.platforms[1].signed,
        Signed {
            itself: true,
            by_index: true
        }
    );
}
