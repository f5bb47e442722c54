//! OCI image layout directories: `oci-layout`, `index.json` (tags are the
//! `org.opencontainers.image.ref.name` annotation) and `blobs/<alg>/<hex>`.
//!
//! [`LayoutSource`] reads one; [`LayoutWriter`] writes one so that a failure never leaves a
//! half-written image under the final name: blobs land under temporary names and are
//! renamed once complete and verified, `index.json` is replaced atomically at the end,
//! and a layout that did not exist yet is built in a temporary sibling directory and
//! renamed into place on [`LayoutWriter::commit`].
//!
//! Referrers (signatures, attestations, SBOMs) copied with an image are entries of
//! `index.json` too, as `oras` and `cosign save` keep them: a manifest with a `subject`
//! is listed untagged with its artifact type and annotations, and one cosign v2 keeps
//! under `sha256-<hex>.sig` (`.att`, `.sbom`) is listed under that tag. Reading a layout,
//! [`LayoutSource`] finds them again from their subjects, so a layout carries signatures
//! from one registry to another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use berth_oci::{Descriptor, Digest, Tag};
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use crate::copy::{ImageDestination, ImageSource};
use crate::error::{ClientError, Result};
use crate::image::{BlobStream, Manifest, MAX_MANIFEST_BYTES};
use crate::referrers::{is_artifact_tag, legacy_tags, referrer_entry};

pub use berth_oci::archive::{IMAGE_NAME, OCI_LAYOUT, REF_NAME};

/// `blobs/<alg>/<hex>` under `root`.
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

/// The parsed `index.json` of a layout.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl LayoutIndex {
    fn empty() -> LayoutIndex {
        LayoutIndex {
            schema_version: 2,
            media_type: Some(berth_oci::media_types::OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// Reads `root/index.json`.
    pub fn read(root: &Path) -> Result<LayoutIndex> {
        let path = root.join("index.json");
        let bytes = std::fs::read(&path).map_err(|e| ClientError::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::invalid(path.display().to_string(), e))
    }

    /// The tags (`ref.name` annotations) in the layout.
    pub fn tags(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME).cloned())
            .collect()
    }

    /// The descriptor named by `tag`; without a tag, the only manifest of the layout.
    pub fn find(&self, tag: Option<&str>, what: &str) -> Result<Descriptor> {
        match tag {
            Some(t) => self
                .manifests
                .iter()
                .find(|d| {
                    d.annotations.get(REF_NAME).map(String::as_str) == Some(t)
                        || d.annotations.get(IMAGE_NAME).is_some_and(|n| {
                            n == t || n.rsplit_once(':').is_some_and(|(_, tg)| tg == t)
                        })
                })
                .cloned()
                .ok_or_else(|| {
                    ClientError::NotFound(format!(
                        "tag {t:?} in {what} (it has: {})",
                        self.tags().join(", ")
                    ))
                }),
            None => {
                // Referrers copied with an image do not make the image ambiguous.
                let images: Vec<&Descriptor> = match self.manifests.as_slice() {
                    [one] => vec![one],
                    all => all.iter().filter(|d| !is_referrer_entry(d)).collect(),
                };
                match images.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] => Err(ClientError::NotFound(format!("any image in {what}"))),
                    _ => Err(ClientError::Usage(format!(
                        "{what} holds {} images; name one with a tag (it has: {})",
                        images.len(),
                        self.tags().join(", ")
                    ))),
                }
            }
        }
    }
}

/// True for an `index.json` entry that lists a referrer rather than an image: one with
/// an artifact type (images have none) or under a cosign v2 or tag-schema tag.
fn is_referrer_entry(d: &Descriptor) -> bool {
    d.artifact_type.is_some()
        || d.annotations
            .get(REF_NAME)
            .is_some_and(|t| is_artifact_tag(t))
}

/// Reads images from an OCI layout directory.
pub struct LayoutSource {
    root: PathBuf,
    what: String,
    index: LayoutIndex,
    tag: Option<String>,
    /// `(subject, descriptor)` of every referrer the index lists, read on first use.
    referrers: Mutex<Option<Vec<(Digest, Descriptor)>>>,
}

