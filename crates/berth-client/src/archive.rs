//! Tarballs: `docker-archive` (what `docker save` writes and `docker load` reads) and
//! `oci-archive` (a tar of an OCI image layout).
//!
//! Writing stages an OCI layout in a temporary directory beside the output file, packs it
//! into a temporary file, and renames that over the final name only when everything is
//! written, so a failed pull leaves no half-written tarball. A docker-archive written by
//! Berth is the layout Docker 25+ `docker save` produces: an OCI layout plus a
//! `manifest.json` whose `Config` and `Layers` point into `blobs/sha256/`, with layers kept
//! compressed exactly as in the registry, so digests survive a round trip.
//!
//! Reading unpacks the tarball into a temporary directory. A docker-archive whose
//! layout holds the exact image manifest is read through it (digests preserved); an older
//! one (`<id>/layer.tar`, skopeo's `<hex>.tar`) yields a Docker schema 2 manifest built
//! from `manifest.json` with digests computed from the files.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_oci::archive::{blob_entry_name, tag_of, ArchivePlan, PlanBuilder, Segment};
use berth_oci::{media_types as mt, Descriptor, Digest, Hasher, ParsedManifest, Tag};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use crate::copy::{ImageDestination, ImageSource};
use crate::error::{ClientError, Result};
use crate::image::{BlobStream, Manifest};
use crate::layout::{blob_path, LayoutIndex, LayoutSource, LayoutWriter, IMAGE_NAME};

/// Media type of an uncompressed Docker layer (used by containerd and Docker).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

pub use berth_oci::archive::ArchiveEntry;

/// Docker's short form of a name: `docker.io/library/x:t` → `x:t`, `docker.io/o/x` → `o/x`.
pub fn familiar_name(full: &str) -> String {
    let s = full.strip_prefix("docker.io/").unwrap_or(full);
    if s.len() != full.len() {
        s.strip_prefix("library/").unwrap_or(s).to_owned()
    } else {
        s.to_owned()
    }
}

async fn to_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Usage(format!("background task failed: {e}")))?
}

/// Unpacks a (possibly gzip-compressed) tarball into a new temporary directory.
pub async fn unpack(path: &Path) -> Result<tempfile::TempDir> {
    let path = path.to_owned();
    to_blocking(move || {
        let mut f = std::fs::File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ClientError::NotFound(format!("archive {}", path.display()))
            } else {
                ClientError::io(&path, e)
            }
        })?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic).map_err(|e| ClientError::io(&path, e))?;
        let f = std::fs::File::open(&path).map_err(|e| ClientError::io(&path, e))?;
        let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
        } else {
            Box::new(std::io::BufReader::new(f))
        };
        let dir = tempfile::Builder::new()
            .prefix("berth-unpack-")
            .tempdir()
            .map_err(|e| ClientError::io(std::env::temp_dir(), e))?;
        tar::Archive::new(reader)
            .unpack(dir.path())
            .map_err(|e| ClientError::invalid(path.display().to_string(), e))?;
        Ok(dir)
    })
    .await
}

/// Packs `dir` into `out` through a temporary file renamed at the end. The entries,
/// their order and their headers are `berth_oci::archive`'s plan (the one the registry
/// serves tarballs by): top-level files first, then `blobs/`, with fixed owner, mode and
/// time.
pub async fn pack(dir: PathBuf, out: PathBuf) -> Result<()> {
    to_blocking(move || {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".berth-tmp-")
            .tempfile_in(&parent)
            .map_err(|e| ClientError::io(&parent, e))?;
        let plan = plan_dir(&dir)?;
        let mut w = std::io::BufWriter::new(tmp.as_file());
        for (_, segment) in plan.segments() {
            match segment {
                Segment::Bytes(b) => w.write_all(b).map_err(|e| ClientError::io(&out, e))?,
                Segment::Blob { digest, size } => {
                    let path = blob_path(&dir, digest);
                    let f = std::fs::File::open(&path).map_err(|e| ClientError::io(&path, e))?;
                    // The plan was made from the file's size; a file that changed since
                    // would corrupt every entry after it.
                    let copied = std::io::copy(&mut f.take(*size), &mut w)
                        .map_err(|e| ClientError::io(&path, e))?;
                    if copied != *size {
                        return Err(ClientError::invalid(
                            path.display().to_string(),
                            "the staged blob shrank while it was packed",
                        ));
                    }
                }
                Segment::Zeros(n) => std::io::copy(&mut std::io::repeat(0).take(*n), &mut w)
                    .map(drop)
                    .map_err(|e| ClientError::io(&out, e))?,
            }
        }
        w.flush().map_err(|e| ClientError::io(&out, e))?;
        drop(w);
        tmp.as_file()
            .sync_all()
            .map_err(|e| ClientError::io(&out, e))?;
        tmp.persist(&out)
            .map_err(|e| ClientError::io(&out, e.error))?;
        Ok(())
    })
    .await
}

