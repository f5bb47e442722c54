//! Signing and attesting with `berth_client::sign` against Berth (referrers API) and
//! CNCF Distribution (no referrers API: the referrers tag schema), in both formats. Each
//! stored artifact is fetched back and checked with `berth_trust::verify` and, where it
//! applies, with the independent `sigstore` crate.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_client::referrers::referrers_tag;
use berth_client::sign::{sign_image, Claim, Format, SignOptions};
use berth_client::{ImageRef, Registry};
use berth_oci::{Descriptor, Digest, Reference, RepoName};
use berth_trust::bundle::{Bundle, BUNDLE_MEDIA_TYPE};
use berth_trust::dsse::pae;
use berth_trust::intoto::COSIGN_SIGN_PREDICATE;
use berth_trust::oci::{self, BUNDLE_CONTENT_ANNOTATION, CREATED_ANNOTATION};
use berth_trust::verify::{verify_bundle_referrer, verify_legacy_layer};
use berth_trust::{KeySigner, PrivateKey, Requirements, SignatureFormat, VerifyError};
use futures_util::StreamExt as _;
use sigstore::crypto::{CosignVerificationKey, Signature};

use crate::fixtures::*;

const SPDX: &str = "https://spdx.dev/Document";

fn signer() -> KeySigner {
    KeySigner::new(PrivateKey::generate_p256().unwrap())
}

/// sigstore-rs's view of our public key.
fn theirs(signer: &KeySigner) -> CosignVerificationKey {
    CosignVerificationKey::try_from_pem(signer.public_key().to_pem().as_bytes()).unwrap()
}

fn bundle_opts() -> SignOptions {
    SignOptions {
        created: Some("2026-01-02T03:04:05Z".into()),
        ..SignOptions::default()
    }
}

fn legacy_opts() -> SignOptions {
    SignOptions {
        format: Format::Legacy,
        ..SignOptions::default()
    }
}

async fn blob(reg: &Registry, repo: &RepoName, desc: &oci::Descriptor) -> Vec<u8> {
    let d = Descriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.parse().unwrap(),
        size: desc.size,
        urls: vec![],
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    };
    let mut s = reg.get_blob(repo, &d).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Fetches a bundle referrer and its bundle, verifies it with `berth_trust`, and
/// checks the bundle's DSSE signature with sigstore-rs as well.
async fn verify_referrer(
    reg: &Registry,
    repo: &RepoName,
    artifact: &Digest,
    signer: &KeySigner,
    req: &Requirements<'_>,
) -> berth_trust::Verdict {
    let m = reg
        .get_manifest(repo, &Reference::Digest(artifact.clone()))
        .await
        .unwrap();
    let parsed = oci::Manifest::from_json(&m.bytes).unwrap();
    let bundle = blob(reg, repo, &parsed.layers[0]).await;
    let verdict = verify_bundle_referrer(&m.bytes, &bundle, req).unwrap();

    let envelope = Bundle::from_json(&bundle).unwrap().dsse_envelope.unwrap();
    let payload = envelope.payload_bytes().unwrap();
    let sig = STANDARD.decode(&envelope.signatures[0].sig).unwrap();
    theirs(signer)
        .verify_signature(Signature::Raw(&sig), &pae(&envelope.payload_type, &payload))
        .unwrap();
    verdict
}

