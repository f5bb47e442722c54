//! What an image is made of: kind, artifact type, annotations and subject, platforms of
//! an index, for an image its config (platform, entrypoint, env, labels, created) and
//! layers with sizes, and the manifests that refer to it (signatures, SBOMs) when the
//! source is a registry.
//!
//! [`inspect`] gathers an [`Inspection`] from any source; [`Inspection::to_text`] renders
//! it for people and serde renders it for scripts. Nothing here prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use berth_oci::{Descriptor, Digest, Platform};
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::copy::ImageSource;
use crate::error::{ClientError, Result};
use crate::image::{verify_stream, Manifest, PlatformFilter};
use crate::progress::human_bytes;

/// Largest config blob read into memory.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The part of an image config (`application/vnd.oci.image.config.v1+json`) shown.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
}

/// The `config` object of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ImageConfig {
    /// The platform the config declares.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            os_features: Vec::new(),
        }
    }
}

/// One entry of an index.
#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub platform: Option<String>,
    /// The entry's `artifactType` (an index of artifacts, or of an image and its
    /// attestations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One manifest whose `subject` is the inspected one (a signature, an SBOM...).
#[derive(Debug, Clone, Serialize)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    /// The referrer's `artifactType`, else its config's media type.
    pub artifact_type: Option<String>,
    pub size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl From<Descriptor> for Referrer {
    fn from(d: Descriptor) -> Referrer {
        Referrer {
            digest: d.digest,
            media_type: d.media_type,
            artifact_type: d.artifact_type,
            size: d.size,
            annotations: d.annotations,
        }
    }
}

/// One layer of an image.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// An image's config and layers.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub digest: Digest,
    pub config_digest: Digest,
    pub platform: String,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    /// Compressed size: config plus layers.
    pub total_size: u64,
}

/// What `berth inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The `artifactType` of an index or manifest, else the config media type of a
    /// manifest that is not an image (an artifact such as a Helm chart or a signature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifest this one refers to, when it is a referrer itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// The annotations of the index or manifest.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The entries when the reference names an index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<IndexEntry>,
    /// The image (the selected platform's, for an index inspected with a platform).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSummary>,
    /// The manifests referring to this one; absent when the source cannot list referrers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers: Option<Vec<Referrer>>,
}

/// True for the config media types of runnable images; other configs belong to artifacts
/// and are not read (they need not be JSON, let alone an image config).
fn is_image_config(media_type: &str) -> bool {
    media_type == berth_oci::media_types::OCI_CONFIG
        || media_type == berth_oci::media_types::DOCKER_CONFIG
}

/// Reads and verifies a config blob.
pub async fn read_config(src: &dyn ImageSource, desc: &Descriptor) -> Result<(Bytes, ImageConfig)> {
    if desc.size > MAX_CONFIG_BYTES {
        return Err(ClientError::Unsupported(format!(
            "config {} is larger than 16 MiB",
            desc.digest
        )));
    }
    let stream = verify_stream(src.blob(desc).await?, desc, Box::new(|_| {}));
    let parts: Vec<Bytes> = stream.try_collect().await?;
    let bytes = Bytes::from(parts.concat());
    let config = serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::invalid(format!("config {}", desc.digest), e))?;
    Ok((bytes, config))
}

async fn summarize(src: &dyn ImageSource, m: &Manifest) -> Result<ImageSummary> {
    let parsed = m.parse()?;
    let config_desc = parsed
        .config
        .ok_or_else(|| ClientError::invalid(src.describe(), "image manifest without config"))?;
    let config = if parsed.artifact_type.is_none() && is_image_config(&config_desc.media_type) {
        read_config(src, &config_desc).await?.1
    } else {
        ImageConfig::default()
    };
    let layers: Vec<Layer> = parsed
        .layers
        .iter()
        .map(|l| Layer {
            digest: l.digest.clone(),
            media_type: l.media_type.clone(),
            size: l.size,
        })
        .collect();
    Ok(ImageSummary {
        digest: m.digest.clone(),
        config_digest: config_desc.digest.clone(),
        platform: if config.os.is_empty() && config.architecture.is_empty() {
            String::new()
        } else {
            config.platform().to_string()
        },
        total_size: config_desc.size + layers.iter().map(|l| l.size).sum::<u64>(),
        config,
        layers,
    })
}

