//! in-toto v1 statements: what an attestation (or a cosign v3 signature) says about an
//! image, and the predicate type names `cosign attest --type` accepts.

use std::collections::BTreeMap;

use berth_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::error::FormatError;

/// `_type` of an in-toto v1 statement.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// `_type` of the in-toto v0.1 statements older cosign versions wrote (read only).
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// DSSE `payloadType` of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type of a cosign v3 image signature (`cosign sign` with bundles): a
/// statement with an empty predicate whose subject is the signed digest.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// `cosign attest --type` names and the predicate type URIs they stand for, as cosign
/// maps them (`options.PredicateTypeMap`).
pub const PREDICATE_TYPES: [(&str, &str); 11] = [
    ("custom", "https://cosign.sigstore.dev/attestation/v1"),
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", "https://slsa.dev/provenance/v1"),
    ("spdx", "https://spdx.dev/Document"),
    ("spdxjson", "https://spdx.dev/Document"),
    ("cyclonedx", "https://cyclonedx.org/bom"),
    ("link", "https://in-toto.io/Link/v1"),
    ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("openvex", "https://openvex.dev/ns"),
    ("sign", COSIGN_SIGN_PREDICATE),
];

/// The predicate type URI of a `--type` value: a known name, or the value itself when
/// it is an absolute URI (`scheme://...`).
pub fn predicate_type_uri(name: &str) -> Result<String, FormatError> {
    if let Some((_, uri)) = PREDICATE_TYPES.iter().find(|(n, _)| *n == name) {
        return Ok((*uri).to_string());
    }
    let is_uri = name.split_once("://").is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && !rest.is_empty()
            && !rest.contains(char::is_whitespace)
    });
    if is_uri {
        Ok(name.to_string())
    } else {
        Err(FormatError::PredicateType(name.to_string()))
    }
}

/// An in-toto statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    #[serde(default)]
    pub predicate: serde_json::Value,
}

/// One subject of a statement: a name and its digests (`{"sha256": "<hex>"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
    /// cosign v3 puts `sign -a key=value` annotations here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, serde_json::Value>>,
}

impl Subject {
    /// Whether this subject names `digest` (same algorithm and hex).
    pub fn matches(&self, digest: &Digest) -> bool {
        self.digest
            .get(digest.algorithm().as_str())
            .is_some_and(|hex| hex.eq_ignore_ascii_case(digest.hex()))
    }
}

impl Statement {
    /// A v1 statement about one image.
    ///
    /// `name` is the image's repository as the signer names it (cosign v3 leaves it
    /// out); `annotations` become the subject's annotations, where cosign v3 puts
    /// `sign -a` values.
    pub fn new(
        name: Option<&str>,
        digest: &Digest,
        predicate_type: &str,
        predicate: serde_json::Value,
        annotations: &BTreeMap<String, String>,
    ) -> Statement {
        let annotations = (!annotations.is_empty()).then(|| {
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect()
        });
        Statement {
            statement_type: STATEMENT_V1.to_string(),
            subject: vec![Subject {
                name: name.map(str::to_string),
                digest: BTreeMap::from([(
                    digest.algorithm().as_str().to_string(),
                    digest.hex().to_string(),
                )]),
                annotations,
            }],
            predicate_type: predicate_type.to_string(),
            predicate,
        }
    }

    /// The statement of a cosign v3 image signature: predicate type
    /// [`COSIGN_SIGN_PREDICATE`] and an empty predicate.
    pub fn cosign_signature(
        name: Option<&str>,
        digest: &Digest,
        annotations: &BTreeMap<String, String>,
    ) -> Statement {
        Statement::new(
            name,
            digest,
            COSIGN_SIGN_PREDICATE,
            serde_json::Value::Object(serde_json::Map::new()),
            annotations,
        )
    }

    /// The JSON bytes that get signed.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        serde_json::to_vec(self).map_err(|e| FormatError::Serialise(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicate_names_map_as_cosign_does() {
        assert_eq!(
            predicate_type_uri("slsaprovenance").unwrap(),
            "https://slsa.dev/provenance/v0.2"
        );
        assert_eq!(
            predicate_type_uri("spdxjson").unwrap(),
            "https://spdx.dev/Document"
        );
        assert_eq!(
            predicate_type_uri("cyclonedx").unwrap(),
            "https://cyclonedx.org/bom"
        );
        assert_eq!(
            predicate_type_uri("custom").unwrap(),
            "https://cosign.sigstore.dev/attestation/v1"
        );
        assert_eq!(
            predicate_type_uri("https://example.com/predicate/v1").unwrap(),
            "https://example.com/predicate/v1"
        );
        assert!(predicate_type_uri("sbom").is_err());
        assert!(predicate_type_uri("://nothing").is_err());
        assert!(predicate_type_uri("http://a b").is_err());
    }

    #[test]
    fn statement_json_has_the_in_toto_field_names() {
        let digest = Digest::sha256(b"image");
        let s = Statement::cosign_signature(
            Some("registry.test/app"),
            &digest,
            &BTreeMap::from([("team".to_string(), "core".to_string())]),
        );
        let v: serde_json::Value = serde_json::from_slice(&s.to_bytes().unwrap()).unwrap();
        assert_eq!(v["_type"], STATEMENT_V1);
        assert_eq!(v["predicateType"], COSIGN_SIGN_PREDICATE);
        assert_eq!(v["predicate"], serde_json::json!({}));
        assert_eq!(v["subject"][0]["name"], "registry.test/app");
        assert_eq!(v["subject"][0]["digest"]["sha256"], digest.hex());
        assert_eq!(v["subject"][0]["annotations"]["team"], "core");
        assert!(s.subject[0].matches(&digest));
        assert!(!s.subject[0].matches(&Digest::sha256(b"other")));
    }
}