/// The referrers of `subject` that are bundles.
async fn bundle_referrers(reg: &Registry, repo: &RepoName, subject: &Digest) -> Vec<Descriptor> {
    reg.referrers(repo, subject, Some(BUNDLE_MEDIA_TYPE))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_signature_is_a_referrer_that_verifies() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    let img = image(11, 1, 500, "amd64", false);
    push_image(&reg, "team/app", &img, Some("1.0")).await;
    let key = signer();
    let mut opts = bundle_opts();
    opts.annotations.insert("build".into(), "4711".into());

    let target = image_ref(&berth.host(), "team/app:1.0");
    let signed = sign_image(&reg, &target, &key, &Claim::Signature, &opts)
        .await
        .unwrap();
    assert_eq!(signed.len(), 1);
    let s = &signed[0];
    assert_eq!(s.subject, img.manifest.digest);
    assert_eq!(s.format, Format::Bundle);
    assert_eq!(s.predicate_type, COSIGN_SIGN_PREDICATE);
    assert!(s.tag.is_none());

    // The referrers API lists it, with the manifest's annotations.
    let refs = bundle_referrers(&reg, &repo, &img.manifest.digest).await;
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].digest, s.artifact);
    assert_eq!(
        refs[0].annotations[CREATED_ANNOTATION],
        "2026-01-02T03:04:05Z"
    );

    // The subject descriptor has the manifest's real size (resolved by HEAD).
    let m = reg
        .get_manifest(&repo, &Reference::Digest(s.artifact.clone()))
        .await
        .unwrap();
    let parsed = oci::Manifest::from_json(&m.bytes).unwrap();
    let subject = parsed.subject.unwrap();
    assert_eq!(subject.size, img.manifest.bytes.len() as u64);
    assert_eq!(subject.media_type, img.manifest.media_type);

    let verdict = verify_referrer(
        &reg,
        &repo,
        &s.artifact,
        &key,
        &Requirements::signature(key.public_key(), &img.manifest.digest, &opts.annotations),
    )
    .await;
    assert_eq!(verdict.format, SignatureFormat::Bundle);
    assert_eq!(verdict.digest, img.manifest.digest);
    assert_eq!(
        verdict.identity.as_deref(),
        Some(format!("{}/team/app", berth.host()).as_str())
    );
    assert_eq!(verdict.annotations["build"], "4711");
    assert_eq!(verdict.key_fingerprint, key.public_key().fingerprint());

    // Another key, or another image's digest, does not verify.
    let bundle = blob(&reg, &repo, &parsed.layers[0]).await;
    let other = signer();
    let none = BTreeMap::new();
    assert!(verify_bundle_referrer(
        &m.bytes,
        &bundle,
        &Requirements::signature(other.public_key(), &img.manifest.digest, &none),
    )
    .is_err());
    assert!(matches!(
        verify_bundle_referrer(
            &m.bytes,
            &bundle,
            &Requirements::signature(key.public_key(), &Digest::sha256(b"other"), &none),
        ),
        Err(VerifyError::DigestMismatch { .. })
    ));
}

