//! SBOMs of images from any source: what `berth sbom` and `berth publish --sbom` share.
//!
//! [`inventory`] picks the image (an index's platform), then streams every layer blob,
//! verified against its digest, into [`berth_sbom::layers::scan_layer`] on the blocking
//! pool: layers are fetched and scanned in parallel (`jobs` at a time) and never touch
//! the disk, and [`berth_sbom::layers::merge`] stacks the scans in the image's order.
//! [`attach`] pushes a document as an OCI 1.1 referrer of the image (artifact type
//! `application/spdx+json` or `application/vnd.cyclonedx+json`, empty config, the
//! document as the one layer); signing it as an attestation is [`crate::sign`]'s job.
//!
//! Layers call one way: commands and `publish` → this module → sources, the registry
//! client and `berth_sbom`. Nothing here prints.

use std::collections::BTreeMap;
use std::io::Read;

use berth_oci::{media_types as mt, Descriptor, Digest, Platform, Reference, RepoName};
use berth_sbom::layers::{self, LayerScan, Limits};
use berth_sbom::{Format, Inventory};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use crate::copy::ImageSource;
use crate::error::{ClientError, Result};
use crate::image::{verify_stream, Manifest, PlatformFilter};
use crate::registry::Registry;

/// Chunks of a layer in flight between the download and the scan.
const CHANNEL_CHUNKS: usize = 16;

/// An image's inventory and which manifest it describes.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// The image manifest (for an index, the chosen platform's).
    pub manifest: Descriptor,
    /// The image's platform, from its config or the index entry.
    pub platform: Option<Platform>,
    pub inventory: Inventory,
}

/// Picks the image of `root` for `platform` (the host's when none is given and the index
/// has several).
async fn pick(
    src: &dyn ImageSource,
    root: Manifest,
    platform: Option<&PlatformFilter>,
) -> Result<(Manifest, Option<Platform>)> {
    if !root.is_index() {
        return Ok((root, None));
    }
    let parsed = root.parse()?;
    let filter = platform.cloned().unwrap_or_else(PlatformFilter::host);
    let images: Vec<&Descriptor> = parsed
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os != "unknown"))
        .collect();
    let chosen = images
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| filter.matches(p)))
        .or_else(|| (platform.is_none() && images.len() == 1).then(|| &images[0]))
        .ok_or_else(|| {
            let have: Vec<String> = images
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect();
            ClientError::NotFound(format!(
                "platform {filter} in {} (it has: {})",
                src.describe(),
                have.join(", ")
            ))
        })?;
    let m = src.manifest(chosen).await?;
    Ok((m, chosen.platform.clone()))
}

/// Lists what the image `src` names holds (for an index, the `platform` image's).
pub async fn inventory(
    src: &dyn ImageSource,
    platform: Option<&PlatformFilter>,
    jobs: usize,
) -> Result<Scanned> {
    let root = src.root().await?;
    let (image, platform) = pick(src, root, platform).await?;
    inventory_of(src, &image, platform, jobs).await
}

/// Lists what the image manifest `image` of `src` holds.
pub async fn inventory_of(
    src: &dyn ImageSource,
    image: &Manifest,
    platform: Option<Platform>,
    jobs: usize,
) -> Result<Scanned> {
    let parsed = image.parse()?;
    if image.is_index() || parsed.config.is_none() {
        return Err(ClientError::Usage(format!(
            "{} is not an image manifest",
            image.digest
        )));
    }
    let scans: Vec<LayerScan> = futures_util::stream::iter(parsed.layers.iter().cloned())
        .map(|desc| scan(src, desc))
        .buffered(jobs.max(1))
        .try_collect()
        .await?;
    Ok(Scanned {
        manifest: image.descriptor(),
        platform,
        inventory: layers::merge(scans),
    })
}

/// Streams one layer into the scanner on the blocking pool.
async fn scan(src: &dyn ImageSource, desc: Descriptor) -> Result<LayerScan> {
    let stream = verify_stream(src.blob(&desc).await?, &desc, Box::new(|_| {}));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(CHANNEL_CHUNKS);
    let digest = desc.digest.to_string();
    let scanner = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            chunk: Bytes::new(),
            failed: None,
        };
        let out = layers::scan_layer(&mut reader, &digest, &Limits::default());
        // The tar ends before the blob does (padding); the rest is read anyway so that
        // the digest is checked over every byte before the scan counts.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        (out, reader.failed.take())
    });
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        let stop = chunk.is_err();
        if tx.send(chunk).await.is_err() || stop {
            break;
        }
    }
    drop(tx);
    let (out, failed) = scanner
        .await
        .map_err(|e| ClientError::invalid(format!("layer {}", desc.digest), e))?;
    if let Some(e) = failed {
        return Err(e);
    }
    out.map_err(|e| ClientError::invalid(format!("layer {}", desc.digest), e))
}

/// A blocking reader over the chunks of a verified blob stream; a download or digest
/// error is kept (to be returned as itself) and read as an I/O error.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
    chunk: Bytes,
    failed: Option<ClientError>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    self.failed = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Pushes `document` (in `format`) as a referrer of `subject` in `repo`: an OCI image
/// manifest with that artifact type, the empty config and the document as its layer.
/// Returns the referrer's digest.
pub async fn attach(
    reg: &Registry,
    repo: &RepoName,
    subject: &Descriptor,
    format: Format,
    document: Vec<u8>,
    created: &str,
) -> Result<Digest> {
    let config = Bytes::from_static(b"{}");
    let config_desc = blob_descriptor(mt::OCI_EMPTY, &config);
    let doc = Bytes::from(document);
    let doc_desc = blob_descriptor(format.media_type(), &doc);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "artifactType": format.media_type(),
        "config": descriptor_json(&config_desc, None),
        "layers": [descriptor_json(&doc_desc, Some("sbom.json"))],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest.to_string(),
            "size": subject.size,
        },
        "annotations": { "org.opencontainers.image.created": created },
    });
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ClientError::invalid("the SBOM referrer manifest", e))?;
    reg.put_blob_bytes(repo, &config_desc, config).await?;
    reg.put_blob_bytes(repo, &doc_desc, doc).await?;
    let m = Manifest::from_bytes(Bytes::from(bytes), Some(mt::OCI_MANIFEST))?;
    reg.put_manifest(repo, &Reference::Digest(m.digest.clone()), &m)
        .await?;
    Ok(m.digest)
}

fn blob_descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::sha256(bytes),
        size: bytes.len() as u64,
        urls: Vec::new(),
        annotations: BTreeMap::new(),
        platform: None,
        artifact_type: None,
    }
}

fn descriptor_json(d: &Descriptor, title: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "mediaType": d.media_type,
        "digest": d.digest.to_string(),
        "size": d.size,
    });
    if let Some(t) = title {
        v["annotations"] = serde_json::json!({ "org.opencontainers.image.title": t });
    }
    v
}
