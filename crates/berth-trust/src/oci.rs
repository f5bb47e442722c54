//! The OCI manifests that carry signatures and attestations, built and read as bytes.
//!
//! - The cosign v3 layout (cosign's `specs/BUNDLE_SPEC.md`): an OCI 1.1 referrer whose
//!   `artifactType` and only layer are a Sigstore bundle, with the empty config `{}`, the
//!   signed image as `subject`, and the `dev.sigstore.bundle.content`,
//!   `dev.sigstore.bundle.predicateType` and `org.opencontainers.image.created`
//!   annotations.
//! - The cosign v2 layout: a manifest tagged `sha256-<hex>.sig` (signatures) or
//!   `sha256-<hex>.att` (attestations) with one layer per signature; a new signature is
//!   appended to the existing manifest, whose image config lists every layer.
//!
//! Builders return the manifest bytes and the blobs to upload before it; readers return
//! what verification needs. Nothing here talks to a registry.

use std::collections::BTreeMap;

use berth_oci::media_types::{OCI_CONFIG, OCI_EMPTY, OCI_MANIFEST};
use berth_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::bundle::{is_bundle_v03, BUNDLE_MEDIA_TYPE};
use crate::dsse::ENVELOPE_MEDIA_TYPE;
use crate::error::{FormatError, VerifyError};
use crate::simple_signing::{self, SignedPayload};

/// Manifest annotation: what the bundle holds (`dsse-envelope` or `message-signature`).
pub const BUNDLE_CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
/// Manifest annotation: the predicate type of the bundle's in-toto statement.
pub const BUNDLE_PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// Manifest annotation: when the bundle was made (RFC 3339).
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// Layer annotation: a file name for the layer.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Layer annotation of a legacy attestation: its predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// The empty JSON object, the config of artifacts without one.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// A blob to upload (config or layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: Digest::sha256(&bytes),
            bytes,
        }
    }
}

/// A manifest to push and the blobs it needs that the repository may not have yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub media_type: &'static str,
    /// The config and new layers, to upload before the manifest.
    pub blobs: Vec<Blob>,
}

/// The image a referrer refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectDescriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// An OCI descriptor, as written in and read from manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    fn of(blob: &Blob, annotations: BTreeMap<String, String>) -> Descriptor {
        Descriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.to_string(),
            size: blob.bytes.len() as u64,
            artifact_type: None,
            annotations,
        }
    }
}

/// An image manifest, with the fields signature manifests use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads a manifest's JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, VerifyError> {
        serde_json::from_slice(bytes).map_err(|e| VerifyError::malformed("manifest", e))
    }

    /// What kind of signature artifact this manifest is, if any: a bundle referrer
    /// (by its artifact type or its layer), or a legacy manifest whose every layer is a
    /// simple signing (`.sig`) or a DSSE envelope (`.att`). The server uses it to keep
    /// signature artifacts pullable and to notice a signature arriving.
    pub fn signature_kind(&self) -> Option<SignatureArtifact> {
        let bundle_layer = |l: &Descriptor| is_bundle_v03(&l.media_type);
        if self.artifact_type.as_deref().is_some_and(is_bundle_v03)
            || (self.layers.len() == 1 && self.layers.iter().all(bundle_layer))
        {
            return Some(SignatureArtifact::Bundle);
        }
        if self.layers.is_empty() {
            return None;
        }
        if self
            .layers
            .iter()
            .all(|l| l.media_type == simple_signing::MEDIA_TYPE)
        {
            Some(SignatureArtifact::Legacy(LegacyKind::Signature))
        } else if self
            .layers
            .iter()
            .all(|l| l.media_type == ENVELOPE_MEDIA_TYPE)
        {
            Some(SignatureArtifact::Legacy(LegacyKind::Attestation))
        } else {
            None
        }
    }

    fn artifact(&self, blobs: Vec<Blob>) -> Result<Artifact, FormatError> {
        let manifest =
            serde_json::to_vec(self).map_err(|e| FormatError::Serialise(e.to_string()))?;
        Ok(Artifact {
            manifest_digest: Digest::sha256(&manifest),
            manifest,
            media_type: OCI_MANIFEST,
            blobs,
        })
    }
}