/// The tarball plan of a staged layout: `blobs/<alg>/<hex>` files are blobs read while
/// writing; any other file (`index.json`, `oci-layout`, `manifest.json`) is read now.
fn plan_dir(dir: &Path) -> Result<ArchivePlan> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    let mut plan = PlanBuilder::new();
    for rel in &files {
        let full = dir.join(rel);
        let name = rel.to_string_lossy().replace('\\', "/");
        let blob = name
            .strip_prefix("blobs/")
            .and_then(|r| r.split_once('/'))
            .and_then(|(alg, hex)| format!("{alg}:{hex}").parse::<Digest>().ok())
            .filter(|d| blob_entry_name(d) == name);
        match blob {
            Some(digest) => {
                let len = std::fs::metadata(&full)
                    .map_err(|e| ClientError::io(&full, e))?
                    .len();
                plan.blob(&digest, len);
            }
            None => {
                let bytes = std::fs::read(&full).map_err(|e| ClientError::io(&full, e))?;
                plan.file(&name, bytes);
            }
        }
    }
    Ok(plan.build())
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| ClientError::io(dir, e))? {
        let entry = entry.map_err(|e| ClientError::io(dir, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| ClientError::io(&path, e))?;
        if ft.is_dir() {
            collect_files(base, &path, out)?;
        } else if ft.is_file() {
            if let Ok(rel) = path.strip_prefix(base) {
                out.push(rel.to_owned());
            }
        }
    }
    Ok(())
}

/// Writes an `oci-archive` tarball.
pub struct OciArchiveWriter {
    layout: LayoutWriter,
    out: PathBuf,
}

impl OciArchiveWriter {
    pub fn create(out: &Path, tag: Option<String>) -> Result<OciArchiveWriter> {
        let what = format!("oci-archive:{}", out.display());
        Ok(OciArchiveWriter {
            layout: LayoutWriter::staging(out, tag, what)?,
            out: out.to_owned(),
        })
    }
}

/// Refuses a manifest a `docker-archive` cannot carry: an artifact (a Helm chart, a
/// signature, an SBOM), whose config is not an image config. `docker load` and
/// `podman load` reject such a tarball, so it is refused before anything is written.
/// An index passes: the copy engine picks one platform's image from it, checked again.
pub fn check_docker_image(m: &Manifest, what: &str) -> Result<()> {
    if m.is_index() {
        return Ok(());
    }
    match berth_oci::archive::check_image(&m.parse()?, &m.digest) {
        Ok(()) => Ok(()),
        Err(berth_oci::archive::ArchiveError::NotAnImage { kind, .. }) => {
            Err(ClientError::Unsupported(format!(
                "{what} is not a container image but an artifact ({kind}); a docker-archive holds \
                 only images that docker and podman can load: write it as oci:DIR or \
                 oci-archive:FILE instead"
            )))
        }
        Err(e) => Err(ClientError::invalid(what, e)),
    }
}

/// Writes a `docker-archive` tarball holding one image.
pub struct DockerArchiveWriter {
    layout: LayoutWriter,
    out: PathBuf,
    repo_tag: Option<String>,
}

impl DockerArchiveWriter {
    /// `repo_tag` is the `RepoTags` entry (`name:tag`), if any.
    pub fn create(out: &Path, repo_tag: Option<String>) -> Result<DockerArchiveWriter> {
        let what = format!("docker-archive:{}", out.display());
        let tag = repo_tag.as_deref().and_then(tag_of).map(str::to_owned);
        let mut layout = LayoutWriter::staging(out, tag, what)?;
        if let Some(n) = &repo_tag {
            layout.annotate_root(IMAGE_NAME, n.clone());
        }
        Ok(DockerArchiveWriter {
            layout,
            out: out.to_owned(),
            repo_tag,
        })
    }
}

