//! Sigstore bundles v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`), the JSON
//! form of the protobuf `Bundle` that cosign v3 attaches to images.
//!
//! Berth writes bundles holding a DSSE envelope over an in-toto statement, with a
//! public key hint as verification material (no transparency log entry and no
//! timestamp: those come from the public Sigstore services). Reading accepts any bundle
//! shape so that verification can say precisely what it does not support.

use serde::{Deserialize, Serialize};

use crate::dsse::Envelope;
use crate::error::{SignError, VerifyError};
use crate::intoto::{Statement, PAYLOAD_TYPE};
use crate::signer::Signer;

/// The media type of a v0.3 bundle (and the artifact type of its OCI referrer).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The same version in the newer media type spelling, accepted when reading.
const BUNDLE_MEDIA_TYPE_PARAM: &str = "application/vnd.dev.sigstore.bundle+json;version=0.3";

/// A Sigstore bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsse_envelope: Option<Envelope>,
    /// A message signature (of a blob); kept to say it is unsupported for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_signature: Option<serde_json::Value>,
}

/// How a verifier finds the key: a public key hint, or (keyless) certificates, plus
/// transparency log entries and timestamps, kept as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyIdentifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tlog_entries: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_verification_data: Option<serde_json::Value>,
}

impl VerificationMaterial {
    /// Material naming a public key by its hint.
    pub fn public_key_hint(hint: String) -> VerificationMaterial {
        VerificationMaterial {
            public_key: Some(PublicKeyIdentifier { hint }),
            ..VerificationMaterial::default()
        }
    }
}

/// `verificationMaterial.publicKey`: an unauthenticated hint naming the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyIdentifier {
    #[serde(default)]
    pub hint: String,
}

impl Bundle {
    /// Signs an in-toto statement into a bundle with a DSSE envelope.
    pub fn sign_statement(signer: &dyn Signer, statement: &Statement) -> Result<Bundle, SignError> {
        let payload = statement
            .to_bytes()
            .map_err(|e| SignError::Serialise(e.to_string()))?;
        Ok(Bundle {
            media_type: BUNDLE_MEDIA_TYPE.to_string(),
            verification_material: signer.verification_material(),
            dsse_envelope: Some(Envelope::sign(signer, PAYLOAD_TYPE, &payload)?),
            message_signature: None,
        })
    }

    pub fn to_json(&self) -> Result<Vec<u8>, SignError> {
        serde_json::to_vec(self).map_err(|e| SignError::Serialise(e.to_string()))
    }

    /// Reads a bundle's JSON, refusing other media types.
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, VerifyError> {
        let bundle: Bundle =
            serde_json::from_slice(bytes).map_err(|e| VerifyError::malformed("bundle", e))?;
        if !is_bundle_v03(&bundle.media_type) {
            return Err(VerifyError::Unsupported(format!(
                "bundle media type {:?} (expected {BUNDLE_MEDIA_TYPE})",
                bundle.media_type
            )));
        }
        Ok(bundle)
    }
}

/// Whether a media type names a v0.3 bundle.
pub fn is_bundle_v03(media_type: &str) -> bool {
    media_type == BUNDLE_MEDIA_TYPE || media_type == BUNDLE_MEDIA_TYPE_PARAM
}
