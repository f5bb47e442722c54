//! The copy engine: moves an image, or an index with every (or one) platform, from an
//! [`ImageSource`] to an [`ImageDestination`].
//!
//! Order of work: resolve the root manifest, pick the platform if asked, fetch every
//! child manifest (verified by digest), then move the distinct blobs in parallel (at most
//! `jobs` at once), skipping blobs the destination has and mounting blobs from the same
//! registry, then write child manifests and finally the root. A destination only makes
//! the image visible in [`ImageDestination::commit`].
//!
//! **Referrers** (signatures, attestations, SBOMs) travel with their subjects unless
//! [`CopyOptions::referrers`] is off and the destination holds them
//! ([`ImageDestination::accepts_referrers`]): for every manifest copied, the source lists
//! its referrers ([`ImageSource::referrers`]: the referrers API, else the referrers tag
//! schema) and the manifests under its cosign v2 tags ([`ImageSource::legacy_referrers`]),
//! then the referrers of those, breadth first, each manifest once, at most
//! [`MAX_REFERRER_DEPTH`] levels down. Their blobs join the image's in the parallel
//! transfer; they are written after the root and before [`ImageDestination::commit`], a
//! cosign v2 manifest under its tag, the others by digest (a registry without the
//! referrers API gets them in its tag schema's index, see [`crate::referrers`]).
//!
//! **Invariant:** manifests are written with the exact bytes read, so digests are
//! preserved (and signatures over them stay valid); every blob is verified against its
//! descriptor while it streams.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Descriptor, Digest, RepoName, Tag};
use futures_util::{StreamExt, TryStreamExt};

use crate::error::{ClientError, Result};
use crate::image::{verify_stream, BlobStream, Manifest, PlatformFilter};
use crate::progress::{BlobOutcome, Progress};