impl LayoutSource {
    /// Opens the layout at `root`; `what` names it in messages.
    pub fn open(root: &Path, tag: Option<String>, what: String) -> Result<LayoutSource> {
        if !root.join("oci-layout").is_file() {
            return Err(ClientError::NotFound(format!(
                "OCI layout at {} (no oci-layout file)",
                root.display()
            )));
        }
        Ok(LayoutSource {
            root: root.to_owned(),
            index: LayoutIndex::read(root)?,
            what,
            tag,
            referrers: Mutex::new(None),
        })
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> &LayoutIndex {
        &self.index
    }

    async fn read_manifest(&self, desc: &Descriptor) -> Result<Manifest> {
        if desc.size > MAX_MANIFEST_BYTES {
            return Err(ClientError::invalid(
                &self.what,
                "manifest is larger than 4 MiB",
            ));
        }
        let path = blob_path(&self.root, &desc.digest);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| ClientError::io(&path, e))?;
        let m = Manifest::with_digest(bytes.into(), Some(&desc.media_type), desc.digest.clone())?;
        m.verify(&desc.digest)?;
        Ok(m)
    }

    /// The subject and referrer descriptor of every entry of the index whose manifest
    /// names a subject, reading each manifest once per source (unreadable entries are
    /// skipped with a warning).
    async fn referrer_entries(&self) -> Result<Vec<(Digest, Descriptor)>> {
        if let Some(known) = self.referrers.lock().ok().and_then(|r| r.clone()) {
            return Ok(known);
        }
        let mut found = Vec::new();
        for desc in &self.index.manifests {
            // Only manifests can have a subject; other entries are not read.
            if !desc.media_type.contains("manifest") && !desc.media_type.contains("index") {
                continue;
            }
            // An entry that cannot be read is no referrer this copy can carry; it must not
            // fail the copy of another image of the layout.
            match self.read_manifest(desc).await {
                Ok(m) => found.extend(referrer_entry(&m)),
                Err(e) => tracing::warn!(digest = %desc.digest, error = %e,
                    "skipping an unreadable entry of index.json while looking for referrers"),
            }
        }
        if let Ok(mut r) = self.referrers.lock() {
            *r = Some(found.clone());
        }
        Ok(found)
    }
}

#[async_trait]
impl ImageSource for LayoutSource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    async fn root(&self) -> Result<Manifest> {
        let desc = self.index.find(self.tag.as_deref(), &self.what)?;
        self.read_manifest(&desc).await
    }

    async fn manifest(&self, desc: &Descriptor) -> Result<Manifest> {
        self.read_manifest(desc).await
    }

    async fn blob(&self, desc: &Descriptor) -> Result<BlobStream> {
        let path = blob_path(&self.root, &desc.digest);
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ClientError::NotFound(format!("blob {} in {}", desc.digest, self.what))
            } else {
                ClientError::io(&path, e)
            }
        })?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10)
            .map_err(move |e| ClientError::io(&path, e));
        Ok(stream.boxed())
    }

    fn tag(&self) -> Option<String> {
        self.tag.clone()
    }

    async fn referrers(
        &self,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>> {
        let entries = self.referrer_entries().await?;
        Ok(Some(
            entries
                .into_iter()
                .filter(|(subject, d)| {
                    subject == digest
                        && artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t))
                })
                .map(|(_, d)| d)
                .collect(),
        ))
    }

    async fn legacy_referrers(&self, subject: &Digest) -> Result<Vec<(Tag, Manifest)>> {
        let mut out = Vec::new();
        for tag in legacy_tags(subject) {
            let entry =
                self.index.manifests.iter().find(|d| {
                    d.annotations.get(REF_NAME).map(String::as_str) == Some(tag.as_str())
                });
            if let Some(d) = entry {
                out.push((tag, self.read_manifest(d).await?));
            }
        }
        Ok(out)
    }
}

/// Writes images into an OCI layout directory (or a staging one for a tarball).
pub struct LayoutWriter {
    /// Where blobs and `index.json` are written now.
    work: PathBuf,
    /// Holds a fresh layout until it is renamed into place (deleted on drop otherwise).
    staging: Mutex<Option<tempfile::TempDir>>,
    /// The directory the layout ends up in (`None` for a staging area of a tarball).
    target: Option<PathBuf>,
    what: String,
    tag: Option<String>,
    root_annotations: BTreeMap<String, String>,
    root: Mutex<Option<Descriptor>>,
    /// `index.json` entries of the referrers written, in order.
    referrers: Mutex<Vec<Descriptor>>,
}

