//! Signing images and attaching attestations in a registry, in the two layouts cosign
//! reads: what `berth sign`, `berth attest` and `berth publish --sign-key` share.
//!
//! **What gets signed.** A reference is resolved once, with `HEAD`, to the digest,
//! media type and size of its manifest ([`resolve`]); that digest is what is signed, so
//! a tag moving meanwhile cannot make the signature cover another image. `HEAD` is
//! used rather than `GET` because a registry that refuses to serve unsigned images
//! (Berth's trust policy) still answers `HEAD` to callers who may push. With
//! `recursive`, an index's children are signed too (this needs the index's content).
//!
//! **Formats** ([`Format`]):
//! - [`Format::Bundle`], cosign v3's default: a Sigstore bundle v0.3 holding a DSSE
//!   envelope over an in-toto statement (predicate `https://sigstore.dev/cosign/sign/v1`
//!   for a signature), pushed by digest as an OCI 1.1 referrer of the image
//!   ([`berth_trust::oci::bundle_referrer`]). On a registry without the referrers API,
//!   [`Registry::put_manifest`] lists it in the referrers tag schema's index, with the
//!   manifest's `artifactType` and annotations (see [`crate::referrers`]).
//! - [`Format::Legacy`], cosign v2: a simple-signing payload (or, for an attestation, a
//!   DSSE envelope) appended as a layer to the manifest tagged `sha256-<hex>.sig` (or
//!   `.att`), which is read first so that earlier signatures are kept.
//!
//! Blobs are uploaded before the manifest that names them. Nothing here reads keys or
//! prompts: the caller hands in a [`Signer`], which is also where keyless signing
//! (Fulcio, Rekor) would plug in; it needs the public Sigstore services and is not
//! implemented.
//!
//! Layers call one way: commands and `publish` → this module → the registry client and
//! `berth_trust`. Nothing here prints.

use std::collections::BTreeMap;

use berth_oci::{media_types as mt, Descriptor, Digest, Reference, RepoName, Tag};
use berth_trust::bundle::Bundle;
use berth_trust::dsse::Envelope;
use berth_trust::intoto::{Statement, COSIGN_SIGN_PREDICATE, PAYLOAD_TYPE};
use berth_trust::oci::{
    append_legacy_layer, bundle_referrer, legacy_tag, Artifact, LegacyKind, LegacyLayer,
    SubjectDescriptor,
};
use berth_trust::simple_signing::{self, Payload};
use berth_trust::Signer;
use bytes::Bytes;
use serde::Serialize;

use crate::error::ClientError;
use crate::image::Manifest;
use crate::reference::ImageRef;
use crate::registry::Registry;

/// Where and how a signature is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// cosign v3: a Sigstore bundle as an OCI 1.1 referrer.
    Bundle,
    /// cosign v2: a layer of the `sha256-<hex>.sig` or `.att` manifest.
    Legacy,
}

/// What is signed about an image.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// An image signature (cosign `sign`).
    Signature,
    /// An attestation (cosign `attest`): an in-toto statement with this predicate.
    Attestation {
        /// The predicate type URI (see [`berth_trust::intoto::predicate_type_uri`]).
        predicate_type: String,
        /// The predicate, as read from the user's file.
        predicate: serde_json::Value,
    },
}

impl Claim {
    /// The predicate type the stored artifact carries.
    pub fn predicate_type(&self) -> &str {
        match self {
            Claim::Signature => COSIGN_SIGN_PREDICATE,
            Claim::Attestation { predicate_type, .. } => predicate_type,
        }
    }

    fn is_signature(&self) -> bool {
        matches!(self, Claim::Signature)
    }
}

/// How to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOptions {
    pub format: Format,
    /// For an index, sign every child manifest too.
    pub recursive: bool,
    /// Signed annotations (`-a key=value`): the simple-signing payload's `optional`
    /// map, the in-toto subject's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The bundle referrer's `org.opencontainers.image.created` (RFC 3339); `None`
    /// for now. It is not signed.
    pub created: Option<String>,
}

impl Default for SignOptions {
    fn default() -> SignOptions {
        SignOptions {
            format: Format::Bundle,
            recursive: false,
            annotations: BTreeMap::new(),
            created: None,
        }
    }
}

