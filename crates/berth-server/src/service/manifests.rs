//! Manifests and tags: fetch (with the `Accept` fallback for clients that cannot read an
//! index), push (verify, parse, check the tag policy, store atomically) and delete.
//!
//! The stored bytes are the pushed bytes; the digest is computed over them and is the
//! manifest's identity. Parsing only extracts what the registry must check or index.

use std::sync::Arc;

use berth_meta::{NewManifest, StoredManifest, TagGuard};
use berth_oci::config::{version_of_config, VERSION_LABEL};
use berth_oci::manifest::essence;
use berth_oci::media_types as mt;
use berth_oci::reference::ReferenceError;
use berth_oci::{Digest, ParsedManifest, Reference, RepoName, Tag};
use bytes::Bytes;

use super::{Fetch, Registry, RegistryError, Result};
use crate::events::{Actor, Event};

/// The largest image config read to learn an image's platform and version.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The most children of an index read to learn the version they agree on.
const MAX_CHILDREN_READ: usize = 64;

/// A manifest push, as received.
pub struct ManifestPush {
    /// The reference in the URL: a tag or a digest.
    pub reference: String,
    /// More tags (`?tag=`), in the order given.
    pub tags: Vec<String>,
    /// The request's `Content-Type`.
    pub content_type: Option<String>,
    /// The exact bytes, already capped at [`Registry::max_manifest_bytes`].
    pub body: Bytes,
    /// Skip the tag policy (`?force=true`); needs `may_force`.
    pub force: bool,
    /// Whether the caller administers the repository.
    pub may_force: bool,
    pub actor: Actor,
}

/// What a push stored.
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// The tags now pointing at the manifest.
    pub tags: Vec<Tag>,
    /// The tags held by the publish gate until the manifest is signed.
    pub waiting: Vec<Tag>,
}

/// Parses a manifest reference from a URL.
pub fn parse_reference(raw: &str) -> Result<Reference> {
    Reference::parse(raw).map_err(|e| match e {
        ReferenceError::Digest(d) => RegistryError::Digest(d),
        ReferenceError::Tag(t) => RegistryError::ManifestInvalid(t.to_string()),
    })
}

fn accepts(accept: &[String], media_type: &str) -> bool {
    accept.is_empty()
        || accept.iter().any(|a| {
            a == media_type || a == "*/*" || a == "application/*" || a == "application/json"
        })
}

