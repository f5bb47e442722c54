//! Tarball downloads: an image of a repository as a `docker-archive` or `oci-archive`
//! built on the fly from stored blobs, for air-gapped installs (`docker load`,
//! `podman load`, `skopeo copy docker-archive:`).
//!
//! [`Registry::export`] resolves the reference and the platform, reads the manifests
//! (with the same trust-policy checks as a pull) and asks `berth_oci::archive` for the
//! tarball's plan: its exact length and which bytes come from which blob. Nothing is
//! staged: [`Registry::export_stream`] sends any byte range of the plan, reading each
//! blob's part through [`BlobStore::get`](berth_storage::BlobStore::get) with a range,
//! so memory stays flat whatever the image size and a download resumes with `Range`.
//!
//! Routes call this module; it calls the stores and knows no HTTP type.

use std::ops::Range;
use std::sync::Arc;

use berth_meta::StoredManifest;
use berth_oci::archive::{self, ArchiveError, ArchivePlan, ManifestBlob, Piece};
use berth_oci::{ParsedManifest, Reference, RepoName};
use berth_storage::ByteStream;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};

use super::{BlobContent, Fetch, Registry, RegistryError, Result};

/// The tarball layouts a download can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// What `docker save` writes and `docker load` reads (one image).
    DockerArchive,
    /// A tar of an OCI image layout (one image, or a whole index).
    OciArchive,
}

impl ExportFormat {
    /// Parses the `format` query parameter; absent means `docker-archive`.
    pub fn parse(value: Option<&str>) -> Result<ExportFormat> {
        match value {
            None | Some("docker-archive") => Ok(ExportFormat::DockerArchive),
            Some("oci-archive") => Ok(ExportFormat::OciArchive),
            Some(other) => Err(RegistryError::ParameterInvalid(format!(
                "format={other:?}: use docker-archive or oci-archive"
            ))),
        }
    }
}

/// A tarball ready to be sent.
pub struct Export {
    /// The entries and their bytes: the length and the source of every byte.
    pub plan: Arc<ArchivePlan>,
    /// The reference the download named (a tag or a digest).
    pub reference: Reference,
    /// The manifests a pull of the same image fetches, in order (the index, if any, then
    /// the platform image): what the download analytics count.
    pub fetched: Vec<Arc<StoredManifest>>,
    /// The platform of the image (`os/arch[/variant]`), `None` for a whole index or an
    /// image whose platform is unknown.
    pub platform: Option<String>,
    /// The digest of the manifest at the root of the tarball (it identifies the content
    /// for `ETag` and `If-Range`, with the format).
    pub root: berth_oci::Digest,
}

impl Export {
    /// The file name a browser saves it under: `<repo>_<tag>_<os>-<arch>.tar`, slashes
    /// of the repository as `_`, a digest as `sha256-<12 hex>`, `all` for a whole index.
    pub fn file_name(&self, repo: &RepoName) -> String {
        let what = match &self.reference {
            Reference::Tag(t) => t.to_string(),
            Reference::Digest(d) => format!(
                "{}-{}",
                d.algorithm().as_str(),
                d.hex().get(..12).unwrap_or(d.hex())
            ),
        };
        let platform = match &self.platform {
            Some(p) => format!("_{}", p.replace('/', "-")),
            None if self.is_index() => "_all".to_owned(),
            None => String::new(),
        };
        let name = format!("{}_{what}{platform}.tar", repo.as_str().replace('/', "_"));
        // Only characters safe inside a quoted header value and a file name.
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    fn is_index(&self) -> bool {
        self.fetched.len() == 1 && berth_oci::media_types::is_index(&self.fetched[0].media_type)
    }
}

/// Splits `<name>:<tag>` or `<name>@<digest>` (the path of a download) into the
/// repository and the reference.
pub fn parse_export_target(target: &str) -> Result<(RepoName, String)> {
    let missing = || {
        RegistryError::ParameterInvalid(format!(
            "{target:?}: name the image as <name>:<tag> or <name>@sha256:<digest>"
        ))
    };
    let (name, reference) = match target.split_once('@') {
        Some((name, digest)) => (name, digest),
        None => match target.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => return Err(missing()),
        },
    };
    if reference.is_empty() {
        return Err(missing());
    }
    Ok((RepoName::parse(name)?, reference.to_owned()))
}

/// `os/arch[/variant]` of an index entry, `None` for entries that are not images of a
/// platform (BuildKit lists its attestations as `unknown/unknown`).
fn entry_platform(d: &berth_oci::Descriptor) -> Option<String> {
    d.platform
        .as_ref()
        .filter(|p| p.os != "unknown" && p.architecture != "unknown")
        .map(ToString::to_string)
}

/// True when `wanted` names `platform`: exactly, or by `os/arch` alone when the
/// platform has a variant (`linux/arm64` for `linux/arm64/v8`).
fn platform_matches(platform: &str, wanted: &str) -> bool {
    platform == wanted
        || (wanted.matches('/').count() == 1 && platform.starts_with(&format!("{wanted}/")))
}

