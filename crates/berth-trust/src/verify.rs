//! Verification of signatures and attestations fetched by someone else: pure functions
//! over bytes that return a [`Verdict`] or a [`VerifyError`], and never panic.
//!
//! Every function checks, in this order: the bytes (a layer's digest, the JSON), the
//! signature with the given key, and only then what the signed payload says (the
//! subject digest, the predicate type, annotations). So an altered payload is always a
//! signature failure, and a digest mismatch means a valid signature of another image.
//!
//! Callers: the client (`berth verify`) and the server's trust policy, which caches
//! verdicts per digest. Neither needs network I/O here; keyless bundles (certificates,
//! transparency log) are reported as unsupported.

use std::collections::BTreeMap;

use berth_oci::Digest;

use crate::bundle::{is_bundle_v03, Bundle};
use crate::dsse::{decode_base64, Envelope, ENVELOPE_MEDIA_TYPE};
use crate::error::VerifyError;
use crate::intoto::{Statement, COSIGN_SIGN_PREDICATE, PAYLOAD_TYPE, STATEMENT_V01, STATEMENT_V1};
use crate::keys::PublicKey;
use crate::oci::{Descriptor, Manifest, CREATED_ANNOTATION, PREDICATE_TYPE_ANNOTATION};
use crate::simple_signing::{self, Payload, SIGNATURE_ANNOTATION, SIGNATURE_TYPE};

/// What must hold for a signature to count.
#[derive(Debug, Clone, Copy)]
pub struct Requirements<'a> {
    /// The key that must have signed.
    pub key: &'a PublicKey,
    /// The manifest digest that must be the signed subject.
    pub digest: &'a Digest,
    /// The predicate type the statement must have; `None` accepts any. A simple-signing
    /// signature counts as [`COSIGN_SIGN_PREDICATE`], as cosign v3 shows it.
    pub predicate_type: Option<&'a str>,
    /// Annotations the signed payload must carry with these values (`-a k=v`): the
    /// `optional` map of a simple-signing payload, the subject's annotations of an
    /// in-toto statement.
    pub annotations: &'a BTreeMap<String, String>,
}

impl<'a> Requirements<'a> {
    /// An image signature: a cosign v2 simple signing, or a bundle whose statement is a
    /// cosign v3 signature (an attestation is not a signature).
    pub fn signature(
        key: &'a PublicKey,
        digest: &'a Digest,
        annotations: &'a BTreeMap<String, String>,
    ) -> Requirements<'a> {
        Requirements {
            key,
            digest,
            predicate_type: Some(COSIGN_SIGN_PREDICATE),
            annotations,
        }
    }

    /// An attestation of `predicate_type` (any when `None`).
    pub fn attestation(
        key: &'a PublicKey,
        digest: &'a Digest,
        predicate_type: Option<&'a str>,
        annotations: &'a BTreeMap<String, String>,
    ) -> Requirements<'a> {
        Requirements {
            key,
            digest,
            predicate_type,
            annotations,
        }
    }
}

/// The format a verified signature was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    /// A Sigstore bundle (cosign v3), from an OCI referrer.
    Bundle,
    /// A simple-signing layer of a `.sig` manifest (cosign v2).
    SimpleSigning,
    /// A DSSE envelope layer of a `.att` manifest (cosign v2).
    LegacyAttestation,
}

/// A signature that verified: who signed what, and when it says it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub format: SignatureFormat,
    /// The signing key's fingerprint ([`PublicKey::fingerprint`]).
    pub key_fingerprint: String,
    /// The signed manifest digest.
    pub digest: Digest,
    /// The signed name of the image, when the payload has one (`docker-reference`, the
    /// statement subject's name).
    pub identity: Option<String>,
    /// The statement's predicate type ([`COSIGN_SIGN_PREDICATE`] for simple signing).
    pub predicate_type: String,
    /// The signed annotations.
    pub annotations: BTreeMap<String, String>,
    /// The `org.opencontainers.image.created` annotation of the referrer manifest,
    /// normalised to RFC 3339 UTC. It is not signed: display it, do not decide on it.
    pub created: Option<String>,
}