/// Reads the `.sig`/`.att` manifest of `subject` and verifies each layer with its key.
async fn legacy_layers(
    reg: &Registry,
    repo: &RepoName,
    tag: &str,
) -> (oci::Manifest, Vec<(oci::Descriptor, Vec<u8>)>) {
    let m = reg
        .get_manifest(repo, &Reference::parse(tag).unwrap())
        .await
        .unwrap();
    let parsed = oci::Manifest::from_json(&m.bytes).unwrap();
    let mut layers = Vec::new();
    for l in &parsed.layers {
        layers.push((l.clone(), blob(reg, repo, l).await));
    }
    (parsed, layers)
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_signatures_append_and_verify_with_sigstore() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let repo = RepoName::parse("app").unwrap();
    let img = image(12, 1, 500, "amd64", false);
    push_image(&reg, "app", &img, Some("2")).await;
    let (first, second) = (signer(), signer());
    let target = image_ref(&berth.host(), "app:2");
    let mut opts = legacy_opts();
    let a = sign_image(&reg, &target, &first, &Claim::Signature, &opts)
        .await
        .unwrap();
    opts.annotations.insert("by".into(), "ci".into());
    let b = sign_image(&reg, &target, &second, &Claim::Signature, &opts)
        .await
        .unwrap();
    let tag = format!("sha256-{}.sig", img.manifest.digest.hex());
    assert_eq!(a[0].tag.as_deref(), Some(tag.as_str()));
    assert_eq!((a[0].layers, b[0].layers), (Some(1), Some(2)));

    let (_, layers) = legacy_layers(&reg, &repo, &tag).await;
    let tagged = reg
        .head_manifest(&repo, &Reference::parse(&tag).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tagged.digest, b[0].artifact);
    assert_eq!(layers.len(), 2, "the second signature was appended");
    let none = BTreeMap::new();
    for ((layer, bytes), (key, annotations)) in layers
        .iter()
        .zip([(&first, &none), (&second, &opts.annotations)])
    {
        let v = verify_legacy_layer(
            layer,
            bytes,
            &Requirements::signature(key.public_key(), &img.manifest.digest, annotations),
        )
        .unwrap();
        assert_eq!(v.format, SignatureFormat::SimpleSigning);
        assert_eq!(
            v.identity.as_deref(),
            Some(format!("{}/app", berth.host()).as_str())
        );
        // sigstore-rs checks the same payload and signature annotation.
        let sig = &layer.annotations[berth_trust::simple_signing::SIGNATURE_ANNOTATION];
        theirs(key)
            .verify_signature(Signature::Base64Encoded(sig.as_bytes()), bytes)
            .unwrap();
        let payload: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(
            payload["critical"]["image"]["docker-manifest-digest"],
            img.manifest.digest.to_string()
        );
    }
    // Each layer is the other key's failure.
    assert!(verify_legacy_layer(
        &layers[0].0,
        &layers[0].1,
        &Requirements::signature(second.public_key(), &img.manifest.digest, &none),
    )
    .is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn recursive_signs_the_index_and_every_child() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let repo = RepoName::parse("multi").unwrap();
    let (idx, amd, arm) = push_multiarch(&reg, "multi", "3", 30).await;
    let key = signer();
    let target = image_ref(&berth.host(), "multi:3");

    // Without --recursive only the index is signed.
    let only = sign_image(&reg, &target, &key, &Claim::Signature, &bundle_opts())
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].subject, idx.digest);
    assert!(bundle_referrers(&reg, &repo, &amd.manifest.digest)
        .await
        .is_empty());

    let mut opts = bundle_opts();
    opts.recursive = true;
    let all = sign_image(&reg, &target, &key, &Claim::Signature, &opts)
        .await
        .unwrap();
    let subjects: Vec<&Digest> = all.iter().map(|s| &s.subject).collect();
    assert_eq!(
        subjects,
        [&idx.digest, &amd.manifest.digest, &arm.manifest.digest]
    );
    let none = BTreeMap::new();
    for s in &all {
        let refs = bundle_referrers(&reg, &repo, &s.subject).await;
        assert!(refs.iter().any(|r| r.digest == s.artifact), "{}", s.subject);
        let v = verify_referrer(
            &reg,
            &repo,
            &s.artifact,
            &key,
            &Requirements::signature(key.public_key(), &s.subject, &none),
        )
        .await;
        assert_eq!(v.digest, s.subject);
    }

    // The legacy format signs every child the same way.
    let mut opts = legacy_opts();
    opts.recursive = true;
    let legacy = sign_image(&reg, &target, &key, &Claim::Signature, &opts)
        .await
        .unwrap();
    assert_eq!(legacy.len(), 3);
    for s in &legacy {
        let (_, layers) = legacy_layers(&reg, &repo, s.tag.as_deref().unwrap()).await;
        verify_legacy_layer(
            &layers[0].0,
            &layers[0].1,
            &Requirements::signature(key.public_key(), &s.subject, &none),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attestations_round_trip_in_both_formats() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let repo = RepoName::parse("att").unwrap();
    let img = image(13, 1, 500, "amd64", false);
    push_image(&reg, "att", &img, Some("1")).await;
    let key = signer();
    let target = image_ref(&berth.host(), "att:1");
    let claim = Claim::Attestation {
        predicate_type: SPDX.into(),
        predicate: serde_json::json!({"spdxVersion": "SPDX-2.3", "name": "app"}),
    };
    let digest = &img.manifest.digest;
    let none = BTreeMap::new();

    let bundle = sign_image(&reg, &target, &key, &claim, &bundle_opts())
        .await
        .unwrap();
    let refs = bundle_referrers(&reg, &repo, digest).await;
    assert_eq!(
        refs[0].annotations[oci::BUNDLE_PREDICATE_TYPE_ANNOTATION],
        SPDX
    );
    let v = verify_referrer(
        &reg,
        &repo,
        &bundle[0].artifact,
        &key,
        &Requirements::attestation(key.public_key(), digest, Some(SPDX), &none),
    )
    .await;
    assert_eq!(v.predicate_type, SPDX);
    // An attestation is not a signature of the image.
    let m = reg
        .get_manifest(&repo, &Reference::Digest(bundle[0].artifact.clone()))
        .await
        .unwrap();
    let layer = oci::Manifest::from_json(&m.bytes).unwrap().layers[0].clone();
    let bytes = blob(&reg, &repo, &layer).await;
    assert!(verify_bundle_referrer(
        &m.bytes,
        &bytes,
        &Requirements::signature(key.public_key(), digest, &none)
    )
    .is_err());

    let legacy = sign_image(&reg, &target, &key, &claim, &legacy_opts())
        .await
        .unwrap();
    let tag = format!("sha256-{}.att", digest.hex());
    assert_eq!(legacy[0].tag.as_deref(), Some(tag.as_str()));
    let (_, layers) = legacy_layers(&reg, &repo, &tag).await;
    let v = verify_legacy_layer(
        &layers[0].0,
        &layers[0].1,
        &Requirements::attestation(key.public_key(), digest, Some(SPDX), &none),
    )
    .unwrap();
    assert_eq!(v.format, SignatureFormat::LegacyAttestation);
    assert_eq!(v.predicate_type, SPDX);
    // sigstore-rs checks the envelope's signature over its PAE.
    let envelope = berth_trust::dsse::Envelope::from_json(&layers[0].1).unwrap();
    let sig = STANDARD.decode(&envelope.signatures[0].sig).unwrap();
    theirs(&key)
        .verify_signature(
            Signature::Raw(&sig),
            &pae(&envelope.payload_type, &envelope.payload_bytes().unwrap()),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_distribution_the_bundle_is_listed_in_the_tag_schema() {
    let dist = TestDistribution::start();
    let reg = clients().registry(&dist.host()).unwrap();
    let repo = RepoName::parse("app").unwrap();
    let (idx, amd, _arm) = push_multiarch(&reg, "app", "1", 40).await;
    let key = signer();
    let target = image_ref(&dist.host(), "app:1");
    let mut opts = bundle_opts();
    opts.recursive = true;
    let signed = sign_image(&reg, &target, &key, &Claim::Signature, &opts)
        .await
        .unwrap();
    assert_eq!(signed.len(), 3);

    // The fallback index names the referrer with its artifactType and annotations.
    let tag = referrers_tag(&idx.digest).unwrap();
    let index = reg.get_manifest(&repo, &Reference::Tag(tag)).await.unwrap();
    let entries = index.parse().unwrap().manifests;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.digest, signed[0].artifact);
    assert_eq!(entry.artifact_type.as_deref(), Some(BUNDLE_MEDIA_TYPE));
    assert_eq!(
        entry.annotations[BUNDLE_CONTENT_ANNOTATION],
        "dsse-envelope"
    );
    assert_eq!(
        entry.annotations[CREATED_ANNOTATION],
        "2026-01-02T03:04:05Z"
    );
    assert_eq!(
        entry.annotations[oci::BUNDLE_PREDICATE_TYPE_ANNOTATION],
        COSIGN_SIGN_PREDICATE
    );

    // Listing falls back to it, and what it lists verifies.
    let none = BTreeMap::new();
    for s in &signed {
        let refs = bundle_referrers(&reg, &repo, &s.subject).await;
        assert_eq!(refs.len(), 1, "{}", s.subject);
        verify_referrer(
            &reg,
            &repo,
            &refs[0].digest,
            &key,
            &Requirements::signature(key.public_key(), &s.subject, &none),
        )
        .await;
    }

    // cosign v2's layout needs nothing from the registry but tags.
    let legacy = sign_image(
        &reg,
        &ImageRef::parse(&format!("{}/app@{}", dist.host(), amd.manifest.digest)).unwrap(),
        &key,
        &Claim::Signature,
        &legacy_opts(),
    )
    .await
    .unwrap();
    let (_, layers) = legacy_layers(&reg, &repo, legacy[0].tag.as_deref().unwrap()).await;
    verify_legacy_layer(
        &layers[0].0,
        &layers[0].1,
        &Requirements::signature(key.public_key(), &amd.manifest.digest, &none),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_or_a_wrong_digest_is_an_error_and_pushes_nothing() {
    let berth = TestBerth::start().await;
    let reg = clients().registry(&berth.host()).unwrap();
    let repo = RepoName::parse("app").unwrap();
    let img = image(14, 1, 500, "amd64", false);
    push_image(&reg, "app", &img, Some("1")).await;
    let key = signer();
    let missing = sign_image(
        &reg,
        &image_ref(&berth.host(), "app:nope"),
        &key,
        &Claim::Signature,
        &bundle_opts(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            missing,
            berth_client::sign::SigningError::Client(berth_client::ClientError::NotFound(_))
        ),
        "{missing}"
    );
    let other = Digest::sha256(b"not pushed");
    let by_digest = ImageRef::parse(&format!("{}/app@{other}", berth.host())).unwrap();
    assert!(
        sign_image(&reg, &by_digest, &key, &Claim::Signature, &bundle_opts())
            .await
            .is_err()
    );
    assert!(bundle_referrers(&reg, &repo, &img.manifest.digest)
        .await
        .is_empty());
}