fn manifest_blob(m: &StoredManifest) -> ManifestBlob {
    ManifestBlob {
        digest: m.digest.clone(),
        media_type: m.media_type.clone(),
        content: Arc::from(&m.content[..]),
    }
}

impl Registry {
    /// Plans the tarball of the image `raw` (a tag or a digest) of `repo`: the platform
    /// `platform` of an index (required when it has several), the image itself, or, for
    /// an oci-archive without a platform, the whole index. `image_name` (`host/repo:tag`)
    /// is the name a docker-archive loads as. Every blob is checked to be in storage, so
    /// a download that starts does not stop on a missing blob.
    pub async fn export(
        &self,
        repo: &RepoName,
        raw: &str,
        format: ExportFormat,
        platform: Option<&str>,
        image_name: Option<&str>,
    ) -> Result<Export> {
        let (reference, root) = self.fetch_manifest(repo, raw, &[], Fetch::Content).await?;
        let root = Arc::new(root);
        let parsed = ParsedManifest::parse(&root.content, Some(&root.media_type))
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let mut fetched = vec![root.clone()];
        let mut chosen_platform = None;
        let plan = if parsed.kind.is_index() {
            let images: Vec<(&berth_oci::Descriptor, String)> = parsed
                .manifests
                .iter()
                .filter_map(|d| entry_platform(d).map(|p| (d, p)))
                .collect();
            let available = || images.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>();
            let chosen = match (platform, images.as_slice()) {
                (Some(wanted), _) => {
                    let matching: Vec<_> = images
                        .iter()
                        .filter(|(_, p)| p == wanted)
                        .chain(
                            images
                                .iter()
                                .filter(|(_, p)| p != wanted && platform_matches(p, wanted)),
                        )
                        .collect();
                    match matching.first() {
                        Some(one) => Some(*one),
                        None => {
                            return Err(RegistryError::ExportPlatformUnknown {
                                reference: reference.to_string(),
                                platform: wanted.to_owned(),
                                available: available(),
                            })
                        }
                    }
                }
                // An oci-archive can carry the whole index.
                (None, _) if format == ExportFormat::OciArchive => None,
                (None, [one]) => Some(one),
                (None, _) => {
                    return Err(RegistryError::ExportNeedsPlatform {
                        reference: reference.to_string(),
                        available: available(),
                    })
                }
            };
            match chosen {
                Some((d, p)) => {
                    let (_, child) = self
                        .fetch_manifest(repo, &d.digest.to_string(), &[], Fetch::Content)
                        .await?;
                    let child = Arc::new(child);
                    fetched.push(child.clone());
                    chosen_platform = Some(p.clone());
                    self.plan_image(&child, &reference, format, image_name)?
                }
                None => {
                    let mut children = Vec::new();
                    for d in &parsed.manifests {
                        let (_, child) = self
                            .fetch_manifest(repo, &d.digest.to_string(), &[], Fetch::Content)
                            .await?;
                        children.push(manifest_blob(&child));
                    }
                    archive::oci_archive(&manifest_blob(&root), &children, tag_of(&reference))
                        .map_err(|e| export_error(e, &reference))?
                }
            }
        } else {
            if let (Some(wanted), Some(known)) = (platform, root.platform.as_deref()) {
                if !platform_matches(known, wanted) {
                    return Err(RegistryError::ExportPlatformUnknown {
                        reference: reference.to_string(),
                        platform: wanted.to_owned(),
                        available: vec![known.to_owned()],
                    });
                }
            }
            chosen_platform = root.platform.clone();
            self.plan_image(&root, &reference, format, image_name)?
        };
        for (digest, size) in plan.blobs() {
            let stored = self.blob_check(repo, digest).await?;
            // A tar header announces the declared size; other bytes would shift every
            // entry after it.
            if stored != size {
                return Err(RegistryError::ManifestInvalid(format!(
                    "the manifest declares {size} bytes for blob {digest}, which has {stored}"
                )));
            }
        }
        // The platform image when one was chosen, else the manifest named.
        let root_digest = fetched.last().unwrap_or(&root).digest.clone();
        Ok(Export {
            plan: Arc::new(plan),
            reference,
            fetched,
            platform: chosen_platform,
            root: root_digest,
        })
    }

    fn plan_image(
        &self,
        image: &StoredManifest,
        reference: &Reference,
        format: ExportFormat,
        image_name: Option<&str>,
    ) -> Result<ArchivePlan> {
        let blob = manifest_blob(image);
        let planned = match format {
            ExportFormat::DockerArchive => {
                // A name without a tag cannot be loaded under it: digests load unnamed.
                let name = image_name.filter(|_| matches!(reference, Reference::Tag(_)));
                archive::docker_archive(&blob, name)
            }
            ExportFormat::OciArchive => {
                let parsed = ParsedManifest::parse(&image.content, Some(&image.media_type))
                    .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
                archive::check_image(&parsed, &image.digest)
                    .and_then(|()| archive::oci_archive(&blob, &[], tag_of(reference)))
            }
        };
        planned.map_err(|e| export_error(e, reference))
    }

