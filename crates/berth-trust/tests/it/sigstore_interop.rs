//! Interoperability with the `sigstore` crate (sigstore-rs), an implementation of
//! cosign's formats independent of ours: keys and signatures we write are read and
//! verified by it, and keys and signatures it makes are read and verified by us.
//!
//! sigstore-rs is built without its `cosign` feature (which would bring its registry,
//! Fulcio, Rekor and OAuth clients), so its `crypto` module is what checks our bytes:
//! the same key loading and signature verification its cosign verifier calls.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_oci::Digest;
use berth_trust::bundle::Bundle;
use berth_trust::dsse::{pae, Envelope, EnvelopeSignature};
use berth_trust::intoto::{Statement, PAYLOAD_TYPE};
use berth_trust::oci::{append_legacy_layer, LegacyLayer, Manifest};
use berth_trust::simple_signing::{self, Payload, SignedPayload};
use berth_trust::verify::{verify_bundle, verify_legacy_layer, verify_simple_signing};
use berth_trust::{
    KeyAlgorithm, KeySigner, PrivateKey, PublicKey, Requirements, Signer, VerifyError,
};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};

static NONE: BTreeMap<String, String> = BTreeMap::new();

fn none() -> &'static BTreeMap<String, String> {
    &NONE
}

fn image() -> Digest {
    Digest::sha256(b"an image manifest")
}

#[test]
fn our_encrypted_key_is_read_by_sigstore() {
    let key = PrivateKey::generate_p256().unwrap();
    let pem = key.to_encrypted_pem(b"s3cret").unwrap();
    let theirs = SigStoreKeyPair::from_encrypted_pem(pem.as_bytes(), b"s3cret").unwrap();
    assert_eq!(
        theirs.public_key_to_der().unwrap(),
        key.public_key().to_der()
    );
    assert!(SigStoreKeyPair::from_encrypted_pem(pem.as_bytes(), b"wrong").is_err());
    // And our public key PEM is theirs (which has CRLF line ends).
    assert_eq!(
        theirs
            .public_key_to_pem()
            .unwrap()
            .replace("\r\n", "\n")
            .trim(),
        key.public_key().to_pem().trim()
    );
}

#[test]
fn sigstores_encrypted_keys_are_read_by_us() {
    let schemes = [
        (
            SigningScheme::ECDSA_P256_SHA256_ASN1,
            KeyAlgorithm::EcdsaP256,
        ),
        (
            SigningScheme::ECDSA_P384_SHA384_ASN1,
            KeyAlgorithm::EcdsaP384,
        ),
        (SigningScheme::ED25519, KeyAlgorithm::Ed25519),
    ];
    for (scheme, algorithm) in schemes {
        let pair = scheme
            .create_signer()
            .unwrap()
            .to_sigstore_keypair()
            .unwrap();
        let pem = pair.private_key_to_encrypted_pem(b"pw").unwrap();
        let ours = PrivateKey::from_pem(pem.as_bytes(), b"pw").unwrap();
        assert_eq!(ours.algorithm(), algorithm);
        assert_eq!(
            ours.public_key().to_der(),
            pair.public_key_to_der().unwrap()
        );
        let public = PublicKey::from_pem(pair.public_key_to_pem().unwrap().as_bytes()).unwrap();
        assert_eq!(public, ours.public_key());
        // Their unencrypted PKCS#8 too.
        let plain = pair.private_key_to_pem().unwrap();
        assert_eq!(
            PrivateKey::from_pem(plain.as_bytes(), b"")
                .unwrap()
                .public_key(),
            public
        );
    }
}

#[test]
fn our_simple_signing_signature_verifies_with_sigstore() {
    let signer = KeySigner::new(PrivateKey::generate_p256().unwrap());
    let payload = Payload::new(
        "registry.test/app",
        &image(),
        &BTreeMap::from([("env".to_string(), "prod".to_string())]),
    );
    let signed = simple_signing::sign(&signer, &payload).unwrap();
    let key = CosignVerificationKey::try_from_pem(signer.public_key().to_pem().as_bytes()).unwrap();
    key.verify_signature(
        Signature::Base64Encoded(signed.signature.as_bytes()),
        &signed.payload,
    )
    .unwrap();
    let mut altered = signed.payload.clone();
    altered[5] ^= 1;
    assert!(key
        .verify_signature(
            Signature::Base64Encoded(signed.signature.as_bytes()),
            &altered
        )
        .is_err());
}

#[test]
fn our_bundle_signature_verifies_with_sigstore() {
    for key in [
        PrivateKey::generate_p256().unwrap(),
        PrivateKey::generate_ed25519().unwrap(),
    ] {
        let signer = KeySigner::new(key);
        let statement = Statement::cosign_signature(None, &image(), none());
        let bundle = Bundle::sign_statement(&signer, &statement).unwrap();
        let envelope = bundle.dsse_envelope.unwrap();
        let payload = STANDARD.decode(&envelope.payload).unwrap();
        let sig = STANDARD.decode(&envelope.signatures[0].sig).unwrap();
        let theirs =
            CosignVerificationKey::try_from_pem(signer.public_key().to_pem().as_bytes()).unwrap();
        theirs
            .verify_signature(Signature::Raw(&sig), &pae(&envelope.payload_type, &payload))
            .unwrap();
    }
}

