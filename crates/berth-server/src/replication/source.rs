//! The two ends of a replication copy: [`LocalSource`] reads an image from this
//! registry's own stores through the service (no HTTP to itself, no pull counted, no
//! trust policy: see [`crate::service::Registry::stored_manifest`]), and [`Target`]
//! writes to the rule's target registry through the client, skipping manifests the
//! target already holds under the same reference, so that a repeated copy writes
//! nothing twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use berth_client::copy::{ImageDestination, ImageSource};
use berth_client::image::{BlobStream, Manifest};
use berth_client::transport::RegistryDestination;
use berth_client::{ClientError, ImageRef};
use berth_oci::{Descriptor, Digest, Reference, RepoName, Tag};
use futures_util::TryStreamExt;

use crate::service::{Registry, RegistryError};

/// The most referrers of one subject a copy carries.
const MAX_REFERRERS: usize = 1000;

/// An image of this registry, named by tag or digest.
pub struct LocalSource {
    registry: Arc<Registry>,
    repo: RepoName,
    reference: Reference,
}

impl LocalSource {
    pub fn new(registry: Arc<Registry>, repo: RepoName, reference: Reference) -> LocalSource {
        LocalSource {
            registry,
            repo,
            reference,
        }
    }

    async fn read(&self, reference: &Reference) -> Result<Option<Manifest>, ClientError> {
        let stored = self
            .registry
            .stored_manifest(&self.repo, reference)
            .await
            .map_err(|e| local_error(&self.repo, e))?;
        Ok(stored.map(|m| Manifest {
            bytes: m.content,
            media_type: m.media_type,
            digest: m.digest,
        }))
    }
}

/// A failure to read this registry, as the copy engine's error.
fn local_error(repo: &RepoName, e: RegistryError) -> ClientError {
    match e {
        RegistryError::BlobUnknown { .. }
        | RegistryError::BlobMissing { .. }
        | RegistryError::ManifestUnknown { .. } => {
            ClientError::NotFound(format!("local {repo}: {e}"))
        }
        e => ClientError::Invalid {
            what: format!("local repository {repo}"),
            detail: e.to_string(),
        },
    }
}

#[async_trait]
impl ImageSource for LocalSource {
    fn describe(&self) -> String {
        match &self.reference {
            Reference::Tag(t) => format!("local {}:{t}", self.repo),
            Reference::Digest(d) => format!("local {}@{d}", self.repo),
        }
    }

    async fn root(&self) -> Result<Manifest, ClientError> {
        self.read(&self.reference)
            .await?
            .ok_or_else(|| ClientError::NotFound(self.describe()))
    }

    async fn manifest(&self, desc: &Descriptor) -> Result<Manifest, ClientError> {
        let m = self
            .read(&Reference::Digest(desc.digest.clone()))
            .await?
            .ok_or_else(|| ClientError::NotFound(format!("local {}@{}", self.repo, desc.digest)))?;
        m.verify(&desc.digest)?;
        Ok(m)
    }

    async fn blob(&self, desc: &Descriptor) -> Result<BlobStream, ClientError> {
        let stream = self
            .registry
            .stored_blob(&self.repo, &desc.digest)
            .await
            .map_err(|e| local_error(&self.repo, e))?;
        let what = format!("local blob {}", desc.digest);
        Ok(Box::pin(stream.map_err(move |e| ClientError::Io {
            path: what.clone().into(),
            source: e,
        })))
    }

    fn tag(&self) -> Option<String> {
        match &self.reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        }
    }

    async fn referrers(
        &self,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>, ClientError> {
        let found = self
            .registry
            .referrers(&self.repo, digest, artifact_type)
            .await
            .map_err(|e| local_error(&self.repo, e))?;
        Ok(Some(
            found
                .into_iter()
                .take(MAX_REFERRERS)
                .map(|r| Descriptor {
                    media_type: r.media_type,
                    digest: r.digest,
                    size: r.size,
                    urls: vec![],
                    annotations: serde_json::from_str(&r.annotations_json).unwrap_or_default(),
                    platform: None,
                    artifact_type: r.artifact_type,
                })
                .collect(),
        ))
    }

    async fn legacy_referrers(
        &self,
        subject: &Digest,
    ) -> Result<Vec<(Tag, Manifest)>, ClientError> {
        let mut out = Vec::new();
        for tag in berth_client::referrers::legacy_tags(subject) {
            if let Some(m) = self.read(&Reference::Tag(tag.clone())).await? {
                out.push((tag, m));
            }
        }
        Ok(out)
    }
}

/// The target repository of a copy: the client's registry destination, with a `HEAD`
/// before each manifest write that skips it when the target already holds that digest
/// under that reference.
pub struct Target {
    inner: RegistryDestination,
    client: berth_client::Registry,
    image: ImageRef,
    /// Manifests actually written.
    written: AtomicUsize,
}

impl Target {
    /// The repository `repo` of `client`'s registry; a root manifest goes under `tag`,
    /// else by digest.
    pub fn new(client: berth_client::Registry, repo: RepoName, tag: Option<Tag>) -> Target {
        let mut image = ImageRef::new(client.host(), repo);
        image.tag = tag;
        Target {
            inner: RegistryDestination::new(client.clone(), image.clone()),
            client,
            image,
            written: AtomicUsize::new(0),
        }
    }

    /// How many manifests this target was written (those it held were skipped).
    pub fn written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }

    /// Whether the target holds `m` under `reference` already.
    async fn holds(&self, reference: &Reference, m: &Manifest) -> Result<bool, ClientError> {
        Ok(self
            .client
            .head_manifest(&self.image.repository, reference)
            .await?
            .is_some_and(|d| d.digest == m.digest))
    }
}

#[async_trait]
impl ImageDestination for Target {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool, ClientError> {
        self.inner.has_blob(desc).await
    }

    async fn put_blob(&self, desc: &Descriptor, stream: BlobStream) -> Result<(), ClientError> {
        self.inner.put_blob(desc, stream).await
    }

    async fn put_manifest(&self, m: &Manifest, root: bool) -> Result<(), ClientError> {
        let reference = match (&self.image.tag, root) {
            (Some(t), true) => Reference::Tag(t.clone()),
            _ => Reference::Digest(m.digest.clone()),
        };
        if self.holds(&reference, m).await? {
            return Ok(());
        }
        self.inner.put_manifest(m, root).await?;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn accepts_referrers(&self) -> bool {
        true
    }

    async fn put_referrer(&self, m: &Manifest, tag: Option<&Tag>) -> Result<(), ClientError> {
        let reference = match tag {
            Some(t) => Reference::Tag(t.clone()),
            None => Reference::Digest(m.digest.clone()),
        };
        if self.holds(&reference, m).await? {
            return Ok(());
        }
        self.inner.put_referrer(m, tag).await?;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn commit(&self) -> Result<(), ClientError> {
        self.inner.commit().await
    }
}