/// The media types an `Accept` header value lists, without parameters.
pub fn accepted<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| v.split(','))
        .map(|t| essence(t).to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

impl Registry {
    pub(super) async fn lookup(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>> {
        Ok(match reference {
            Reference::Tag(t) => self.meta.manifest_by_tag(repo, t).await?,
            Reference::Digest(d) => self.meta.manifest_by_digest(repo, d).await?,
        })
    }

    /// The manifest `raw` names in `repo`, in a media type the client accepts (`accept`
    /// empty means anything), for its content ([`Fetch::Content`]).
    pub async fn manifest(
        &self,
        repo: &RepoName,
        raw: &str,
        accept: &[String],
    ) -> Result<(Reference, StoredManifest)> {
        self.fetch_manifest(repo, raw, accept, Fetch::Content).await
    }

    /// The manifest `raw` names in `repo`, in a media type the client accepts (`accept`
    /// empty means anything). For a client that cannot read an index, its `linux/amd64`
    /// image, as Distribution does for old Docker clients. The trust policy may refuse
    /// it ([`RegistryError::SignatureRequired`]) depending on `fetch`; a tag waiting for
    /// a signature is unknown.
    pub async fn fetch_manifest(
        &self,
        repo: &RepoName,
        raw: &str,
        accept: &[String],
        fetch: Fetch,
    ) -> Result<(Reference, StoredManifest)> {
        // A reference that cannot name anything is simply not there (as in Distribution,
        // whose routes do not match it): unknown, not invalid.
        let reference = parse_reference(raw).map_err(|e| match e {
            RegistryError::ManifestInvalid(m) => RegistryError::ManifestUnknown {
                repo: repo.clone(),
                reference: format!("{raw:?} ({m})"),
            },
            e => e,
        })?;
        let m =
            self.lookup(repo, &reference)
                .await?
                .ok_or_else(|| RegistryError::ManifestUnknown {
                    repo: repo.clone(),
                    reference: reference.to_string(),
                })?;
        // Decided on the manifest named: a child served in place of a signed index is a
        // child of a signed index.
        self.check_fetch(repo, &reference, &m, fetch).await?;
        if accepts(accept, &m.media_type) {
            return Ok((reference, m));
        }
        let fallback = if mt::is_index(&m.media_type) {
            self.single_platform_fallback(repo, &m, accept).await?
        } else {
            None
        };
        match fallback {
            Some(child) => Ok((reference, child)),
            None => Err(RegistryError::ManifestNotAcceptable {
                reference: reference.to_string(),
                media_type: m.media_type,
            }),
        }
    }

    async fn single_platform_fallback(
        &self,
        repo: &RepoName,
        index: &StoredManifest,
        accept: &[String],
    ) -> Result<Option<StoredManifest>> {
        let Ok(parsed) = ParsedManifest::parse(&index.content, Some(&index.media_type)) else {
            return Ok(None);
        };
        let child = parsed.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                && accepts(accept, &d.media_type)
        });
        match child {
            Some(d) => Ok(self.meta.manifest_by_digest(repo, &d.digest).await?),
            None => Ok(None),
        }
    }

    /// Stores a manifest and its tags in one transaction, after checking its digest,
    /// that everything it references is in the repository, and the tag policy.
    pub async fn push_manifest(
        &self,
        repo: &RepoName,
        push: ManifestPush,
    ) -> Result<PushedManifest> {
        let reference = parse_reference(&push.reference)?;
        let mut tags: Vec<Tag> = Vec::new();
        for t in &push.tags {
            let t = Tag::parse(t).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let body = push.body;
        let digest = match &reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &body);
                if &actual != d {
                    return Err(RegistryError::ManifestDigestMismatch {
                        expected: d.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(t) => {
                if !tags.contains(t) {
                    tags.insert(0, t.clone());
                }
                Digest::sha256(&body)
            }
        };
        let guard = self.guard(repo, push.force, push.may_force)?;
        // A manifest already stored adds no bytes: re-tagging is never refused. Its bytes
        // are reserved until the write below stores them (see `quota`'s module docs).
        let hold = if self.quota_of(repo).is_some()
            && self.meta.manifest_by_digest(repo, &digest).await?.is_none()
        {
            self.reserve_quota(
                repo,
                berth_meta::ReservedKind::Manifest,
                &digest,
                body.len() as u64,
            )
            .await?
        } else {
            None
        };
        let parsed = ParsedManifest::parse(&body, push.content_type.as_deref())
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let annotations_json = if parsed.annotations.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&parsed.annotations).unwrap_or_default()
        };
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let (version, platform) = self.version_and_platform(repo, &digest, &parsed).await;
        let new = NewManifest {
            digest: digest.clone(),
            media_type: parsed.kind.media_type().to_owned(),
            content: body,
            blobs: parsed.required_blobs().map(|d| d.digest.clone()).collect(),
            children: parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
            subject: subject.clone(),
            artifact_type: parsed.effective_artifact_type().map(str::to_owned),
            annotations_json,
            version,
            platform,
            mirrored: false,
        };
        let gate = self
            .push_gate(repo, &digest, &new.content, &parsed, &tags)
            .await?;
        let outcome = self
            .meta
            .manifest_put_gated(repo, &new, &tags, Some(guard), &gate)
            .await;
        super::quota::release(hold).await;
        let outcome = outcome?;
        self.record_layers(repo, &digest, &parsed).await;
        // A new referrer (or cosign v2 tag) of a digest may be a signature of it.
        let attached_to = gate
            .signs
            .as_ref()
            .map(|s| s.subject.clone())
            .or_else(|| subject.clone())
            .or_else(|| {
                tags.iter()
                    .find_map(|t| berth_meta::artifact_tags::legacy_subject(t.as_str()))
            });
        if let Some(s) = &attached_to {
            self.verdicts.forget(repo.as_str(), Some(s));
        }
        self.emit(Event::ManifestPushed {
            repo: repo.clone(),
            digest: digest.clone(),
            tags: tags.clone(),
            subject: subject.clone(),
            forced: push.force,
            actor: push.actor,
        })
        .await;
        let (waiting, visible): (Vec<Tag>, Vec<Tag>) = tags
            .into_iter()
            .partition(|t| outcome.held.iter().any(|h| h == t.as_str()));
        for tag in &visible {
            self.emit(Event::TagMoved {
                repo: repo.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
            })
            .await;
        }
        if let Some(signed) = gate.signs.as_ref().map(|s| &s.subject) {
            for (tag, why) in &outcome.dropped {
                tracing::warn!(repo = %repo, tag, digest = %signed, reason = why, "a tag waiting for this signature was dropped");
            }
            for name in &outcome.revealed {
                if let Ok(tag) = Tag::parse(name) {
                    self.emit(Event::TagMoved {
                        repo: repo.clone(),
                        tag,
                        digest: signed.clone(),
                    })
                    .await;
                }
            }
        }
        Ok(PushedManifest {
            digest,
            subject,
            tags: visible,
            waiting,
        })
    }

    /// Deletes a tag (the manifest stays) or a manifest with every tag on it. Returns
    /// `ManifestUnknown` when there is nothing to delete.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        raw: &str,
        force: bool,
        may_force: bool,
        actor: Actor,
    ) -> Result<()> {
        let reference = parse_reference(raw)?;
        let guard = Some(self.guard(repo, force, may_force)?);
        // A deletion must work on a full disk, so that space can be freed through the API.
        let deleted = match &reference {
            Reference::Tag(t) => {
                self.freeing_space(|| self.meta.tag_delete(repo, t, guard.clone()))
                    .await?
            }
            Reference::Digest(d) => {
                self.freeing_space(|| self.meta.manifest_delete(repo, d, guard.clone()))
                    .await?
            }
        };
        // A deleted manifest may have been a signature, of any digest of the repository.
        self.verdicts.forget(repo.as_str(), None);
        if !deleted {
            return Err(RegistryError::ManifestUnknown {
                repo: repo.clone(),
                reference: reference.to_string(),
            });
        }
        let event = match reference {
            Reference::Tag(tag) => Event::TagDeleted {
                repo: repo.clone(),
                tag,
                actor,
            },
            Reference::Digest(digest) => Event::ManifestDeleted {
                repo: repo.clone(),
                digest,
                actor,
            },
        };
        self.emit(event).await;
        Ok(())
    }

    /// The tag policy's guard for a change in `repo`; forcing needs `may_force`.
    fn guard(&self, repo: &RepoName, force: bool, may_force: bool) -> Result<Arc<dyn TagGuard>> {
        if force && !may_force {
            return Err(RegistryError::ForceDenied(repo.clone()));
        }
        Ok(Arc::new(self.policy.guard(repo.as_str(), force)))
    }

    /// The release version and platform of a manifest being pushed. The version is, in
    /// order: its `org.opencontainers.image.version` annotation; its config's label of
    /// that name (the usual Dockerfile `LABEL`); for an index or list, the version all of
    /// its children agree on (children carry the version of their release, so a list
    /// re-wrapped by a client that drops annotations keeps it). The platform of a
    /// single-platform image comes from its config. A manifest already in the repository
    /// keeps what its first push learned (pushing it under another tag is common).
    async fn version_and_platform(
        &self,
        repo: &RepoName,
        digest: &Digest,
        parsed: &ParsedManifest,
    ) -> (Option<String>, Option<String>) {
        let annotated = parsed.annotations.get(VERSION_LABEL).cloned();
        if let Ok(Some(stored)) = self.meta.manifest_by_digest(repo, digest).await {
            return (annotated.or(stored.version), stored.platform);
        }
        if parsed.config.is_some() {
            let config = self.read_config(repo, parsed).await;
            let platform = config
                .as_deref()
                .and_then(berth_oci::config::platform_of_config)
                .map(|p| p.to_string());
            let version = annotated.or_else(|| config.as_deref().and_then(version_of_config));
            return (version, platform);
        }
        if annotated.is_none() && !parsed.manifests.is_empty() {
            return (self.children_version(repo, parsed).await, None);
        }
        (annotated, None)
    }

    /// The version every child of an index has (the first [`MAX_CHILDREN_READ`] are
    /// read), or `None` when one has none or they differ.
    async fn children_version(&self, repo: &RepoName, parsed: &ParsedManifest) -> Option<String> {
        let mut agreed: Option<String> = None;
        for child in parsed.manifests.iter().take(MAX_CHILDREN_READ) {
            let v = self
                .meta
                .manifest_by_digest(repo, &child.digest)
                .await
                .ok()??
                .version?;
            match &agreed {
                Some(a) if *a != v => return None,
                Some(_) => {}
                None => agreed = Some(v),
            }
        }
        agreed
    }

    /// The bytes of a single-platform image's config, read once at push time: only a
    /// config the repository holds (so a pusher cannot make the server read another
    /// repository's blob), whose declared size is its size, of at most
    /// [`MAX_CONFIG_BYTES`].
    async fn read_config(&self, repo: &RepoName, parsed: &ParsedManifest) -> Option<Vec<u8>> {
        let config = parsed.config.as_ref()?;
        if config.media_type != mt::OCI_CONFIG && config.media_type != mt::DOCKER_CONFIG {
            return None;
        }
        let size = self.meta.blob_size(repo, &config.digest).await.ok()??;
        if size > MAX_CONFIG_BYTES || size != config.size {
            return None;
        }
        let body = self.blobs.get(&config.digest, None).await.ok()?;
        let mut bytes = Vec::with_capacity(size as usize);
        let mut stream = body.stream;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            bytes.extend_from_slice(&chunk.ok()?);
            if bytes.len() as u64 > MAX_CONFIG_BYTES {
                return None;
            }
        }
        Some(bytes)
    }
}