/// A signer backed by sigstore-rs, so signatures come from the other implementation.
struct TheirSigner(sigstore::crypto::SigStoreSigner, PublicKey);

impl Signer for TheirSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, berth_trust::SignError> {
        self.0
            .sign(message)
            .map_err(|e| berth_trust::SignError::Failed(e.to_string()))
    }

    fn verification_material(&self) -> berth_trust::bundle::VerificationMaterial {
        berth_trust::bundle::VerificationMaterial::public_key_hint(self.1.hint())
    }
}

fn their_signer(scheme: SigningScheme) -> TheirSigner {
    let signer = scheme.create_signer().unwrap();
    let pem = signer
        .to_sigstore_keypair()
        .unwrap()
        .public_key_to_pem()
        .unwrap();
    let public = PublicKey::from_pem(pem.as_bytes()).unwrap();
    TheirSigner(signer, public)
}

#[test]
fn sigstores_signatures_verify_with_us() {
    for scheme in [
        SigningScheme::ECDSA_P256_SHA256_ASN1,
        SigningScheme::ECDSA_P384_SHA384_ASN1,
        SigningScheme::ED25519,
    ] {
        let their = their_signer(scheme);
        let digest = image();
        let req = Requirements::signature(&their.1, &digest, none());

        // Simple signing, in a legacy .sig manifest.
        let payload = Payload::new("registry.test/app", &digest, none());
        let bytes = payload.to_bytes().unwrap();
        let signature = STANDARD.encode(their.0.sign(&bytes).unwrap());
        let signed = SignedPayload {
            payload: bytes.clone(),
            signature,
        };
        let artifact = append_legacy_layer(None, LegacyLayer::signature(&signed)).unwrap();
        let manifest = Manifest::from_json(&artifact.manifest).unwrap();
        verify_legacy_layer(&manifest.layers[0], &bytes, &req).unwrap();

        // A bundle whose DSSE signature sigstore-rs made.
        let statement = Statement::cosign_signature(None, &digest, none());
        let bundle = Bundle::sign_statement(&their, &statement)
            .unwrap()
            .to_json()
            .unwrap();
        let verdict = verify_bundle(&bundle, &req).unwrap();
        assert_eq!(verdict.key_fingerprint, their.1.fingerprint());
    }
}

#[test]
fn published_cosign_signature_verifies_with_us() {
    // A signature made by cosign, from sigstore-rs's tests (src/crypto): its public key,
    // the simple-signing payload it signed, and the base64 signature.
    const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu
OSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==
-----END PUBLIC KEY-----";
    const PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"registry-testing.svc.lan/busybox"},"image":{"docker-manifest-digest":"sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"},"type":"cosign container image signature"},"optional":null}"#;
    const SIGNATURE: &str = "MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=";
    let key = PublicKey::from_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let digest: Digest = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"
        .parse()
        .unwrap();
    let verdict = verify_simple_signing(
        PAYLOAD.as_bytes(),
        SIGNATURE,
        &Requirements::signature(&key, &digest, none()),
    )
    .unwrap();
    assert_eq!(
        verdict.identity.as_deref(),
        Some("registry-testing.svc.lan/busybox")
    );
    let other = Digest::sha256(b"x");
    assert!(matches!(
        verify_simple_signing(
            PAYLOAD.as_bytes(),
            SIGNATURE,
            &Requirements::signature(&key, &other, none())
        ),
        Err(VerifyError::DigestMismatch { .. })
    ));
}

#[test]
fn dsse_envelope_with_their_signature_and_a_key_id_verifies() {
    let their = their_signer(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let digest = image();
    let statement = Statement::new(
        None,
        &digest,
        "https://example.test/p/v1",
        serde_json::json!({"a": 1}),
        none(),
    );
    let payload = statement.to_bytes().unwrap();
    let sig = their.0.sign(&pae(PAYLOAD_TYPE, &payload)).unwrap();
    let envelope = Envelope {
        payload: STANDARD.encode(&payload),
        payload_type: PAYLOAD_TYPE.to_string(),
        signatures: vec![
            // A signature by someone else first: any one valid signature counts.
            EnvelopeSignature {
                sig: STANDARD.encode([0u8; 70]),
                keyid: "other".into(),
            },
            EnvelopeSignature {
                sig: STANDARD.encode(sig),
                keyid: "theirs".into(),
            },
        ],
    };
    let json = envelope.to_json().unwrap();
    let verdict = berth_trust::verify::verify_legacy_attestation(
        &json,
        &Requirements::attestation(&their.1, &digest, Some("https://example.test/p/v1"), none()),
    )
    .unwrap();
    assert_eq!(verdict.predicate_type, "https://example.test/p/v1");
}
