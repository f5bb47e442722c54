//! cosign v2's "simple signing" signatures: a JSON payload naming the image's manifest
//! digest, signed as is (ECDSA over its SHA-256), stored as a layer of the
//! `sha256-<hex>.sig` manifest with the base64 signature in the layer's
//! `dev.cosignproject.cosign/signature` annotation.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{FormatError, SignError};
use crate::signer::Signer;

/// The layer media type of a simple-signing payload.
pub const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The simple-signing payload:
/// `{"critical":{"identity":{"docker-reference":..},"image":{"docker-manifest-digest":..},
/// "type":"cosign container image signature"},"optional":{..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub critical: Critical,
    /// Annotations (`cosign sign -a k=v`); cosign writes `null` when there are none.
    #[serde(default)]
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload signing `digest` of the repository `docker_reference` (cosign writes
    /// the repository without tag or digest, e.g. `registry.example.com/team/app`).
    pub fn new(
        docker_reference: &str,
        digest: &Digest,
        annotations: &BTreeMap<String, String>,
    ) -> Payload {
        let optional = (!annotations.is_empty()).then(|| {
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect()
        });
        Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: docker_reference.to_string(),
                },
                image: Image {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: SIGNATURE_TYPE.to_string(),
            },
            optional,
        }
    }

    /// The JSON bytes that get signed and stored as the layer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        serde_json::to_vec(self).map_err(|e| FormatError::Serialise(e.to_string()))
    }

    /// An annotation's value as text (non-string JSON values as their JSON).
    pub fn annotation(&self, key: &str) -> Option<String> {
        self.optional.as_ref()?.get(key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// A signed payload: the layer's bytes and its signature annotation's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload {
    pub payload: Vec<u8>,
    /// The signature in standard base64.
    pub signature: String,
}

/// Signs a payload.
pub fn sign(signer: &dyn Signer, payload: &Payload) -> Result<SignedPayload, SignError> {
    let bytes = payload
        .to_bytes()
        .map_err(|e| SignError::Serialise(e.to_string()))?;
    let signature = STANDARD.encode(signer.sign(&bytes)?);
    Ok(SignedPayload {
        payload: bytes,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_json_is_cosigns() {
        let digest = Digest::sha256(b"m");
        let p = Payload::new("registry.test/app", &digest, &BTreeMap::new());
        assert_eq!(
            String::from_utf8(p.to_bytes().unwrap()).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"registry.test/app\"}},\
                 \"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\
                 \"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        let annotated = Payload::new(
            "registry.test/app",
            &digest,
            &BTreeMap::from([("env".to_string(), "prod".to_string())]),
        );
        let v: serde_json::Value = serde_json::from_slice(&annotated.to_bytes().unwrap()).unwrap();
        assert_eq!(v["optional"]["env"], "prod");
        assert_eq!(annotated.annotation("env").as_deref(), Some("prod"));
        assert_eq!(annotated.annotation("other"), None);
    }
}