/// Inspects what `src` names; for an index, `platform` selects an image to detail.
pub async fn inspect(
    src: &dyn ImageSource,
    platform: Option<&PlatformFilter>,
) -> Result<Inspection> {
    let root = src.root().await?;
    let parsed = root.parse()?;
    let artifact_type = parsed.artifact_type.clone().or_else(|| {
        parsed
            .config
            .as_ref()
            .map(|c| c.media_type.clone())
            .filter(|t| !is_image_config(t))
    });
    let referrers = src
        .referrers(&root.digest, None)
        .await?
        .map(|r| r.into_iter().map(Referrer::from).collect());
    let mut out = Inspection {
        name: src.describe(),
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        size: root.bytes.len() as u64,
        artifact_type,
        subject: parsed.subject.as_ref().map(|d| d.digest.clone()),
        annotations: parsed.annotations.clone(),
        manifests: Vec::new(),
        image: None,
        referrers,
    };
    if root.is_index() {
        out.manifests = parsed
            .manifests
            .iter()
            .map(|d| IndexEntry {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                size: d.size,
                platform: d.platform.as_ref().map(|p| p.to_string()),
                artifact_type: d.artifact_type.clone(),
                annotations: d.annotations.clone(),
            })
            .collect();
        if let Some(f) = platform {
            let d = parsed
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| f.matches(p)))
                .ok_or_else(|| {
                    ClientError::NotFound(format!("platform {f} in {}", src.describe()))
                })?;
            let child = src.manifest(d).await?;
            out.image = Some(summarize(src, &child).await?);
        }
    } else {
        out.image = Some(summarize(src, &root).await?);
    }
    Ok(out)
}