/// Verifies a bundle referrer: its manifest, and the bundle blob (its only layer) as
/// fetched. The layer's digest is checked against the bytes, then the bundle.
pub fn verify_bundle_referrer(
    manifest: &[u8],
    bundle: &[u8],
    req: &Requirements<'_>,
) -> Result<Verdict, VerifyError> {
    let manifest = Manifest::from_json(manifest)?;
    let layer = match manifest.layers.as_slice() {
        [layer] => layer,
        [] => return Err(VerifyError::malformed("bundle manifest", "no layer")),
        _ => {
            return Err(VerifyError::malformed(
                "bundle manifest",
                "more than one layer",
            ))
        }
    };
    if !is_bundle_v03(&layer.media_type) {
        return Err(VerifyError::Unsupported(format!(
            "referrer layer of media type {:?}",
            layer.media_type
        )));
    }
    check_layer_bytes(layer, bundle)?;
    let mut verdict = verify_bundle(bundle, req)?;
    verdict.created = manifest
        .annotations
        .get(CREATED_ANNOTATION)
        .and_then(|t| normalise_time(t));
    Ok(verdict)
}

/// Verifies a bundle's JSON: its DSSE envelope with the key, then the statement.
pub fn verify_bundle(bundle: &[u8], req: &Requirements<'_>) -> Result<Verdict, VerifyError> {
    let bundle = Bundle::from_json(bundle)?;
    let Some(envelope) = &bundle.dsse_envelope else {
        return Err(if bundle.message_signature.is_some() {
            VerifyError::Unsupported(
                "a bundle with a message signature (a signed blob, not an image)".into(),
            )
        } else {
            VerifyError::malformed("bundle", "no dsseEnvelope")
        });
    };
    let material = &bundle.verification_material;
    if material.public_key.is_none()
        && (material.certificate.is_some() || material.x509_certificate_chain.is_some())
    {
        return Err(VerifyError::Unsupported(
            "keyless bundle (certificate from Fulcio): verifying it needs the Sigstore trust root"
                .into(),
        ));
    }
    let hint = material
        .public_key
        .as_ref()
        .map(|p| p.hint.as_str())
        .filter(|h| !h.is_empty());
    let (_, statement) = match verify_statement_envelope(envelope, req.key) {
        Err(VerifyError::BadSignature) => {
            // The hint is unsigned, so it only explains a failure, never causes one.
            return Err(match hint {
                Some(hint) if hint != req.key.hint() => VerifyError::WrongKey {
                    expected: req.key.hint(),
                    hint: hint.to_string(),
                },
                _ => VerifyError::BadSignature,
            });
        }
        other => other?,
    };
    check_statement(&statement, req, SignatureFormat::Bundle)
}

/// Verifies one layer of a legacy `.sig` or `.att` manifest, given the layer's
/// descriptor from the manifest and its bytes as fetched.
pub fn verify_legacy_layer(
    layer: &Descriptor,
    blob: &[u8],
    req: &Requirements<'_>,
) -> Result<Verdict, VerifyError> {
    check_layer_bytes(layer, blob)?;
    match layer.media_type.as_str() {
        simple_signing::MEDIA_TYPE => {
            let signature = layer.annotations.get(SIGNATURE_ANNOTATION).ok_or_else(|| {
                VerifyError::malformed("signature layer", "no signature annotation")
            })?;
            verify_simple_signing(blob, signature, req)
        }
        ENVELOPE_MEDIA_TYPE => {
            let verdict = verify_legacy_attestation(blob, req)?;
            // The annotation is unsigned; a disagreement with the signed statement is
            // a sign of tampering with the manifest.
            if let Some(annotated) = layer.annotations.get(PREDICATE_TYPE_ANNOTATION) {
                if *annotated != verdict.predicate_type {
                    return Err(VerifyError::malformed(
                        "attestation layer",
                        format!(
                            "predicateType annotation {annotated:?} disagrees with the signed {:?}",
                            verdict.predicate_type
                        ),
                    ));
                }
            }
            Ok(verdict)
        }
        other => Err(VerifyError::Unsupported(format!(
            "signature layer of media type {other:?}"
        ))),
    }
}