#[async_trait]
impl ImageDestination for OciArchiveWriter {
    fn describe(&self) -> String {
        self.layout.describe()
    }
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.layout.has_blob(desc).await
    }
    async fn put_blob(&self, desc: &Descriptor, stream: BlobStream) -> Result<()> {
        self.layout.put_blob(desc, stream).await
    }
    async fn put_manifest(&self, m: &Manifest, root: bool) -> Result<()> {
        self.layout.put_manifest(m, root).await
    }

    // An oci-archive is a tarred layout, so it carries signatures, SBOMs and other
    // referrers as `index.json` entries exactly as `oci:DIR` does (an air-gapped site
    // verifies what it loads from the tarball).
    fn accepts_referrers(&self) -> bool {
        true
    }

    async fn put_referrer(&self, m: &Manifest, tag: Option<&Tag>) -> Result<()> {
        self.layout.put_referrer(m, tag).await
    }

    async fn commit(&self) -> Result<()> {
        let dir = self.layout.finish_staging()?;
        let result = pack(dir.path().to_owned(), self.out.clone()).await;
        drop(dir);
        result
    }
}

#[async_trait]
impl ImageDestination for DockerArchiveWriter {
    fn describe(&self) -> String {
        self.layout.describe()
    }
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.layout.has_blob(desc).await
    }
    async fn put_blob(&self, desc: &Descriptor, stream: BlobStream) -> Result<()> {
        self.layout.put_blob(desc, stream).await
    }
    async fn put_manifest(&self, m: &Manifest, root: bool) -> Result<()> {
        check_docker_image(m, &format!("manifest {}", m.digest))?;
        self.layout.put_manifest(m, root).await
    }

    fn accepts_index(&self) -> bool {
        false
    }

    async fn commit(&self) -> Result<()> {
        let root = self
            .layout
            .root_descriptor()
            .ok_or_else(|| ClientError::Usage("no manifest was written".into()))?;
        let bytes = tokio::fs::read(blob_path(self.layout.work_dir(), &root.digest))
            .await
            .map_err(|e| ClientError::io(self.layout.work_dir(), e))?;
        let parsed = ParsedManifest::parse(&bytes, Some(&root.media_type))
            .map_err(|e| ClientError::invalid("manifest", e))?;
        let config = parsed.config.as_ref().ok_or_else(|| {
            ClientError::Unsupported("a docker-archive holds images, not indexes".into())
        })?;
        let entry = ArchiveEntry {
            config: blob_entry_name(&config.digest),
            repo_tags: self.repo_tag.clone().map(|t| vec![t]),
            layers: parsed
                .layers
                .iter()
                .map(|l| blob_entry_name(&l.digest))
                .collect(),
        };
        let json =
            serde_json::to_vec(&[entry]).map_err(|e| ClientError::invalid("manifest.json", e))?;
        let path = self.layout.work_dir().join("manifest.json");
        tokio::fs::write(&path, json)
            .await
            .map_err(|e| ClientError::io(&path, e))?;
        let dir = self.layout.finish_staging()?;
        let result = pack(dir.path().to_owned(), self.out.clone()).await;
        drop(dir);
        result
    }
}

/// Reads an `oci-archive`: an unpacked layout.
pub struct OciArchiveSource {
    layout: LayoutSource,
    _dir: tempfile::TempDir,
}

impl OciArchiveSource {
    pub async fn open(path: &Path, tag: Option<String>) -> Result<OciArchiveSource> {
        let dir = unpack(path).await?;
        let layout =
            LayoutSource::open(dir.path(), tag, format!("oci-archive:{}", path.display()))?;
        Ok(OciArchiveSource { layout, _dir: dir })
    }
}