/// The tag of a legacy cosign signature (`.sig`) or attestation (`.att`) manifest of a
/// digest: `sha256-<hex>.sig`.
pub fn legacy_tag(digest: &Digest, suffix: LegacyKind) -> String {
    format!(
        "{}-{}.{}",
        digest.algorithm().as_str(),
        digest.hex(),
        suffix.tag_suffix()
    )
}

/// The referrers tag schema's fallback tag of a digest (`sha256-<hex>`), the tag of the
/// index listing its referrers on registries without the referrers API.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().as_str(), digest.hex())
}

/// The cosign v3 referrer manifest of a bundle.
///
/// `predicate_type` is the statement's (for `dev.sigstore.bundle.predicateType`),
/// `created` an RFC 3339 time. The blobs to upload are the empty config and the bundle.
pub fn bundle_referrer(
    bundle_json: Vec<u8>,
    subject: &SubjectDescriptor,
    predicate_type: &str,
    created: &str,
) -> Result<Artifact, FormatError> {
    let config = Blob::new(OCI_EMPTY, EMPTY_CONFIG.to_vec());
    let layer = Blob::new(BUNDLE_MEDIA_TYPE, bundle_json);
    let title = format!(
        "{}-{}.sigstore.json",
        layer.digest.algorithm().as_str(),
        layer.digest.hex()
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: Some(BUNDLE_MEDIA_TYPE.to_string()),
        config: Descriptor::of(&config, BTreeMap::new()),
        layers: vec![Descriptor::of(
            &layer,
            BTreeMap::from([(TITLE_ANNOTATION.to_string(), title)]),
        )],
        subject: Some(Descriptor {
            media_type: subject.media_type.clone(),
            digest: subject.digest.to_string(),
            size: subject.size,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }),
        annotations: BTreeMap::from([
            (
                BUNDLE_CONTENT_ANNOTATION.to_string(),
                "dsse-envelope".to_string(),
            ),
            (
                BUNDLE_PREDICATE_TYPE_ANNOTATION.to_string(),
                predicate_type.to_string(),
            ),
            (CREATED_ANNOTATION.to_string(), created.to_string()),
        ]),
    };
    manifest.artifact(vec![config, layer])
}

/// A manifest that carries signatures or attestations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureArtifact {
    /// A cosign v3 bundle referrer.
    Bundle,
    /// A cosign v2 `.sig` or `.att` manifest.
    Legacy(LegacyKind),
}

/// The two legacy (cosign v2) manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyKind {
    /// `.sig`: simple-signing layers.
    Signature,
    /// `.att`: DSSE envelope layers.
    Attestation,
}

impl LegacyKind {
    pub fn tag_suffix(self) -> &'static str {
        match self {
            LegacyKind::Signature => "sig",
            LegacyKind::Attestation => "att",
        }
    }
}

/// One layer of a legacy manifest: its bytes and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyLayer {
    pub blob: Blob,
    pub annotations: BTreeMap<String, String>,
}

impl LegacyLayer {
    /// The layer of a simple-signing signature.
    pub fn signature(signed: &SignedPayload) -> LegacyLayer {
        LegacyLayer {
            blob: Blob::new(simple_signing::MEDIA_TYPE, signed.payload.clone()),
            annotations: BTreeMap::from([(
                simple_signing::SIGNATURE_ANNOTATION.to_string(),
                signed.signature.clone(),
            )]),
        }
    }

    /// The layer of an attestation: the DSSE envelope's JSON, with cosign's empty
    /// signature annotation (the signature is inside the envelope) and the predicate
    /// type.
    pub fn attestation(envelope_json: Vec<u8>, predicate_type: &str) -> LegacyLayer {
        LegacyLayer {
            blob: Blob::new(ENVELOPE_MEDIA_TYPE, envelope_json),
            annotations: BTreeMap::from([
                (
                    simple_signing::SIGNATURE_ANNOTATION.to_string(),
                    String::new(),
                ),
                (
                    PREDICATE_TYPE_ANNOTATION.to_string(),
                    predicate_type.to_string(),
                ),
            ]),
        }
    }
}