/// Verifies a simple-signing payload and its base64 signature (the layer's
/// `dev.cosignproject.cosign/signature` annotation).
pub fn verify_simple_signing(
    payload: &[u8],
    signature_b64: &str,
    req: &Requirements<'_>,
) -> Result<Verdict, VerifyError> {
    let signature = decode_base64(signature_b64.trim())
        .ok_or_else(|| VerifyError::malformed("signature", "not base64"))?;
    if !req.key.verify(payload, &signature) {
        return Err(VerifyError::BadSignature);
    }
    let payload: Payload = serde_json::from_slice(payload)
        .map_err(|e| VerifyError::malformed("simple-signing payload", e))?;
    if payload.critical.kind != SIGNATURE_TYPE {
        return Err(VerifyError::Unsupported(format!(
            "simple-signing type {:?}",
            payload.critical.kind
        )));
    }
    let signed = &payload.critical.image.docker_manifest_digest;
    if !digest_eq(signed, req.digest) {
        return Err(VerifyError::DigestMismatch {
            expected: req.digest.clone(),
            signed: signed.clone(),
        });
    }
    if let Some(expected) = req.predicate_type {
        if expected != COSIGN_SIGN_PREDICATE {
            return Err(VerifyError::PredicateTypeMismatch {
                expected: expected.to_string(),
                found: COSIGN_SIGN_PREDICATE.to_string(),
            });
        }
    }
    let annotations: BTreeMap<String, String> = payload
        .optional
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json_text(v)))
        .collect();
    check_annotations(&annotations, req.annotations)?;
    Ok(Verdict {
        format: SignatureFormat::SimpleSigning,
        key_fingerprint: req.key.fingerprint(),
        digest: req.digest.clone(),
        identity: Some(payload.critical.identity.docker_reference),
        predicate_type: COSIGN_SIGN_PREDICATE.to_string(),
        annotations,
        created: None,
    })
}

/// Verifies a legacy attestation: a DSSE envelope's JSON holding an in-toto statement.
pub fn verify_legacy_attestation(
    envelope: &[u8],
    req: &Requirements<'_>,
) -> Result<Verdict, VerifyError> {
    let envelope = Envelope::from_json(envelope)?;
    let (_, statement) = verify_statement_envelope(&envelope, req.key)?;
    check_statement(&statement, req, SignatureFormat::LegacyAttestation)
}

/// Checks an envelope's signature and type and parses its statement.
fn verify_statement_envelope(
    envelope: &Envelope,
    key: &PublicKey,
) -> Result<(Vec<u8>, Statement), VerifyError> {
    let payload = envelope.verify(key)?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(VerifyError::Unsupported(format!(
            "DSSE payload type {:?} (expected {PAYLOAD_TYPE})",
            envelope.payload_type
        )));
    }
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| VerifyError::malformed("in-toto statement", e))?;
    if statement.statement_type != STATEMENT_V1 && statement.statement_type != STATEMENT_V01 {
        return Err(VerifyError::Unsupported(format!(
            "in-toto statement type {:?}",
            statement.statement_type
        )));
    }
    Ok((payload, statement))
}

/// Checks a verified statement against the requirements and makes the verdict.
fn check_statement(
    statement: &Statement,
    req: &Requirements<'_>,
    format: SignatureFormat,
) -> Result<Verdict, VerifyError> {
    let Some(subject) = statement.subject.iter().find(|s| s.matches(req.digest)) else {
        let signed = statement
            .subject
            .iter()
            .flat_map(|s| s.digest.iter().map(|(alg, hex)| format!("{alg}:{hex}")))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(VerifyError::DigestMismatch {
            expected: req.digest.clone(),
            signed: if signed.is_empty() {
                "no subject".to_string()
            } else {
                signed
            },
        });
    };
    if let Some(expected) = req.predicate_type {
        if statement.predicate_type != expected {
            return Err(VerifyError::PredicateTypeMismatch {
                expected: expected.to_string(),
                found: statement.predicate_type.clone(),
            });
        }
    }
    let annotations: BTreeMap<String, String> = subject
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json_text(v)))
        .collect();
    check_annotations(&annotations, req.annotations)?;
    Ok(Verdict {
        format,
        key_fingerprint: req.key.fingerprint(),
        digest: req.digest.clone(),
        identity: subject.name.clone(),
        predicate_type: statement.predicate_type.clone(),
        annotations,
        created: None,
    })
}