#[async_trait]
impl ImageSource for OciArchiveSource {
    fn describe(&self) -> String {
        self.layout.describe()
    }
    async fn root(&self) -> Result<Manifest> {
        self.layout.root().await
    }
    async fn manifest(&self, desc: &Descriptor) -> Result<Manifest> {
        self.layout.manifest(desc).await
    }
    async fn blob(&self, desc: &Descriptor) -> Result<BlobStream> {
        self.layout.blob(desc).await
    }
    fn tag(&self) -> Option<String> {
        self.layout.tag()
    }
    async fn referrers(
        &self,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>> {
        self.layout.referrers(digest, artifact_type).await
    }
    async fn legacy_referrers(&self, subject: &Digest) -> Result<Vec<(Tag, Manifest)>> {
        self.layout.legacy_referrers(subject).await
    }
}

/// Reads one image of a `docker-archive`.
pub struct DockerArchiveSource {
    _dir: tempfile::TempDir,
    what: String,
    manifest: Manifest,
    /// Child manifests (when read through an embedded layout) and blobs, by digest.
    files: HashMap<Digest, PathBuf>,
    name: Option<String>,
}

fn sha256_file(path: &Path) -> Result<(Digest, u64, [u8; 4])> {
    let mut f = std::fs::File::open(path).map_err(|e| ClientError::io(path, e))?;
    let mut h = Hasher::new(berth_oci::Algorithm::Sha256);
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    let mut magic = [0u8; 4];
    loop {
        let n = f.read(&mut buf).map_err(|e| ClientError::io(path, e))?;
        if n == 0 {
            break;
        }
        if total < 4 {
            for (i, b) in buf[..n.min(4)].iter().enumerate() {
                if (total as usize) + i < 4 {
                    magic[total as usize + i] = *b;
                }
            }
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finish(), total, magic))
}

/// Resolves a `manifest.json` path inside the unpacked archive, refusing escapes.
fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ClientError::invalid(
            "manifest.json",
            format!("path {rel:?} leaves the archive"),
        ));
    }
    Ok(root.join(p))
}

impl DockerArchiveSource {
    /// Opens the image named `name` (a `RepoTags` entry), or the only image.
    pub async fn open(path: &Path, name: Option<String>) -> Result<DockerArchiveSource> {
        let what = format!("docker-archive:{}", path.display());
        let dir = unpack(path).await?;
        let root = dir.path().to_owned();
        let what2 = what.clone();
        let (manifest, files, repo_tag) =
            to_blocking(move || Self::read(&root, name.as_deref(), &what2)).await?;
        Ok(DockerArchiveSource {
            _dir: dir,
            what,
            manifest,
            files,
            name: repo_tag,
        })
    }