    /// The bytes `range` of a planned tarball of `repo`, streamed: fixed bytes from the
    /// plan, blob bytes read range by range from the blob store (each read counted as
    /// served bytes), zeros from a static buffer. Nothing is buffered beyond one read.
    pub fn export_stream(
        self: &Arc<Self>,
        repo: &RepoName,
        plan: &ArchivePlan,
        range: Range<u64>,
    ) -> ByteStream {
        let registry = self.clone();
        let repo = repo.clone();
        let pieces = plan.pieces(range);
        let streams = stream::iter(pieces).then(move |piece| {
            let registry = registry.clone();
            let repo = repo.clone();
            async move {
                let s: ByteStream = match piece {
                    Piece::Bytes { data, range } => Box::pin(stream::once(async move {
                        Ok(Bytes::copy_from_slice(&data[range]))
                    })),
                    Piece::Zeros(n) => zeros(n),
                    Piece::Blob {
                        digest,
                        size,
                        range,
                    } => match registry
                        .blob_open(&repo, &digest, size, Some(range), false)
                        .await
                    {
                        Ok(BlobContent::Stream(s)) => s,
                        Ok(BlobContent::Local { .. }) => {
                            return Err(std::io::Error::other(
                                "a local blob file was returned without being asked for",
                            ))
                        }
                        Err(e) => {
                            // The blobs were checked before the answer began; one deleted
                            // since ends the download short, which the client notices
                            // from the length.
                            tracing::warn!(%repo, %digest, error = %e, "a blob of a tarball download could not be read");
                            return Err(std::io::Error::other(e.to_string()));
                        }
                    },
                };
                Ok(s)
            }
        });
        Box::pin(streams.try_flatten())
    }
}

/// `n` zero bytes in chunks of at most 64 KiB, from one static buffer.
fn zeros(n: u64) -> ByteStream {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let chunk = ZEROS.len() as u64;
    let chunks = n.div_ceil(chunk);
    Box::pin(stream::iter((0..chunks).map(move |i| {
        let len = (n - i * chunk).min(chunk) as usize;
        Ok(Bytes::from_static(&ZEROS[..len]))
    })))
}

fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    }
}

fn export_error(e: ArchiveError, reference: &Reference) -> RegistryError {
    match e {
        ArchiveError::NotAnImage { kind, .. } => RegistryError::ExportNotImage {
            reference: reference.to_string(),
            kind,
        },
        ArchiveError::Index(d) => RegistryError::ParameterInvalid(format!(
            "{reference} holds an index inside an index ({d}), which a tarball download does not carry; name a platform"
        )),
        e => RegistryError::ManifestInvalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_tag_or_a_digest() {
        let (repo, r) = parse_export_target("team/app:1.0").unwrap();
        assert_eq!((repo.as_str(), r.as_str()), ("team/app", "1.0"));
        let d = format!("sha256:{}", "a".repeat(64));
        let (repo, r) = parse_export_target(&format!("app@{d}")).unwrap();
        assert_eq!((repo.as_str(), r.as_str()), ("app", d.as_str()));
        assert!(matches!(
            parse_export_target("team/app"),
            Err(RegistryError::ParameterInvalid(_))
        ));
        assert!(matches!(
            parse_export_target("app:"),
            Err(RegistryError::ParameterInvalid(_))
        ));
        assert!(parse_export_target("Bad Name:1").is_err());
    }

    #[test]
    fn formats_default_to_docker_archive() {
        assert_eq!(
            ExportFormat::parse(None).unwrap(),
            ExportFormat::DockerArchive
        );
        assert_eq!(
            ExportFormat::parse(Some("oci-archive")).unwrap(),
            ExportFormat::OciArchive
        );
        assert!(ExportFormat::parse(Some("zip")).is_err());
    }

    #[test]
    fn platforms_match_with_or_without_variant() {
        assert!(platform_matches("linux/arm64", "linux/arm64"));
        assert!(platform_matches("linux/arm64/v8", "linux/arm64"));
        assert!(!platform_matches("linux/arm64", "linux/arm64/v8"));
        assert!(!platform_matches("linux/arm/v7", "linux/arm64"));
        assert!(!platform_matches("linux/amd64", "linux/arm64"));
    }

    #[tokio::test]
    async fn zeros_are_sent_in_bounded_chunks() {
        let chunks: Vec<Bytes> = zeros((64 << 10) * 2 + 5).try_collect().await.unwrap();
        assert_eq!(
            chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![64 << 10, 64 << 10, 5]
        );
        assert!(chunks.iter().all(|c| c.iter().all(|b| *b == 0)));
        assert_eq!(zeros(0).count().await, 0);
    }
}