impl Inspection {
    /// A human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Name:       {}", self.name);
        let _ = writeln!(s, "Digest:     {}", self.digest);
        let _ = writeln!(s, "MediaType:  {}", self.media_type);
        if let Some(t) = &self.artifact_type {
            let _ = writeln!(s, "ArtifactType: {t}");
        }
        if let Some(d) = &self.subject {
            let _ = writeln!(s, "Subject:    {d}");
        }
        if !self.annotations.is_empty() {
            let _ = writeln!(s, "Annotations:");
            for (k, v) in &self.annotations {
                let _ = writeln!(s, "  {k}={v}");
            }
        }
        if !self.manifests.is_empty() {
            let _ = writeln!(s, "Manifests:");
            for m in &self.manifests {
                let _ = writeln!(
                    s,
                    "  {:<16} {}  {}",
                    m.platform.as_deref().unwrap_or("-"),
                    m.digest,
                    m.artifact_type.as_deref().unwrap_or(&m.media_type)
                );
                for (k, v) in &m.annotations {
                    let _ = writeln!(s, "      {k}={v}");
                }
            }
        }
        if let Some(img) = &self.image {
            let c = &img.config;
            if img.digest != self.digest {
                let _ = writeln!(s, "Image:      {}", img.digest);
            }
            if !img.platform.is_empty() {
                let _ = writeln!(s, "Platform:   {}", img.platform);
            }
            let _ = writeln!(s, "Config:     {}", img.config_digest);
            if let Some(created) = &c.created {
                let _ = writeln!(s, "Created:    {created}");
            }
            if let Some(e) = &c.config.entrypoint {
                let _ = writeln!(s, "Entrypoint: {}", e.join(" "));
            }
            if let Some(cmd) = &c.config.cmd {
                let _ = writeln!(s, "Cmd:        {}", cmd.join(" "));
            }
            if let Some(w) = &c.config.working_dir {
                let _ = writeln!(s, "WorkingDir: {w}");
            }
            if let Some(u) = c.config.user.as_ref().filter(|u| !u.is_empty()) {
                let _ = writeln!(s, "User:       {u}");
            }
            if let Some(env) = &c.config.env {
                let _ = writeln!(s, "Env:");
                for e in env {
                    let _ = writeln!(s, "  {e}");
                }
            }
            if let Some(labels) = c.config.labels.as_ref().filter(|l| !l.is_empty()) {
                let _ = writeln!(s, "Labels:");
                for (k, v) in labels {
                    let _ = writeln!(s, "  {k}={v}");
                }
            }
            let _ = writeln!(s, "Layers:");
            for l in &img.layers {
                let _ = writeln!(
                    s,
                    "  {}  {:>10}  {}",
                    l.digest,
                    human_bytes(l.size),
                    l.media_type
                );
            }
            let _ = writeln!(
                s,
                "Total size: {} ({} bytes, compressed)",
                human_bytes(img.total_size),
                img.total_size
            );
        }
        match &self.referrers {
            Some(refs) if refs.is_empty() => {
                let _ = writeln!(s, "Referrers:  none");
            }
            Some(refs) => {
                let _ = writeln!(s, "Referrers:");
                for r in refs {
                    let _ = writeln!(
                        s,
                        "  {}  {:>10}  {}",
                        r.digest,
                        human_bytes(r.size),
                        r.artifact_type.as_deref().unwrap_or(&r.media_type)
                    );
                    for (k, v) in &r.annotations {
                        let _ = writeln!(s, "      {k}={v}");
                    }
                }
            }
            None => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    #[test]
    fn text_shows_artifact_annotations_and_referrers() {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.created".to_owned(),
            "2024-05-06T07:08:09Z".to_owned(),
        );
        let info = Inspection {
            name: "h/app:1".into(),
            digest: digest(1),
            media_type: berth_oci::media_types::OCI_INDEX.into(),
            size: 100,
            artifact_type: Some("application/vnd.example.bundle".into()),
            subject: Some(digest(2)),
            annotations: annotations.clone(),
            manifests: Vec::new(),
            image: None,
            referrers: Some(vec![Referrer {
                digest: digest(3),
                media_type: berth_oci::media_types::OCI_MANIFEST.into(),
                artifact_type: Some("application/vnd.example.sig".into()),
                size: 2048,
                annotations,
            }]),
        };
        let mut entry_annotations = BTreeMap::new();
        entry_annotations.insert("vnd.example.role".to_owned(), "attestation".to_owned());
        let info = Inspection {
            manifests: vec![
                IndexEntry {
                    digest: digest(4),
                    media_type: berth_oci::media_types::OCI_MANIFEST.into(),
                    size: 10,
                    platform: Some("linux/amd64".into()),
                    artifact_type: None,
                    annotations: BTreeMap::new(),
                },
                IndexEntry {
                    digest: digest(5),
                    media_type: berth_oci::media_types::OCI_MANIFEST.into(),
                    size: 10,
                    platform: None,
                    artifact_type: Some("application/vnd.in-toto+json".into()),
                    annotations: entry_annotations,
                },
            ],
            ..info
        };
        let text = info.to_text();
        assert!(
            text.contains(&format!(
                "Manifests:\n  linux/amd64      {}  {}\n  -                {}  application/vnd.in-toto+json\n      vnd.example.role=attestation\n",
                digest(4),
                berth_oci::media_types::OCI_MANIFEST,
                digest(5)
            )),
            "{text}"
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json["manifests"][1]["artifact_type"],
            "application/vnd.in-toto+json"
        );
        assert_eq!(
            json["manifests"][1]["annotations"]["vnd.example.role"],
            "attestation"
        );
        assert!(json["manifests"][0].get("annotations").is_none());
        assert!(
            text.contains("ArtifactType: application/vnd.example.bundle\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("Subject:    {}\n", digest(2))),
            "{text}"
        );
        assert!(
            text.contains(
                "Annotations:\n  org.opencontainers.image.created=2024-05-06T07:08:09Z\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "Referrers:\n  {}     2.0 KiB  application/vnd.example.sig\n      org.opencontainers.image.created=2024-05-06T07:08:09Z\n",
                digest(3)
            )),
            "{text}"
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json["referrers"][0]["artifact_type"],
            "application/vnd.example.sig"
        );
        assert_eq!(json["referrers"][0]["size"], 2048);

        let none = Inspection {
            referrers: Some(Vec::new()),
            artifact_type: None,
            subject: None,
            annotations: BTreeMap::new(),
            ..info.clone()
        };
        let text = none.to_text();
        assert!(text.ends_with("Referrers:  none\n"), "{text}");
        assert!(
            !text.contains("ArtifactType") && !text.contains("Annotations"),
            "{text}"
        );
        let local = Inspection {
            referrers: None,
            ..none
        };
        assert!(!local.to_text().contains("Referrers"));
        assert!(serde_json::to_value(&local)
            .unwrap()
            .get("referrers")
            .is_none());
    }
}