/// One signature or attestation that was pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signed {
    /// The signed manifest.
    pub subject: Digest,
    /// The signed manifest's media type.
    pub subject_media_type: String,
    pub format: Format,
    /// The statement's predicate type ([`COSIGN_SIGN_PREDICATE`] for signatures).
    pub predicate_type: String,
    /// The manifest pushed: the bundle referrer, or the new `.sig`/`.att` manifest.
    pub artifact: Digest,
    /// The tag of a legacy artifact (`sha256-<hex>.sig`); none for a referrer.
    pub tag: Option<String>,
    /// Layers of the legacy manifest after this push (earlier signatures are kept).
    pub layers: Option<usize>,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// Talking to the registry failed (its own exit code applies).
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The signer refused or failed.
    #[error("cannot sign {digest}: {source}")]
    Sign {
        digest: Digest,
        #[source]
        source: berth_trust::SignError,
    },
    /// The payload or the manifest carrying it could not be built (for instance an
    /// existing `.sig` manifest that is not a manifest).
    #[error("cannot build the signature of {digest}: {source}")]
    Format {
        digest: Digest,
        #[source]
        source: berth_trust::FormatError,
    },
}

/// Resolves `reference` in `repo` once, by `HEAD`, to its manifest's descriptor (digest,
/// media type, size). A reference by digest must be answered with that digest.
pub async fn resolve(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Descriptor, ClientError> {
    let what = format!("image {}/{repo}:{reference}", reg.host());
    let desc = reg
        .head_manifest(repo, reference)
        .await?
        .ok_or_else(|| ClientError::NotFound(what.clone()))?;
    if let Reference::Digest(d) = reference {
        if d != &desc.digest {
            return Err(ClientError::DigestMismatch {
                what,
                expected: d.clone(),
                actual: desc.digest,
            });
        }
    }
    Ok(desc)
}

/// The manifests to sign for `image`: its manifest (resolved once) and, with
/// `recursive` and an index, each child, in the index's order.
pub async fn subjects(
    reg: &Registry,
    image: &ImageRef,
    recursive: bool,
) -> Result<Vec<Descriptor>, ClientError> {
    let root = resolve(reg, &image.repository, &image.reference()).await?;
    let mut out = vec![root.clone()];
    if recursive && mt::is_index(&root.media_type) {
        let index = reg
            .get_manifest(&image.repository, &Reference::Digest(root.digest.clone()))
            .await?;
        out.extend(index.parse()?.manifests);
    }
    Ok(out)
}

/// Signs `image` (and with `opts.recursive` its children) with `signer`: resolves it
/// once, then pushes one signature or attestation per manifest, in order.
pub async fn sign_image(
    reg: &Registry,
    image: &ImageRef,
    signer: &dyn Signer,
    claim: &Claim,
    opts: &SignOptions,
) -> Result<Vec<Signed>, SigningError> {
    let name = image.name();
    let mut out = Vec::new();
    for subject in subjects(reg, image, opts.recursive).await? {
        out.push(sign_subject(reg, &image.repository, &name, &subject, signer, claim, opts).await?);
    }
    Ok(out)
}

/// Signs one manifest of `repo` that the caller has resolved (`subject`), naming the
/// image `name` (`registry/repository`, as cosign writes it) in the signed payload.
/// `opts.recursive` is ignored: the caller chose the manifests.
pub async fn sign_subject(
    reg: &Registry,
    repo: &RepoName,
    name: &str,
    subject: &Descriptor,
    signer: &dyn Signer,
    claim: &Claim,
    opts: &SignOptions,
) -> Result<Signed, SigningError> {
    let digest = &subject.digest;
    let sign_err = |source| SigningError::Sign {
        digest: digest.clone(),
        source,
    };
    let format_err = |source| SigningError::Format {
        digest: digest.clone(),
        source,
    };
    let statement = || match claim {
        Claim::Signature => Statement::cosign_signature(Some(name), digest, &opts.annotations),
        Claim::Attestation {
            predicate_type,
            predicate,
        } => Statement::new(
            Some(name),
            digest,
            predicate_type,
            predicate.clone(),
            &opts.annotations,
        ),
    };
    let mut signed = Signed {
        subject: digest.clone(),
        subject_media_type: subject.media_type.clone(),
        format: opts.format,
        predicate_type: claim.predicate_type().to_owned(),
        artifact: digest.clone(),
        tag: None,
        layers: None,
    };
    match opts.format {
        Format::Bundle => {
            let bundle = Bundle::sign_statement(signer, &statement())
                .and_then(|b| b.to_json())
                .map_err(sign_err)?;
            let created = opts
                .created
                .clone()
                .unwrap_or_else(|| berth_oci::time::rfc3339(berth_oci::time::now()));
            let target = SubjectDescriptor {
                media_type: subject.media_type.clone(),
                digest: digest.clone(),
                size: subject.size,
            };
            let artifact = bundle_referrer(bundle, &target, claim.predicate_type(), &created)
                .map_err(format_err)?;
            let reference = Reference::Digest(artifact.manifest_digest.clone());
            signed.artifact = push(reg, repo, &reference, artifact).await?;
        }
        Format::Legacy => {
            let (kind, layer) = if claim.is_signature() {
                let payload = Payload::new(name, digest, &opts.annotations);
                let sig = simple_signing::sign(signer, &payload).map_err(sign_err)?;
                (LegacyKind::Signature, LegacyLayer::signature(&sig))
            } else {
                let statement = statement().to_bytes().map_err(format_err)?;
                let envelope = Envelope::sign(signer, PAYLOAD_TYPE, &statement)
                    .and_then(|e| e.to_json())
                    .map_err(sign_err)?;
                (
                    LegacyKind::Attestation,
                    LegacyLayer::attestation(envelope, claim.predicate_type()),
                )
            };
            let tag = Tag::parse(&legacy_tag(digest, kind))
                .map_err(|e| ClientError::invalid(format!("the legacy tag of {digest}"), e))?;
            let reference = Reference::Tag(tag.clone());
            let existing = match reg.get_manifest(repo, &reference).await {
                Ok(m) => Some(m.bytes),
                Err(ClientError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let artifact = append_legacy_layer(existing.as_deref(), layer).map_err(format_err)?;
            let layers = berth_trust::oci::Manifest::from_json(&artifact.manifest)
                .map(|m| m.layers.len())
                .ok();
            signed.artifact = push(reg, repo, &reference, artifact).await?;
            signed.tag = Some(tag.to_string());
            signed.layers = layers;
        }
    }
    tracing::debug!(subject = %digest, artifact = %signed.artifact, "signed");
    Ok(signed)
}

/// Uploads an artifact's blobs, then its manifest under `reference`; returns the
/// manifest's digest.
async fn push(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    artifact: Artifact,
) -> Result<Digest, ClientError> {
    for blob in artifact.blobs {
        let desc = Descriptor {
            media_type: blob.media_type,
            digest: blob.digest,
            size: blob.bytes.len() as u64,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        };
        reg.put_blob_bytes(repo, &desc, Bytes::from(blob.bytes))
            .await?;
    }
    let m = Manifest::from_bytes(Bytes::from(artifact.manifest), Some(artifact.media_type))?;
    reg.put_manifest(repo, reference, &m).await?;
    Ok(m.digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_name_their_predicate_type() {
        assert_eq!(Claim::Signature.predicate_type(), COSIGN_SIGN_PREDICATE);
        let att = Claim::Attestation {
            predicate_type: "https://spdx.dev/Document".into(),
            predicate: serde_json::json!({}),
        };
        assert_eq!(att.predicate_type(), "https://spdx.dev/Document");
        assert!(Claim::Signature.is_signature());
        assert!(!att.is_signature());
    }

    #[test]
    fn signed_reports_serialise_for_json_output() {
        let s = Signed {
            subject: Digest::sha256(b"image"),
            subject_media_type: mt::OCI_MANIFEST.into(),
            format: Format::Legacy,
            predicate_type: COSIGN_SIGN_PREDICATE.into(),
            artifact: Digest::sha256(b"sig"),
            tag: Some("sha256-x.sig".into()),
            layers: Some(2),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["format"], "legacy");
        assert_eq!(v["subject"], Digest::sha256(b"image").to_string());
        assert_eq!(v["layers"], 2);
        assert_eq!(
            serde_json::to_value(Format::Bundle).unwrap(),
            serde_json::json!("bundle")
        );
    }
}