fn check_annotations(
    signed: &BTreeMap<String, String>,
    required: &BTreeMap<String, String>,
) -> Result<(), VerifyError> {
    for (key, expected) in required {
        let found = signed.get(key);
        if found != Some(expected) {
            return Err(VerifyError::AnnotationMismatch {
                key: key.clone(),
                expected: expected.clone(),
                found: found.cloned(),
            });
        }
    }
    Ok(())
}

fn check_layer_bytes(layer: &Descriptor, blob: &[u8]) -> Result<(), VerifyError> {
    let digest: Digest = layer
        .digest
        .parse()
        .map_err(|e| VerifyError::malformed("layer descriptor", e))?;
    if blob.len() as u64 != layer.size || Digest::of(digest.algorithm(), blob) != digest {
        return Err(VerifyError::LayerDigestMismatch(layer.digest.clone()));
    }
    Ok(())
}

/// Whether a signed digest string names `digest` (hex compared case-insensitively).
fn digest_eq(signed: &str, digest: &Digest) -> bool {
    signed.split_once(':').is_some_and(|(alg, hex)| {
        alg == digest.algorithm().as_str() && hex.eq_ignore_ascii_case(digest.hex())
    })
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time in UTC with its fractional seconds kept, or `None` if unreadable.
fn normalise_time(t: &str) -> Option<String> {
    let ts: jiff::Timestamp = t.parse().ok()?;
    Some(ts.to_string())
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    use super::*;
    use crate::intoto::predicate_type_uri;
    use crate::keys::PrivateKey;
    use crate::oci::{self, append_legacy_layer, bundle_referrer, LegacyLayer, SubjectDescriptor};
    use crate::signer::KeySigner;
    use crate::simple_signing;

    const CREATED: &str = "2026-12-01T10:20:30.5Z";

    fn signer() -> KeySigner {
        KeySigner::new(PrivateKey::generate_p256().unwrap())
    }

    fn image() -> Digest {
        Digest::sha256(b"the image manifest")
    }

    static NONE: BTreeMap<String, String> = BTreeMap::new();

    fn none() -> &'static BTreeMap<String, String> {
        &NONE
    }

    fn subject(digest: &Digest) -> SubjectDescriptor {
        SubjectDescriptor {
            media_type: berth_oci::media_types::OCI_MANIFEST.to_string(),
            digest: digest.clone(),
            size: 1234,
        }
    }

    /// A cosign v3 signature referrer of `digest`: (manifest, bundle).
    fn signed_referrer(signer: &KeySigner, digest: &Digest) -> (Vec<u8>, Vec<u8>) {
        let statement = Statement::cosign_signature(Some("registry.test/app"), digest, none());
        let bundle = Bundle::sign_statement(signer, &statement)
            .unwrap()
            .to_json()
            .unwrap();
        let artifact = bundle_referrer(
            bundle.clone(),
            &subject(digest),
            COSIGN_SIGN_PREDICATE,
            CREATED,
        )
        .unwrap();
        (artifact.manifest, bundle)
    }

    #[test]
    fn bundle_signature_round_trip() {
        let signer = signer();
        let digest = image();
        let (manifest, bundle) = signed_referrer(&signer, &digest);
        let key = signer.public_key();
        let verdict = verify_bundle_referrer(
            &manifest,
            &bundle,
            &Requirements::signature(key, &digest, none()),
        )
        .unwrap();
        assert_eq!(verdict.format, SignatureFormat::Bundle);
        assert_eq!(verdict.key_fingerprint, key.fingerprint());
        assert_eq!(verdict.digest, digest);
        assert_eq!(verdict.predicate_type, COSIGN_SIGN_PREDICATE);
        assert_eq!(verdict.identity.as_deref(), Some("registry.test/app"));
        assert_eq!(verdict.created.as_deref(), Some("2026-12-01T10:20:30.5Z"));
        let json: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
        assert_eq!(json["mediaType"], crate::bundle::BUNDLE_MEDIA_TYPE);
        assert_eq!(
            json["verificationMaterial"]["publicKey"]["hint"],
            key.hint()
        );
        assert_eq!(json["dsseEnvelope"]["payloadType"], PAYLOAD_TYPE);
    }

    #[test]
    fn bundles_of_every_key_algorithm_verify() {
        let keys = [
            PrivateKey::generate_ed25519().unwrap(),
            PrivateKey::from_pem(
                b"-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDDWIebxSdyJVber6J/l5MKnD0+VU0b7fcjY/RbIxuIsHLVIvwJrSohY
r3gJ/iJmIKGgBwYFK4EEACKhZANiAAQeoKZkkc1GafmIgp1tbNbMBjr2EdvX2dtT
lGhzHJgE0YB6TavazcYH1iOBNmX7/pInCopiyWbjF/5olrRKJMG6DQz80td++fYf
O4tr+Z3nyUgRGmf/fqYA4PSN30CuOMU=
-----END EC PRIVATE KEY-----",
                b"",
            )
            .unwrap(),
        ];
        for key in keys {
            let signer = KeySigner::new(key);
            let (manifest, bundle) = signed_referrer(&signer, &image());
            let digest = image();
            let req = Requirements::signature(signer.public_key(), &digest, none());
            assert!(verify_bundle_referrer(&manifest, &bundle, &req).is_ok());
        }
    }

    #[test]
    fn tampered_bundle_payload_is_a_bad_signature() {
        let signer = signer();
        let digest = image();
        let (_, bundle) = signed_referrer(&signer, &digest);
        let mut parsed = Bundle::from_json(&bundle).unwrap();
        let envelope = parsed.dsse_envelope.as_mut().unwrap();
        let payload = String::from_utf8(envelope.payload_bytes().unwrap()).unwrap();
        // Same digest, another name: the statement was altered after signing.
        envelope.payload = STANDARD.encode(payload.replace("registry.test/app", "evil.test/app"));
        let req = Requirements::signature(signer.public_key(), &digest, none());
        assert_eq!(
            verify_bundle(&parsed.to_json().unwrap(), &req),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn bundle_for_another_digest_is_a_digest_mismatch() {
        let signer = signer();
        let other = Digest::sha256(b"another image");
        let (_, bundle) = signed_referrer(&signer, &other);
        let digest = image();
        let req = Requirements::signature(signer.public_key(), &digest, none());
        assert_eq!(
            verify_bundle(&bundle, &req),
            Err(VerifyError::DigestMismatch {
                expected: digest,
                signed: other.to_string()
            })
        );
    }

    #[test]
    fn bundle_checked_with_another_key_is_a_wrong_key() {
        let signer = signer();
        let (_, bundle) = signed_referrer(&signer, &image());
        let other = PrivateKey::generate_p256().unwrap().public_key();
        let digest = image();
        let req = Requirements::signature(&other, &digest, none());
        assert_eq!(
            verify_bundle(&bundle, &req),
            Err(VerifyError::WrongKey {
                expected: other.hint(),
                hint: signer.public_key().hint()
            })
        );
    }

    #[test]
    fn truncated_or_garbled_bundles_are_malformed() {
        let signer = signer();
        let (manifest, bundle) = signed_referrer(&signer, &image());
        let digest = image();
        let req = Requirements::signature(signer.public_key(), &digest, none());
        for cut in [0, 1, bundle.len() / 2, bundle.len() - 1] {
            assert!(matches!(
                verify_bundle(&bundle[..cut], &req),
                Err(VerifyError::Malformed { what: "bundle", .. })
            ));
        }
        // The referrer's layer no longer matches the bytes fetched for it.
        assert!(matches!(
            verify_bundle_referrer(&manifest, &bundle[..bundle.len() - 1], &req),
            Err(VerifyError::LayerDigestMismatch(_))
        ));
        assert!(matches!(
            verify_bundle_referrer(&manifest[..10], &bundle, &req),
            Err(VerifyError::Malformed {
                what: "manifest",
                ..
            })
        ));
        let no_signatures = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial":{},"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[]}}"#;
        assert!(matches!(
            verify_bundle(no_signatures, &req),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn keyless_and_message_signature_bundles_are_unsupported() {
        let key = signer();
        let digest = image();
        let req = Requirements::signature(key.public_key(), &digest, none());
        let keyless = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial":{"certificate":{"rawBytes":"MAA="},"tlogEntries":[{}]},
            "dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"MAA="}]}}"#;
        assert!(matches!(
            verify_bundle(keyless, &req),
            Err(VerifyError::Unsupported(_))
        ));
        let message = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial":{"publicKey":{"hint":""}},"messageSignature":{"signature":"MAA="}}"#;
        assert!(matches!(
            verify_bundle(message, &req),
            Err(VerifyError::Unsupported(_))
        ));
        let old = br#"{"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.1","verificationMaterial":{}}"#;
        assert!(matches!(
            verify_bundle(old, &req),
            Err(VerifyError::Unsupported(_))
        ));
    }

    #[test]
    fn attestations_are_checked_for_their_predicate_type() {
        let signer = signer();
        let digest = image();
        let spdx = predicate_type_uri("spdxjson").unwrap();
        let statement = Statement::new(
            None,
            &digest,
            &spdx,
            serde_json::json!({"spdxVersion": "SPDX-2.3"}),
            none(),
        );
        let bundle = Bundle::sign_statement(&signer, &statement)
            .unwrap()
            .to_json()
            .unwrap();
        let key = signer.public_key();
        let verdict = verify_bundle(
            &bundle,
            &Requirements::attestation(key, &digest, Some(&spdx), none()),
        )
        .unwrap();
        assert_eq!(verdict.predicate_type, spdx);
        assert!(verify_bundle(
            &bundle,
            &Requirements::attestation(key, &digest, None, none())
        )
        .is_ok());
        // An attestation is not an image signature.
        assert!(matches!(
            verify_bundle(&bundle, &Requirements::signature(key, &digest, none())),
            Err(VerifyError::PredicateTypeMismatch { .. })
        ));
    }

    #[test]
    fn required_annotations_must_be_signed() {
        let signer = signer();
        let digest = image();
        let signed = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let statement = Statement::cosign_signature(None, &digest, &signed);
        let bundle = Bundle::sign_statement(&signer, &statement)
            .unwrap()
            .to_json()
            .unwrap();
        let key = signer.public_key();
        let verdict =
            verify_bundle(&bundle, &Requirements::signature(key, &digest, &signed)).unwrap();
        assert_eq!(verdict.annotations, signed);
        let staging = BTreeMap::from([("env".to_string(), "staging".to_string())]);
        assert_eq!(
            verify_bundle(&bundle, &Requirements::signature(key, &digest, &staging)),
            Err(VerifyError::AnnotationMismatch {
                key: "env".into(),
                expected: "staging".into(),
                found: Some("prod".into())
            })
        );
    }

    /// A legacy `.sig` manifest with one signature of `digest`: (manifest, layer blob).
    fn legacy_signature(
        signer: &KeySigner,
        digest: &Digest,
        annotations: &BTreeMap<String, String>,
    ) -> (Manifest, Vec<u8>) {
        let payload = simple_signing::Payload::new("registry.test/app", digest, annotations);
        let signed = simple_signing::sign(signer, &payload).unwrap();
        let artifact = append_legacy_layer(None, LegacyLayer::signature(&signed)).unwrap();
        (
            Manifest::from_json(&artifact.manifest).unwrap(),
            signed.payload,
        )
    }

    #[test]
    fn simple_signing_round_trip_and_annotations() {
        let signer = signer();
        let digest = image();
        let signed = BTreeMap::from([("build".to_string(), "42".to_string())]);
        let (manifest, blob) = legacy_signature(&signer, &digest, &signed);
        let key = signer.public_key();
        let verdict = verify_legacy_layer(
            &manifest.layers[0],
            &blob,
            &Requirements::signature(key, &digest, &signed),
        )
        .unwrap();
        assert_eq!(verdict.format, SignatureFormat::SimpleSigning);
        assert_eq!(verdict.identity.as_deref(), Some("registry.test/app"));
        assert_eq!(verdict.key_fingerprint, key.fingerprint());
        assert_eq!(verdict.created, None);
        let missing = BTreeMap::from([("approved".to_string(), "yes".to_string())]);
        assert!(matches!(
            verify_legacy_layer(
                &manifest.layers[0],
                &blob,
                &Requirements::signature(key, &digest, &missing)
            ),
            Err(VerifyError::AnnotationMismatch { found: None, .. })
        ));
        // A simple signing is a signature, not an SBOM attestation.
        assert!(matches!(
            verify_legacy_layer(
                &manifest.layers[0],
                &blob,
                &Requirements::attestation(key, &digest, Some("https://spdx.dev/Document"), none())
            ),
            Err(VerifyError::PredicateTypeMismatch { .. })
        ));
    }

    #[test]
    fn simple_signing_failures() {
        let signer = signer();
        let digest = image();
        let (manifest, blob) = legacy_signature(&signer, &digest, none());
        let layer = &manifest.layers[0];
        let signature = &layer.annotations[SIGNATURE_ANNOTATION];
        let key = signer.public_key();
        let req = Requirements::signature(key, &digest, none());

        let tampered = String::from_utf8(blob.clone())
            .unwrap()
            .replace("registry.test", "evil.test");
        assert_eq!(
            verify_simple_signing(tampered.as_bytes(), signature, &req),
            Err(VerifyError::BadSignature)
        );
        // Fetched bytes that are not the layer's are caught before the signature.
        assert!(matches!(
            verify_legacy_layer(layer, tampered.as_bytes(), &req),
            Err(VerifyError::LayerDigestMismatch(_))
        ));
        let other_key = PrivateKey::generate_p256().unwrap().public_key();
        assert_eq!(
            verify_simple_signing(
                &blob,
                signature,
                &Requirements::signature(&other_key, &digest, none())
            ),
            Err(VerifyError::BadSignature)
        );
        let other = Digest::sha256(b"other");
        assert!(matches!(
            verify_simple_signing(
                &blob,
                signature,
                &Requirements::signature(key, &other, none())
            ),
            Err(VerifyError::DigestMismatch { .. })
        ));
        assert!(matches!(
            verify_simple_signing(&blob, "%%%", &req),
            Err(VerifyError::Malformed { .. })
        ));
        let mut unsigned = layer.clone();
        unsigned.annotations.clear();
        assert!(matches!(
            verify_legacy_layer(&unsigned, &blob, &req),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn legacy_attestation_round_trip() {
        let signer = signer();
        let digest = image();
        let provenance = predicate_type_uri("slsaprovenance").unwrap();
        let statement = Statement::new(None, &digest, &provenance, serde_json::json!({}), none());
        let envelope =
            crate::dsse::Envelope::sign(&signer, PAYLOAD_TYPE, &statement.to_bytes().unwrap())
                .unwrap()
                .to_json()
                .unwrap();
        let artifact = append_legacy_layer(
            None,
            LegacyLayer::attestation(envelope.clone(), &provenance),
        )
        .unwrap();
        let manifest = Manifest::from_json(&artifact.manifest).unwrap();
        let key = signer.public_key();
        let req = Requirements::attestation(key, &digest, Some(&provenance), none());
        let verdict = verify_legacy_layer(&manifest.layers[0], &envelope, &req).unwrap();
        assert_eq!(verdict.format, SignatureFormat::LegacyAttestation);
        assert_eq!(verdict.predicate_type, provenance);

        // The unsigned annotation lying about the predicate type is caught.
        let mut lying = manifest.layers[0].clone();
        lying.annotations.insert(
            oci::PREDICATE_TYPE_ANNOTATION.into(),
            "https://spdx.dev/Document".into(),
        );
        assert!(matches!(
            verify_legacy_layer(
                &lying,
                &envelope,
                &Requirements::attestation(key, &digest, None, none())
            ),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let signer = signer();
        let digest = image();
        let (manifest, bundle) = signed_referrer(&signer, &digest);
        let req = Requirements::signature(signer.public_key(), &digest, none());
        let layer = Manifest::from_json(&manifest).unwrap().layers[0].clone();
        // Every prefix and every single-byte corruption of real inputs.
        for i in 0..bundle.len() {
            let _ = verify_bundle(&bundle[..i], &req);
            let mut flipped = bundle.clone();
            flipped[i] ^= 0x20;
            // Only unsigned parts (the key hint) may change and still verify.
            if let Ok(verdict) = verify_bundle(&flipped, &req) {
                assert_eq!(verdict.digest, digest);
            }
            let _ = verify_legacy_attestation(&flipped, &req);
            let _ = verify_simple_signing(&flipped, "AAAA", &req);
        }
        for i in 0..manifest.len() {
            let _ = verify_bundle_referrer(&manifest[..i], &bundle, &req);
        }
        let _ = verify_legacy_layer(&layer, &[], &req);
    }
}