/// Where images are read from. Implemented for registries, layouts and tarballs.
#[async_trait]
pub trait ImageSource: Send + Sync {
    /// A name for messages, e.g. `oci:./dir:v1`.
    fn describe(&self) -> String;
    /// The manifest or index the location names.
    async fn root(&self) -> Result<Manifest>;
    /// A child manifest of an index, verified against `desc.digest`.
    async fn manifest(&self, desc: &Descriptor) -> Result<Manifest>;
    /// A blob's bytes; the caller verifies them.
    async fn blob(&self, desc: &Descriptor) -> Result<BlobStream>;
    /// The registry host and repository, when the source is a registry (for mounts).
    fn registry_origin(&self) -> Option<(&str, &RepoName)> {
        None
    }
    /// The tag the source was named by, used when the destination names none.
    fn tag(&self) -> Option<String> {
        None
    }
    /// The full image name with tag (for a docker-archive's `RepoTags`).
    fn image_name(&self) -> Option<String> {
        None
    }
    /// The referrers of the manifest `digest` (only those of `artifact_type` when given),
    /// or `None` when the source cannot list referrers (a docker-archive holds none).
    async fn referrers(
        &self,
        _digest: &Digest,
        _artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>> {
        Ok(None)
    }
    /// The manifests kept under the cosign v2 tags of `subject` (`sha256-<hex>.sig`,
    /// `.att`, `.sbom`), each with its tag; empty for sources without tags.
    async fn legacy_referrers(&self, _subject: &Digest) -> Result<Vec<(Tag, Manifest)>> {
        Ok(Vec::new())
    }
}

/// Where images are written. Implemented for registries, layouts and tarballs.
#[async_trait]
pub trait ImageDestination: Send + Sync {
    fn describe(&self) -> String;
    /// False for destinations that hold single images (docker-archive).
    fn accepts_index(&self) -> bool {
        true
    }
    /// True when the destination already has this blob.
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool>;
    /// Tries to mount the blob from another repository of the same registry.
    async fn mount_blob(&self, _desc: &Descriptor, _host: &str, _from: &RepoName) -> Result<bool> {
        Ok(false)
    }
    /// Writes a blob from a stream that fails at its end if the digest is wrong.
    async fn put_blob(&self, desc: &Descriptor, stream: BlobStream) -> Result<()>;
    /// Writes a manifest; the `root` one gets the destination's tag.
    async fn put_manifest(&self, m: &Manifest, root: bool) -> Result<()>;
    /// True when the destination can hold referrers ([`ImageDestination::put_referrer`]).
    fn accepts_referrers(&self) -> bool {
        false
    }
    /// Writes a referrer copied with its subject (its blobs and child manifests are
    /// written already): under `tag` when the source kept it under a cosign v2 tag, else
    /// by digest, findable from its subject.
    async fn put_referrer(&self, m: &Manifest, tag: Option<&Tag>) -> Result<()> {
        let _ = tag;
        Err(ClientError::Unsupported(format!(
            "{} cannot hold referrers such as {}",
            self.describe(),
            m.digest
        )))
    }
    /// Makes the written image visible under its final name.
    async fn commit(&self) -> Result<()>;
}

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Copy only this platform of an index (the result is that platform's image).
    pub platform: Option<PlatformFilter>,
    /// Blobs moved at once.
    pub jobs: usize,
    /// Retries of one blob after a retryable failure.
    pub retries: u32,
    pub retry_base: Duration,
    /// Copy the referrers of every manifest copied (signatures, attestations, SBOMs),
    /// recursively, when the destination can hold them.
    pub referrers: bool,
}

/// Levels of referrers of referrers followed by a copy.
pub const MAX_REFERRER_DEPTH: usize = 4;

impl Default for CopyOptions {
    fn default() -> CopyOptions {
        CopyOptions {
            platform: None,
            jobs: 6,
            retries: 3,
            retry_base: Duration::from_millis(250),
            referrers: true,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    pub digest: Digest,
    pub media_type: String,
    pub manifests: usize,
    pub blobs: usize,
    pub copied: usize,
    pub skipped: usize,
    pub mounted: usize,
    pub bytes_copied: u64,
    /// Referrers written (signatures, attestations, SBOMs and their own referrers).
    pub referrers: usize,
}

/// The manifests and blobs one copy moves.
struct Plan {
    root: Manifest,
    /// Child manifests, each after its own children.
    children: Vec<Manifest>,
    blobs: Vec<Descriptor>,
    /// Referrers to write after the root, each after its subject.
    referrers: Vec<ReferrerCopy>,
}

/// A referrer to copy: its manifest, its child manifests (for an index) and the cosign
/// v2 tag it was found under.
struct ReferrerCopy {
    manifest: Manifest,
    children: Vec<Manifest>,
    tag: Option<Tag>,
}

fn platforms_of(index: &berth_oci::ParsedManifest) -> String {
    let names: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    if names.is_empty() {
        "none declared".into()
    } else {
        names.join(", ")
    }
}

/// Picks the platform's image out of an index, or explains what is there.
async fn select_platform(
    src: &dyn ImageSource,
    index: &Manifest,
    filter: &PlatformFilter,
    explicit: bool,
) -> Result<Manifest> {
    let parsed = index.parse()?;
    let found = parsed
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| filter.matches(p)));
    match found {
        Some(d) => src.manifest(d).await,
        None if !explicit && parsed.manifests.len() == 1 => {
            src.manifest(&parsed.manifests[0]).await
        }
        None if explicit => Err(ClientError::NotFound(format!(
            "platform {filter} in {} (it has: {})",
            src.describe(),
            platforms_of(&parsed)
        ))),
        None => Err(ClientError::Usage(format!(
            "{} is a multi-platform index and the destination holds one image; pick one with --platform (it has: {})",
            src.describe(),
            platforms_of(&parsed)
        ))),
    }
}

async fn gather(
    src: &dyn ImageSource,
    m: &Manifest,
    depth: usize,
    jobs: usize,
    children: &mut Vec<Manifest>,
    blobs: &mut Vec<Descriptor>,
) -> Result<()> {
    if depth > 8 {
        return Err(ClientError::invalid(
            src.describe(),
            "indexes nested too deeply",
        ));
    }
    let parsed = m.parse()?;
    if !parsed.kind.is_index() {
        blobs.extend(parsed.required_blobs().cloned());
        return Ok(());
    }
    // Owned descriptors: a closure over borrowed ones makes the copy's future fail to be
    // `Send` for a caller that spawns it (rustc cannot prove it for every lifetime).
    let fetched: Vec<Manifest> = futures_util::stream::iter(parsed.manifests.iter().cloned())
        .map(|d| async move { src.manifest(&d).await })
        .buffered(jobs.max(1))
        .try_collect()
        .await?;
    for child in fetched {
        Box::pin(gather(src, &child, depth + 1, jobs, children, blobs)).await?;
        children.push(child);
    }
    Ok(())
}

async fn plan(
    src: &dyn ImageSource,
    dst: &dyn ImageDestination,
    opts: &CopyOptions,
) -> Result<Plan> {
    let mut root = src.root().await?;
    if root.is_index() {
        if let Some(f) = &opts.platform {
            root = select_platform(src, &root, f, true).await?;
        } else if !dst.accepts_index() {
            root = select_platform(src, &root, &PlatformFilter::host(), false).await?;
        }
    }
    if root.is_index() && !dst.accepts_index() {
        return Err(ClientError::Unsupported(format!(
            "{} holds single images, and the selected platform is itself an index",
            dst.describe()
        )));
    }
    let mut children = Vec::new();
    let mut blobs = Vec::new();
    gather(src, &root, 0, opts.jobs, &mut children, &mut blobs).await?;
    let mut seen = HashSet::new();
    children.retain(|c| seen.insert(c.digest.clone()));
    let referrers = if opts.referrers && dst.accepts_referrers() {
        let subjects = std::iter::once(&root)
            .chain(&children)
            .map(|m| m.digest.clone())
            .collect();
        gather_referrers(src, subjects, opts.jobs, &mut blobs).await?
    } else {
        Vec::new()
    };
    let mut seen = HashSet::new();
    blobs.retain(|b| seen.insert(b.digest.clone()));
    Ok(Plan {
        root,
        children,
        blobs,
        referrers,
    })
}

/// What a source says refers to one subject: its referrers' descriptors (`None` when
/// the source cannot list them) and the manifests under its cosign v2 tags.
type Found = (Option<Vec<Descriptor>>, Vec<(Tag, Manifest)>);

/// Finds the referrers of `subjects`, then theirs, breadth first, at most
/// [`MAX_REFERRER_DEPTH`] levels; reads each one's child manifests and adds its blobs to
/// `blobs`. The subjects themselves are never taken for referrers, so a cycle ends.
async fn gather_referrers(
    src: &dyn ImageSource,
    subjects: Vec<Digest>,
    jobs: usize,
    blobs: &mut Vec<Descriptor>,
) -> Result<Vec<ReferrerCopy>> {
    let mut seen: HashSet<Digest> = subjects.iter().cloned().collect();
    let mut level = subjects;
    let mut out = Vec::new();
    for _ in 0..MAX_REFERRER_DEPTH {
        if level.is_empty() {
            break;
        }
        let found: Vec<Found> = futures_util::stream::iter(level.iter().cloned())
            .map(|d| async move {
                let listed = src.referrers(&d, None).await?;
                let legacy = src.legacy_referrers(&d).await?;
                Ok::<_, ClientError>((listed, legacy))
            })
            .buffered(jobs.max(1))
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for (listed, legacy) in found {
            let mut new: Vec<(Manifest, Option<Tag>)> = Vec::new();
            // Tagged ones first: a manifest both listed and tagged keeps its tag.
            for (tag, m) in legacy {
                if seen.insert(m.digest.clone()) {
                    new.push((m, Some(tag)));
                }
            }
            let descs: Vec<Descriptor> = listed
                .unwrap_or_default()
                .into_iter()
                .filter(|d| seen.insert(d.digest.clone()))
                .collect();
            let fetched: Vec<Manifest> = futures_util::stream::iter(descs.iter().cloned())
                .map(|d| async move { src.manifest(&d).await })
                .buffered(jobs.max(1))
                .try_collect()
                .await?;
            new.extend(fetched.into_iter().map(|m| (m, None)));
            for (manifest, tag) in new {
                let mut children = Vec::new();
                gather(src, &manifest, 0, jobs, &mut children, blobs).await?;
                let mut seen_children = HashSet::new();
                children.retain(|c| seen_children.insert(c.digest.clone()));
                next.push(manifest.digest.clone());
                out.push(ReferrerCopy {
                    manifest,
                    children,
                    tag,
                });
            }
        }
        level = next;
    }
    Ok(out)
}

async fn copy_blob(
    src: &dyn ImageSource,
    dst: &dyn ImageDestination,
    desc: &Descriptor,
    opts: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<BlobOutcome> {
    if dst.has_blob(desc).await? {
        progress.blob_done(&desc.digest, desc.size, BlobOutcome::Skipped);
        return Ok(BlobOutcome::Skipped);
    }
    if let Some((host, repo)) = src.registry_origin() {
        if dst.mount_blob(desc, host, repo).await? {
            progress.blob_done(&desc.digest, desc.size, BlobOutcome::Mounted);
            return Ok(BlobOutcome::Mounted);
        }
    }
    let mut attempt = 0;
    loop {
        progress.blob_started(&desc.digest, desc.size);
        let result = async {
            let stream = src.blob(desc).await?;
            let p = progress.clone();
            let d = desc.digest.clone();
            let stream = verify_stream(stream, desc, Box::new(move |n| p.blob_bytes(&d, n)));
            dst.put_blob(desc, stream).await
        }
        .await;
        match result {
            Ok(()) => {
                progress.blob_done(&desc.digest, desc.size, BlobOutcome::Copied);
                return Ok(BlobOutcome::Copied);
            }
            Err(e) if e.is_retryable() && attempt < opts.retries => {
                progress.note(&format!("retrying blob {}: {e}", desc.digest));
                tokio::time::sleep(opts.retry_base.saturating_mul(1 << attempt.min(6))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Copies the image or index `src` names to `dst`.
pub async fn copy_image(
    src: &dyn ImageSource,
    dst: &dyn ImageDestination,
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopyReport> {
    let plan = plan(src, dst, opts).await?;
    progress.plan(plan.blobs.len(), plan.blobs.iter().map(|b| b.size).sum());
    let outcomes: Vec<(BlobOutcome, u64)> = futures_util::stream::iter(plan.blobs.iter().cloned())
        .map(|b| {
            let progress = &progress;
            async move {
                copy_blob(src, dst, &b, opts, progress)
                    .await
                    .map(|o| (o, b.size))
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .try_collect()
        .await?;
    for child in &plan.children {
        dst.put_manifest(child, false).await?;
        progress.manifest_written(&child.digest, &child.media_type, &dst.describe());
    }
    // Referrers before the root, whose write moves the tag: a copy that fails on a
    // signature leaves the destination's tag where it was, never on an image without its
    // signatures. (OCI 1.1 lets a referrer arrive before its subject; the tag-schema and
    // cosign-tag fallbacks do not need the subject either.)
    for r in &plan.referrers {
        for child in &r.children {
            dst.put_manifest(child, false).await?;
        }
        dst.put_referrer(&r.manifest, r.tag.as_ref()).await?;
        progress.manifest_written(&r.manifest.digest, &r.manifest.media_type, &dst.describe());
    }
    dst.put_manifest(&plan.root, true).await?;
    dst.commit().await?;
    progress.manifest_written(&plan.root.digest, &plan.root.media_type, &dst.describe());
    progress.finish();
    let count = |o: BlobOutcome| outcomes.iter().filter(|(x, _)| *x == o).count();
    Ok(CopyReport {
        digest: plan.root.digest.clone(),
        media_type: plan.root.media_type.clone(),
        manifests: plan.children.len() + 1,
        blobs: outcomes.len(),
        copied: count(BlobOutcome::Copied),
        skipped: count(BlobOutcome::Skipped),
        mounted: count(BlobOutcome::Mounted),
        bytes_copied: outcomes
            .iter()
            .filter(|(o, _)| *o == BlobOutcome::Copied)
            .map(|(_, s)| s)
            .sum(),
        referrers: plan.referrers.len(),
    })
}