impl LayoutWriter {
    /// A writer for the layout directory `path`, which may exist (images are added to it)
    /// or not (it is created on commit).
    pub fn create(path: &Path, tag: Option<String>) -> Result<LayoutWriter> {
        let what = format!("oci:{}", path.display());
        let exists = path.join("oci-layout").is_file();
        if exists {
            return Ok(LayoutWriter {
                work: path.to_owned(),
                staging: Mutex::new(None),
                target: None,
                what,
                tag,
                root_annotations: BTreeMap::new(),
                root: Mutex::new(None),
                referrers: Mutex::default(),
            });
        }
        if path.exists() {
            let empty = std::fs::read_dir(path)
                .map_err(|e| ClientError::io(path, e))?
                .next()
                .is_none();
            if !empty {
                return Err(ClientError::Usage(format!(
                    "{} exists and is not an OCI layout; refusing to write into it",
                    path.display()
                )));
            }
        }
        let parent = parent_dir(path);
        std::fs::create_dir_all(&parent).map_err(|e| ClientError::io(&parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".berth-tmp-")
            .tempdir_in(&parent)
            .map_err(|e| ClientError::io(&parent, e))?;
        Ok(LayoutWriter {
            work: tmp.path().to_owned(),
            staging: Mutex::new(Some(tmp)),
            target: Some(path.to_owned()),
            what,
            tag,
            root_annotations: BTreeMap::new(),
            root: Mutex::new(None),
            referrers: Mutex::default(),
        })
    }

    /// A staging layout in a temporary directory beside `near` (for building a tarball).
    pub fn staging(near: &Path, tag: Option<String>, what: String) -> Result<LayoutWriter> {
        let parent = parent_dir(near);
        std::fs::create_dir_all(&parent).map_err(|e| ClientError::io(&parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".berth-tmp-")
            .tempdir_in(&parent)
            .map_err(|e| ClientError::io(&parent, e))?;
        Ok(LayoutWriter {
            work: tmp.path().to_owned(),
            staging: Mutex::new(Some(tmp)),
            target: None,
            what,
            tag,
            root_annotations: BTreeMap::new(),
            root: Mutex::new(None),
            referrers: Mutex::default(),
        })
    }

    /// Extra annotations for the root entry of `index.json` (e.g. the full image name).
    pub fn annotate_root(&mut self, key: &str, value: String) {
        self.root_annotations.insert(key.to_owned(), value);
    }

    /// The directory being written.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// The root descriptor written so far.
    pub fn root_descriptor(&self) -> Option<Descriptor> {
        self.root.lock().ok().and_then(|r| r.clone())
    }

    async fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = parent_dir(path);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ClientError::io(&dir, e))?;
        let tmp = tmp_name(path);
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| ClientError::io(&tmp, e))?;
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| ClientError::io(path, e))
    }

    /// Writes `index.json` and `oci-layout`; the image is visible after this.
    fn write_index(&self) -> Result<()> {
        let root = self
            .root_descriptor()
            .ok_or_else(|| ClientError::Usage("no manifest was written".into()))?;
        let mut index = if self.work.join("index.json").is_file() {
            LayoutIndex::read(&self.work)?
        } else {
            LayoutIndex::empty()
        };
        let mut entry = root;
        entry.annotations.extend(self.root_annotations.clone());
        match &self.tag {
            Some(t) => {
                index
                    .manifests
                    .retain(|d| d.annotations.get(REF_NAME) != Some(t));
                entry.annotations.insert(REF_NAME.to_owned(), t.clone());
                index.manifests.push(entry);
            }
            None => add_untagged(&mut index, entry),
        }
        let referrers = self
            .referrers
            .lock()
            .map(|r| r.clone())
            .map_err(|_| ClientError::Usage("layout writer poisoned".into()))?;
        for entry in referrers {
            match entry.annotations.get(REF_NAME).cloned() {
                Some(t) => {
                    index
                        .manifests
                        .retain(|d| d.annotations.get(REF_NAME) != Some(&t));
                    index.manifests.push(entry);
                }
                None => add_untagged(&mut index, entry),
            }
        }
        let bytes =
            serde_json::to_vec(&index).map_err(|e| ClientError::invalid("index.json", e))?;
        for (name, data) in [
            ("oci-layout", OCI_LAYOUT.as_bytes()),
            ("index.json", &bytes),
        ] {
            let path = self.work.join(name);
            let tmp = tmp_name(&path);
            std::fs::write(&tmp, data).map_err(|e| ClientError::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| ClientError::io(&path, e))?;
        }
        Ok(())
    }

    /// Finishes a staging layout for packing: writes `index.json` and hands over the
    /// temporary directory (deleted when dropped).
    pub fn finish_staging(&self) -> Result<tempfile::TempDir> {
        self.write_index()?;
        self.staging
            .lock()
            .map_err(|_| ClientError::Usage("layout writer poisoned".into()))?
            .take()
            .ok_or_else(|| ClientError::Usage("staging layout already finished".into()))
    }
}