/// The image config of a legacy signature manifest, as go-containerregistry writes it
/// for layers appended to an empty image: one diff id and one history entry per layer.
fn legacy_config(layers: &[Descriptor]) -> Result<Vec<u8>, FormatError> {
    let history: Vec<_> = layers
        .iter()
        .map(|_| serde_json::json!({"created": "0001-01-01T00:00:00Z"}))
        .collect();
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": history,
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    serde_json::to_vec(&config).map_err(|e| FormatError::Serialise(e.to_string()))
}

/// The legacy manifest with `layer` appended to `existing` (the current `.sig` or
/// `.att` manifest, if any). A layer identical to one already there (same digest and
/// annotations) is not added twice, as cosign does. The blobs to upload are the new
/// config and, when added, the new layer.
pub fn append_legacy_layer(
    existing: Option<&[u8]>,
    layer: LegacyLayer,
) -> Result<Artifact, FormatError> {
    let mut layers = match existing {
        Some(bytes) => {
            Manifest::from_json(bytes)
                .map_err(|e| FormatError::Manifest(e.to_string()))?
                .layers
        }
        None => Vec::new(),
    };
    let descriptor = Descriptor::of(&layer.blob, layer.annotations);
    let mut blobs = Vec::new();
    if !layers.contains(&descriptor) {
        layers.push(descriptor);
        blobs.push(layer.blob);
    }
    let config = Blob::new(OCI_CONFIG, legacy_config(&layers)?);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor::of(&config, BTreeMap::new()),
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    blobs.insert(0, config);
    manifest.artifact(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> SubjectDescriptor {
        SubjectDescriptor {
            media_type: berth_oci::media_types::OCI_INDEX.to_string(),
            digest: Digest::sha256(b"index"),
            size: 5,
        }
    }

    #[test]
    fn bundle_referrer_follows_the_bundle_spec() {
        let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#.to_vec();
        let a = bundle_referrer(
            bundle.clone(),
            &subject(),
            "https://sigstore.dev/cosign/sign/v1",
            "2026-12-01T00:00:00Z",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["artifactType"], BUNDLE_MEDIA_TYPE);
        assert_eq!(v["config"]["mediaType"], OCI_EMPTY);
        // The well-known digest of `{}`.
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["config"]["size"], 2);
        let layers = v["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], BUNDLE_MEDIA_TYPE);
        assert_eq!(layers[0]["digest"], Digest::sha256(&bundle).to_string());
        assert_eq!(layers[0]["size"], bundle.len());
        assert_eq!(
            layers[0]["annotations"][TITLE_ANNOTATION],
            format!("sha256-{}.sigstore.json", Digest::sha256(&bundle).hex())
        );
        assert_eq!(v["subject"]["digest"], subject().digest.to_string());
        assert_eq!(v["subject"]["size"], 5);
        assert_eq!(v["annotations"][BUNDLE_CONTENT_ANNOTATION], "dsse-envelope");
        assert_eq!(
            v["annotations"][BUNDLE_PREDICATE_TYPE_ANNOTATION],
            "https://sigstore.dev/cosign/sign/v1"
        );
        assert_eq!(v["annotations"][CREATED_ANNOTATION], "2026-12-01T00:00:00Z");
        assert_eq!(a.manifest_digest, Digest::sha256(&a.manifest));
        assert_eq!(a.blobs.len(), 2);
        assert_eq!(a.blobs[0].bytes, EMPTY_CONFIG);
        assert_eq!(a.blobs[1].bytes, bundle);
    }

    #[test]
    fn legacy_layers_append_and_deduplicate() {
        let first = LegacyLayer::signature(&SignedPayload {
            payload: b"one".to_vec(),
            signature: "c2ln".into(),
        });
        let second = LegacyLayer::signature(&SignedPayload {
            payload: b"two".to_vec(),
            signature: "c2lnMg==".into(),
        });
        let a = append_legacy_layer(None, first.clone()).unwrap();
        assert_eq!(a.blobs.len(), 2);
        let b = append_legacy_layer(Some(&a.manifest), second.clone()).unwrap();
        let m = Manifest::from_json(&b.manifest).unwrap();
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[0].digest, first.blob.digest.to_string());
        assert_eq!(m.layers[1].digest, second.blob.digest.to_string());
        assert_eq!(
            m.layers[1].annotations[simple_signing::SIGNATURE_ANNOTATION],
            "c2lnMg=="
        );
        assert_eq!(m.config.media_type, OCI_CONFIG);
        let config: serde_json::Value = serde_json::from_slice(&b.blobs[0].bytes).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([
                first.blob.digest.to_string(),
                second.blob.digest.to_string()
            ])
        );
        assert_eq!(m.config.digest, b.blobs[0].digest.to_string());

        // The same signature again adds nothing but keeps the manifest valid.
        let c = append_legacy_layer(Some(&b.manifest), second).unwrap();
        assert_eq!(Manifest::from_json(&c.manifest).unwrap().layers.len(), 2);
        assert_eq!(c.manifest, b.manifest);
        assert_eq!(c.blobs.len(), 1);
    }

    #[test]
    fn attestation_layers_carry_the_predicate_type() {
        let layer = LegacyLayer::attestation(b"{}".to_vec(), "https://spdx.dev/Document");
        assert_eq!(layer.blob.media_type, ENVELOPE_MEDIA_TYPE);
        assert_eq!(
            layer.annotations[PREDICATE_TYPE_ANNOTATION],
            "https://spdx.dev/Document"
        );
        assert_eq!(layer.annotations[simple_signing::SIGNATURE_ANNOTATION], "");
    }

    #[test]
    fn signature_artifacts_are_recognised() {
        let bundle = bundle_referrer(
            b"{}".to_vec(),
            &subject(),
            "https://sigstore.dev/cosign/sign/v1",
            "2026-12-01T00:00:00Z",
        )
        .unwrap();
        let kind = |bytes: &[u8]| Manifest::from_json(bytes).unwrap().signature_kind();
        assert_eq!(kind(&bundle.manifest), Some(SignatureArtifact::Bundle));
        let sig = append_legacy_layer(
            None,
            LegacyLayer::signature(&SignedPayload {
                payload: b"p".to_vec(),
                signature: "cw==".into(),
            }),
        )
        .unwrap();
        assert_eq!(
            kind(&sig.manifest),
            Some(SignatureArtifact::Legacy(LegacyKind::Signature))
        );
        let att =
            append_legacy_layer(None, LegacyLayer::attestation(b"{}".to_vec(), "x://y")).unwrap();
        assert_eq!(
            kind(&att.manifest),
            Some(SignatureArtifact::Legacy(LegacyKind::Attestation))
        );
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]}}"#,
            Digest::sha256(b"{}"),
            Digest::sha256(b"abc")
        );
        assert_eq!(kind(image.as_bytes()), None);
    }

    #[test]
    fn tags_of_a_digest() {
        let d = Digest::sha256(b"x");
        assert_eq!(
            legacy_tag(&d, LegacyKind::Signature),
            format!("sha256-{}.sig", d.hex())
        );
        assert_eq!(
            legacy_tag(&d, LegacyKind::Attestation),
            format!("sha256-{}.att", d.hex())
        );
        assert_eq!(referrers_tag(&d), format!("sha256-{}", d.hex()));
    }

    #[test]
    fn appending_to_garbage_is_an_error() {
        let layer = LegacyLayer::attestation(b"{}".to_vec(), "x://y");
        assert!(matches!(
            append_legacy_layer(Some(b"{\"schemaVersion\":"), layer),
            Err(FormatError::Manifest(_))
        ));
    }
}
