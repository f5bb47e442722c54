//! What an image is made of: kind, platforms of an index, and for an image its config
//! (platform, entrypoint, env, labels, created) and layers with sizes.
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
    /// The entries when the reference names an index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<IndexEntry>,
    /// The image (the selected platform's, for an index inspected with a platform).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSummary>,
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
    let config = if config_desc.media_type == berth_oci::media_types::OCI_EMPTY {
        ImageConfig::default()
    } else {
        read_config(src, &config_desc).await?.1
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
        platform: config.platform().to_string(),
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
    let mut out = Inspection {
        name: src.describe(),
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        size: root.bytes.len() as u64,
        manifests: Vec::new(),
        image: None,
    };
    if root.is_index() {
        let parsed = root.parse()?;
        out.manifests = parsed
            .manifests
            .iter()
            .map(|d| IndexEntry {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                size: d.size,
                platform: d.platform.as_ref().map(|p| p.to_string()),
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
        if !self.manifests.is_empty() {
            let _ = writeln!(s, "Manifests:");
            for m in &self.manifests {
                let _ = writeln!(
                    s,
                    "  {:<16} {}  {}",
                    m.platform.as_deref().unwrap_or("-"),
                    m.digest,
                    m.media_type
                );
            }
        }
        if let Some(img) = &self.image {
            let c = &img.config;
            if img.digest != self.digest {
                let _ = writeln!(s, "Image:      {}", img.digest);
            }
            let _ = writeln!(s, "Platform:   {}", img.platform);
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
        s
    }
}