/// Lists `entry` untagged unless an untagged entry of its digest is there.
fn add_untagged(index: &mut LayoutIndex, entry: Descriptor) {
    let dup = index
        .manifests
        .iter()
        .any(|d| d.digest == entry.digest && !d.annotations.contains_key(REF_NAME));
    if !dup {
        index.manifests.push(entry);
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{}", std::process::id(), next_id()));
    path.with_file_name(name)
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[async_trait]
impl ImageDestination for LayoutWriter {
    fn describe(&self) -> String {
        self.what.clone()
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        let path = blob_path(&self.work, &desc.digest);
        Ok(tokio::fs::metadata(&path)
            .await
            .is_ok_and(|m| m.len() == desc.size))
    }

    async fn put_blob(&self, desc: &Descriptor, mut stream: BlobStream) -> Result<()> {
        let path = blob_path(&self.work, &desc.digest);
        let dir = parent_dir(&path);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ClientError::io(&dir, e))?;
        let tmp = tmp_name(&path);
        let result = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| ClientError::io(&tmp, e))?;
            while let Some(chunk) = stream.try_next().await? {
                f.write_all(&chunk)
                    .await
                    .map_err(|e| ClientError::io(&tmp, e))?;
            }
            f.flush().await.map_err(|e| ClientError::io(&tmp, e))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| ClientError::io(&path, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn put_manifest(&self, m: &Manifest, root: bool) -> Result<()> {
        let path = blob_path(&self.work, &m.digest);
        self.write_file_atomic(&path, &m.bytes).await?;
        if root {
            if let Ok(mut r) = self.root.lock() {
                *r = Some(m.descriptor());
            }
        }
        Ok(())
    }

    fn accepts_referrers(&self) -> bool {
        true
    }

    async fn put_referrer(&self, m: &Manifest, tag: Option<&Tag>) -> Result<()> {
        let path = blob_path(&self.work, &m.digest);
        self.write_file_atomic(&path, &m.bytes).await?;
        let mut entry = referrer_entry(m)
            .map(|(_, d)| d)
            .unwrap_or_else(|| m.descriptor());
        if let Some(t) = tag {
            entry.annotations.insert(REF_NAME.to_owned(), t.to_string());
        }
        self.referrers
            .lock()
            .map_err(|_| ClientError::Usage("layout writer poisoned".into()))?
            .push(entry);
        Ok(())
    }

    async fn commit(&self) -> Result<()> {
        if self.target.is_none() && self.work_is_staging() {
            // A staging area for a tarball: packing happens in the archive writer.
            return Ok(());
        }
        self.write_index()?;
        let Some(target) = &self.target else {
            return Ok(());
        };
        let staging = self
            .staging
            .lock()
            .map_err(|_| ClientError::Usage("layout writer poisoned".into()))?
            .take();
        if let Some(tmp) = staging {
            let path = tmp.keep();
            if target.exists() {
                // An empty directory was there (checked at creation).
                let _ = std::fs::remove_dir(target);
            }
            std::fs::rename(&path, target).map_err(|e| ClientError::io(target, e))?;
        }
        Ok(())
    }
}

impl LayoutWriter {
    fn work_is_staging(&self) -> bool {
        self.staging.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}