    #[allow(clippy::type_complexity)]
    fn read(
        root: &Path,
        name: Option<&str>,
        what: &str,
    ) -> Result<(Manifest, HashMap<Digest, PathBuf>, Option<String>)> {
        let mpath = root.join("manifest.json");
        let bytes = std::fs::read(&mpath).map_err(|e| {
            ClientError::invalid(
                what,
                format!("no manifest.json ({e}); is this a docker save tarball?"),
            )
        })?;
        let entries: Vec<ArchiveEntry> =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::invalid(what, e))?;
        let matches_name = |e: &ArchiveEntry, n: &str| {
            e.repo_tags.iter().flatten().any(|t| {
                t == n || familiar_name(t) == familiar_name(n) || t.starts_with(&format!("{n}:"))
            })
        };
        let entry = match name {
            Some(n) => entries
                .iter()
                .find(|e| matches_name(e, n))
                .ok_or_else(|| ClientError::NotFound(format!("image {n:?} in {what}")))?,
            None => match entries.as_slice() {
                [one] => one,
                [] => return Err(ClientError::NotFound(format!("any image in {what}"))),
                _ => {
                    return Err(ClientError::Usage(format!(
                        "{what} holds {} images; name one with docker-archive:FILE:NAME",
                        entries.len()
                    )))
                }
            },
        };
        let repo_tag = entry.repo_tags.iter().flatten().next().cloned();
        let config_path = inside(root, &entry.config)?;
        let (config_digest, config_size, _) = sha256_file(&config_path)?;
        // A Docker 25+ archive (or one Berth wrote) carries the exact manifest in its layout.
        if root.join("index.json").is_file() {
            if let Some(found) = Self::find_in_layout(root, &config_digest)? {
                return Ok((found.0, found.1, repo_tag));
            }
        }
        let mut files = HashMap::new();
        files.insert(config_digest.clone(), config_path);
        let mut layers = Vec::new();
        for l in &entry.layers {
            let p = inside(root, l)?;
            let (digest, size, magic) = sha256_file(&p)?;
            let media_type = if magic[..2] == [0x1f, 0x8b] {
                mt::DOCKER_LAYER_GZIP
            } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
                mt::OCI_LAYER_ZSTD
            } else {
                DOCKER_LAYER_TAR
            };
            layers
                .push(serde_json::json!({"mediaType": media_type, "size": size, "digest": digest}));
            files.insert(digest, p);
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt::DOCKER_MANIFEST,
            "config": {"mediaType": mt::DOCKER_CONFIG, "size": config_size, "digest": config_digest},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| ClientError::invalid(what, e))?;
        let manifest = Manifest::from_bytes(Bytes::from(bytes), Some(mt::DOCKER_MANIFEST))?;
        Ok((manifest, files, repo_tag))
    }

    /// Looks in the embedded layout for the image manifest with this config whose blobs
    /// are all present.
    fn find_in_layout(
        root: &Path,
        config: &Digest,
    ) -> Result<Option<(Manifest, HashMap<Digest, PathBuf>)>> {
        let index = LayoutIndex::read(root)?;
        let mut queue: Vec<Descriptor> = index.manifests;
        let mut seen = 0;
        while let Some(d) = queue.pop() {
            seen += 1;
            if seen > 1000 {
                break;
            }
            let path = blob_path(root, &d.digest);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(m) =
                Manifest::with_digest(Bytes::from(bytes), Some(&d.media_type), d.digest.clone())
            else {
                continue;
            };
            if m.verify(&d.digest).is_err() {
                continue;
            }
            let Ok(parsed) = m.parse() else { continue };
            if parsed.kind.is_index() {
                queue.extend(parsed.manifests);
                continue;
            }
            if parsed.config.as_ref().map(|c| &c.digest) != Some(config) {
                continue;
            }
            let mut files = HashMap::new();
            let complete = parsed.required_blobs().all(|b| {
                let p = blob_path(root, &b.digest);
                let ok = std::fs::metadata(&p).is_ok_and(|md| md.len() == b.size);
                files.insert(b.digest.clone(), p);
                ok
            });
            if complete {
                return Ok(Some((m, files)));
            }
        }
        Ok(None)
    }

    /// The `RepoTags` entry of the image, if any.
    pub fn repo_tag(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

#[async_trait]
impl ImageSource for DockerArchiveSource {
    fn describe(&self) -> String {
        self.what.clone()
    }
    async fn root(&self) -> Result<Manifest> {
        Ok(self.manifest.clone())
    }
    async fn manifest(&self, desc: &Descriptor) -> Result<Manifest> {
        Err(ClientError::NotFound(format!(
            "manifest {} in {} (a docker-archive holds single images)",
            desc.digest, self.what
        )))
    }
    async fn blob(&self, desc: &Descriptor) -> Result<BlobStream> {
        let path = self.files.get(&desc.digest).cloned().ok_or_else(|| {
            ClientError::NotFound(format!("blob {} in {}", desc.digest, self.what))
        })?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| ClientError::io(&path, e))?;
        Ok(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10)
            .map_err(move |e| ClientError::io(&path, e))
            .boxed())
    }
    fn tag(&self) -> Option<String> {
        self.name
            .as_deref()
            .and_then(|n| n.rsplit_once(':'))
            .map(|(_, t)| t.to_owned())
            .filter(|t| !t.contains('/'))
    }
    fn image_name(&self) -> Option<String> {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names() {
        assert_eq!(familiar_name("docker.io/library/alpine:3"), "alpine:3");
        assert_eq!(familiar_name("docker.io/o/x:1"), "o/x:1");
        assert_eq!(familiar_name("localhost:5000/a:1"), "localhost:5000/a:1");
    }

    #[test]
    fn refuses_escaping_paths() {
        let root = Path::new("/tmp/x");
        assert!(inside(root, "../etc/passwd").is_err());
        assert!(inside(root, "/etc/passwd").is_err());
        assert_eq!(
            inside(root, "a/layer.tar").unwrap(),
            root.join("a/layer.tar")
        );
    }
}
