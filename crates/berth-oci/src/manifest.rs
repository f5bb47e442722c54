//! Tolerant parsing of manifests into what a registry needs to know.
//!
//! The registry stores and serves the exact bytes it was given; this module only reads
//! them to learn the kind, the blobs and child manifests they reference, the `subject`,
//! the artifact type, the platforms and the annotations. Unknown fields are ignored so
//! that any artifact (Helm chart, SBOM, signature, cache) is accepted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_types as mt;

/// The four manifest kinds a registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerManifestList,
}

impl ManifestKind {
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::OciManifest => mt::OCI_MANIFEST,
            ManifestKind::OciIndex => mt::OCI_INDEX,
            ManifestKind::DockerManifest => mt::DOCKER_MANIFEST,
            ManifestKind::DockerManifestList => mt::DOCKER_MANIFEST_LIST,
        }
    }

    pub fn from_media_type(s: &str) -> Option<ManifestKind> {
        match s {
            mt::OCI_MANIFEST => Some(ManifestKind::OciManifest),
            mt::OCI_INDEX => Some(ManifestKind::OciIndex),
            mt::DOCKER_MANIFEST => Some(ManifestKind::DockerManifest),
            mt::DOCKER_MANIFEST_LIST => Some(ManifestKind::DockerManifestList),
            _ => None,
        }
    }

    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::OciIndex | ManifestKind::DockerManifestList
        )
    }
}

/// Why a manifest body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON for its media type: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2, found {0}")]
    SchemaVersion(i64),
    #[error("manifest mediaType {body:?} does not match the Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("manifest media type {0:?} is not supported (OCI image manifest or index, Docker schema 2 manifest or manifest list)")]
    UnsupportedMediaType(String),
    #[error("image manifest has no config descriptor")]
    MissingConfig,
    #[error("index has no manifests list")]
    MissingManifests,
}

/// A platform as given in an index entry or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// What a registry learns from a manifest body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// Strips parameters (`; charset=utf-8`) and whitespace from a Content-Type value.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

impl ParsedManifest {
    /// Parses a manifest body. `content_type` is the request's Content-Type, if any.
    pub fn parse(
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<ParsedManifest, ManifestError> {
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        let header = content_type.map(essence).filter(|h| {
            !h.is_empty() && *h != "application/json" && *h != "application/octet-stream"
        });
        if let (Some(body), Some(header)) = (&raw.media_type, header) {
            if body != header {
                return Err(ManifestError::MediaTypeMismatch {
                    body: body.clone(),
                    header: header.to_owned(),
                });
            }
        }
        let kind = match raw.media_type.as_deref().or(header) {
            Some(t) => ManifestKind::from_media_type(t)
                .ok_or_else(|| ManifestError::UnsupportedMediaType(t.to_owned()))?,
            None if raw.manifests.is_some() => ManifestKind::OciIndex,
            None => ManifestKind::OciManifest,
        };
        match raw.schema_version {
            Some(2) => {}
            Some(v) => return Err(ManifestError::SchemaVersion(v)),
            None => return Err(ManifestError::SchemaVersion(0)),
        }
        let manifests = if kind.is_index() {
            raw.manifests.ok_or(ManifestError::MissingManifests)?
        } else {
            if raw.config.is_none() {
                return Err(ManifestError::MissingConfig);
            }
            Vec::new()
        };
        Ok(ParsedManifest {
            kind,
            config: if kind.is_index() { None } else { raw.config },
            layers: if kind.is_index() {
                Vec::new()
            } else {
                raw.layers
            },
            manifests,
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        })
    }

    /// Blobs that must exist in the repository for this manifest to be accepted:
    /// the config and every layer, except foreign layers fetched from their `urls`.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        let fetched_elsewhere = |l: &&Descriptor| {
            !l.urls.is_empty()
                && (l.media_type == mt::DOCKER_FOREIGN_LAYER
                    || l.media_type.contains("nondistributable"))
        };
        self.config
            .iter()
            .chain(self.layers.iter().filter(move |l| !fetched_elsewhere(l)))
    }

    /// The artifact type the referrers API reports: `artifactType`, else the config's media type.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn parses_oci_manifest_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/spdx+json",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/spdx+json","digest":"{}","size":10}}],
            "subject":{{"mediaType":"{}","digest":"{}","size":5}},
            "annotations":{{"a":"b"}}}}"#,
            mt::OCI_MANIFEST,
            d(1),
            d(2),
            mt::OCI_MANIFEST,
            d(3)
        );
        let m = ParsedManifest::parse(body.as_bytes(), Some(mt::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::OciManifest);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(m.subject.unwrap().digest.to_string(), d(3));
        assert_eq!(m.artifact_type.as_deref(), Some("application/spdx+json"));
        assert_eq!(m.annotations["a"], "b");
    }

    #[test]
    fn index_from_content_type_only() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":1,
            "platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            mt::DOCKER_MANIFEST,
            d(4)
        );
        let m = ParsedManifest::parse(body.as_bytes(), Some(mt::DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(m.kind, ManifestKind::DockerManifestList);
        assert_eq!(
            m.manifests[0].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );
        // Without any type information an object with "manifests" is an OCI index.
        let m = ParsedManifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::OciIndex);
    }

    #[test]
    fn refusals() {
        let ok_cfg = format!(
            r#""config":{{"mediaType":"x","digest":"{}","size":1}}"#,
            d(1)
        );
        let mismatch = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}",{ok_cfg}}}"#,
            mt::OCI_MANIFEST
        );
        assert!(matches!(
            ParsedManifest::parse(mismatch.as_bytes(), Some(mt::DOCKER_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            ParsedManifest::parse(b"not json", None),
            Err(ManifestError::Json(_))
        ));
        let v1 = format!(r#"{{"schemaVersion":1,{ok_cfg}}}"#);
        assert_eq!(
            ParsedManifest::parse(v1.as_bytes(), None),
            Err(ManifestError::SchemaVersion(1))
        );
        assert!(matches!(
            ParsedManifest::parse(br#"{"schemaVersion":2}"#, Some(mt::OCI_MANIFEST)),
            Err(ManifestError::MissingConfig)
        ));
        assert!(matches!(
            ParsedManifest::parse(br#"{"schemaVersion":2}"#, Some("text/plain")),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let bad_digest =
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1}}"#;
        assert!(matches!(
            ParsedManifest::parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Json(_))
        ));
    }
}
