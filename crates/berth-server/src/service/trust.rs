//! The trust policy at work: required signatures on pulls, and the publish gate on
//! pushes (see `crate::policy::TrustPolicy` for the rules).
//!
//! The server verifies signatures itself with `berth_trust`, the same code as the client,
//! from what it stores: the referrers of a digest in the metadata store (manifests whose
//! `subject` is the digest, and those its cosign v2 `sha256-<hex>.sig` tag points at),
//! the bundle or simple-signing layers of those manifests read from the blob store. It
//! never does network I/O to verify (bundles carry no transparency-log entry to check,
//! and keyless certificates are refused as unsupported).
//!
//! Verdicts are cached per (repository, digest): the keys whose valid signature the
//! digest has. A push of any manifest that names the digest as its subject (or a cosign
//! v2 tag of it) drops that entry; any deletion in a repository drops the repository's
//! entries (a deleted manifest may have been a signature). Entries also expire after
//! [`VERDICT_TTL`], which bounds how long a change made by another process sharing the
//! stores (`berth admin`, a second server) goes unseen. A reader notes the cache's
//! generation before reading the stores and keeps its answer only if no invalidation
//! happened meanwhile, so a verdict read before a signature arrived is never cached
//! after it.
//!
//! **Index children.** A manifest listed as a child by an index of the same repository
//! that has a valid signature counts as signed: a signed multi-arch image is pulled by
//! fetching the index, then each platform's manifest by digest, and cosign signs the
//! index only unless asked to recurse. A child's own signature counts too. Only direct
//! parents and their parents are looked at (indexes of indexes, two levels).
//!
//! **The gate's transaction.** A push that carries a release tag, onto a manifest with
//! no valid signature, stores the manifest and holds every tag of the push as pending
//! (`berth_meta::Gate::hold_unless_signed_by`); the push of a signature that verifies
//! records it and reveals the subject's pending tags in the same metadata transaction
//! (`berth_meta::Gate::signs`). The store re-checks recorded signatures inside the
//! holding transaction, so a signature stored between this module's check and the
//! hold is not missed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_meta::{artifact_tags, Gate, PendingTag, RecordedSignature, SignatureRecord};
use berth_oci::{Digest, ParsedManifest, Reference, RepoName, Tag};
use berth_trust::oci::{LegacyKind, Manifest, SignatureArtifact};
use berth_trust::verify::{verify_bundle_referrer, verify_legacy_layer};
use berth_trust::Requirements;

use super::{Registry, RegistryError, Result};
use crate::policy::{classify, TagKind, TrustRule};

/// The largest signature layer (a bundle, a simple-signing payload) read to verify.
const MAX_SIGNATURE_BLOB: u64 = 1 << 20;
/// The most referrers of one digest examined for a signature.
const MAX_REFERRERS: usize = 64;
/// The most indexes examined when looking for a signed parent of a manifest.
const MAX_PARENTS: usize = 16;
/// How long a verdict is trusted without re-reading the stores.
pub const VERDICT_TTL: Duration = Duration::from_secs(30);
/// Entries kept in the verdict cache before it starts over.
const MAX_CACHED_VERDICTS: usize = 16_384;

/// How a manifest is being fetched, for the trust policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Its content (`GET`).
    Content,
    /// Its existence, media type and size only (`HEAD`); `may_push` when the caller may
    /// push to the repository (then an unsigned manifest may be checked by digest: it is
    /// how a signer learns what it signs).
    Check { may_push: bool },
}

/// Verdicts per (repository, digest): the fingerprints of the keys with a valid
/// signature of the digest itself.
#[derive(Default)]
pub(super) struct VerdictCache {
    inner: Mutex<CacheInner>,
}

/// The fingerprints of the keys that signed a digest, and when that was read.
type Cached = (Arc<BTreeSet<String>>, Instant);

#[derive(Default)]
struct CacheInner {
    /// (repository, digest) → verdict.
    verdicts: HashMap<(String, String), Cached>,
    generation: u64,
}

impl VerdictCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, repo: &str, digest: &str) -> Option<Arc<BTreeSet<String>>> {
        self.lock()
            .verdicts
            .get(&(repo.to_owned(), digest.to_owned()))
            .filter(|(_, at)| at.elapsed() < VERDICT_TTL)
            .map(|(keys, _)| keys.clone())
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn put(&self, repo: &str, digest: &str, keys: Arc<BTreeSet<String>>, seen: u64) {
        let mut c = self.lock();
        if c.generation != seen {
            return;
        }
        if c.verdicts.len() >= MAX_CACHED_VERDICTS {
            c.verdicts.clear();
        }
        c.verdicts
            .insert((repo.to_owned(), digest.to_owned()), (keys, Instant::now()));
    }

    /// Drops the verdict of `digest`, or every verdict of `repo` when `None`.
    pub(super) fn forget(&self, repo: &str, digest: Option<&Digest>) {
        let mut c = self.lock();
        c.generation += 1;
        match digest {
            Some(d) => {
                c.verdicts.remove(&(repo.to_owned(), d.to_string()));
            }
            None => c.verdicts.retain(|(r, _), _| r != repo),
        }
    }
}

/// The trust state of a repository, for the dashboard.
#[derive(Debug, Clone, Default)]
pub struct TrustOverview {
    /// Whether a trust rule with keys applies to the repository.
    pub required: bool,
    /// Tags waiting for a signature.
    pub pending: Vec<PendingTag>,
    /// Per manifest digest: the fingerprints of keys with a valid signature of it (or
    /// of an index listing it), when `required`.
    pub signed: HashMap<Digest, BTreeSet<String>>,
    /// Per manifest digest: the signature and attestation artifacts attached to it.
    pub artifacts: HashMap<Digest, Vec<AttachedArtifact>>,
    /// Signatures the server verified when they were pushed.
    pub recorded: Vec<RecordedSignature>,
}

/// A signature or attestation attached to a manifest, as its manifest describes it, with
/// the keys it was verified with when the repository has a trust rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedArtifact {
    pub digest: Digest,
    pub kind: ArtifactKind,
    /// The predicate type of an attestation, when its manifest names it.
    pub predicate_type: Option<String>,
    /// The fingerprints of the repository's keys that verify it as a signature of its
    /// subject (empty without a trust rule).
    pub keys: BTreeSet<String>,
}

/// What an attached artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A cosign v3 bundle referrer (a signature or an attestation by its predicate).
    Bundle,
    /// A cosign v2 `.sig` manifest.
    LegacySignature,
    /// A cosign v2 `.att` manifest.
    LegacyAttestation,
}

/// Whether `content` is a signature or attestation artifact, or another referrer: these
/// stay pullable whatever the policy (a verifier must be able to read them).
fn is_attachment(content: &[u8], media_type: &str) -> bool {
    Manifest::from_json(content)
        .ok()
        .and_then(|m| m.signature_kind())
        .is_some()
        || ParsedManifest::parse(content, Some(media_type)).is_ok_and(|p| p.subject.is_some())
}

impl Registry {
    /// The trust rule of `repo`, if signatures are required there.
    pub(super) fn trust_rule(&self, repo: &RepoName) -> Option<&TrustRule> {
        self.trust.rule(repo.as_str())
    }

    /// Refuses a fetch of `m` (named by `reference`) that the trust policy forbids: its
    /// content when neither it nor an index listing it has a valid signature by one of
    /// the repository's keys. Signature artifacts, referrers and the bookkeeping tags of
    /// registries without the referrers API stay fetchable.
    pub(super) async fn check_fetch(
        &self,
        repo: &RepoName,
        reference: &Reference,
        m: &berth_meta::StoredManifest,
        fetch: Fetch,
    ) -> Result<()> {
        let Some(rule) = self.trust_rule(repo) else {
            return Ok(());
        };
        match reference {
            Reference::Tag(t) if artifact_tags::is_hidden(t.as_str()) => return Ok(()),
            Reference::Digest(_) if fetch == (Fetch::Check { may_push: true }) => return Ok(()),
            _ => {}
        }
        if is_attachment(&m.content, &m.media_type) {
            return Ok(());
        }
        if !self.signers(repo, &m.digest, rule).await?.is_empty() {
            return Ok(());
        }
        Err(RegistryError::SignatureRequired {
            repo: repo.clone(),
            digest: m.digest.clone(),
            keys: rule.fingerprints.clone(),
        })
    }

    /// The keys with a valid signature of `digest` or of an index of the repository
    /// listing it (two levels up).
    async fn signers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        rule: &TrustRule,
    ) -> Result<BTreeSet<String>> {
        let direct = self.direct_signers(repo, digest, rule).await?;
        if !direct.is_empty() {
            return Ok((*direct).clone());
        }
        let mut level = vec![digest.clone()];
        for _ in 0..2 {
            let mut next = Vec::new();
            for d in &level {
                for parent in self.meta.index_parents(repo, d, MAX_PARENTS).await? {
                    let keys = self.direct_signers(repo, &parent, rule).await?;
                    if !keys.is_empty() {
                        return Ok((*keys).clone());
                    }
                    next.push(parent);
                }
            }
            level = next;
        }
        Ok(BTreeSet::new())
    }

    /// The keys with a valid signature of `digest` itself, cached.
    async fn direct_signers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        rule: &TrustRule,
    ) -> Result<Arc<BTreeSet<String>>> {
        let key = digest.to_string();
        if let Some(hit) = self.verdicts.get(repo.as_str(), &key) {
            return Ok(hit);
        }
        let seen = self.verdicts.generation();
        let mut keys = BTreeSet::new();
        let referrers = self.meta.referrers(repo, digest, None).await?;
        for r in referrers.iter().take(MAX_REFERRERS) {
            let Some(m) = self.meta.manifest_by_digest(repo, &r.digest).await? else {
                continue;
            };
            keys.extend(self.verify_artifact(repo, &m.content, digest, rule).await);
        }
        let keys = Arc::new(keys);
        self.verdicts.put(repo.as_str(), &key, keys.clone(), seen);
        Ok(keys)
    }

    /// The fingerprints of `rule`'s keys with a valid signature of `subject` in the
    /// signature artifact `content` (a bundle referrer or a cosign v2 `.sig` manifest).
    /// Anything else, and anything that does not verify, yields nothing: a bad signature
    /// is no signature, never an error of the pull or push.
    async fn verify_artifact(
        &self,
        repo: &RepoName,
        content: &[u8],
        subject: &Digest,
        rule: &TrustRule,
    ) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        let Ok(manifest) = Manifest::from_json(content) else {
            return keys;
        };
        let no_annotations = BTreeMap::new();
        match manifest.signature_kind() {
            Some(SignatureArtifact::Bundle) => {
                let [layer] = manifest.layers.as_slice() else {
                    return keys;
                };
                let Some(bundle) = self
                    .read_signature_blob(repo, &layer.digest, layer.size)
                    .await
                else {
                    return keys;
                };
                for (key, fp) in rule.keys.iter().zip(&rule.fingerprints) {
                    let req = Requirements::signature(key, subject, &no_annotations);
                    if verify_bundle_referrer(content, &bundle, &req).is_ok() {
                        keys.insert(fp.clone());
                    }
                }
            }
            Some(SignatureArtifact::Legacy(LegacyKind::Signature)) => {
                for layer in &manifest.layers {
                    let Some(blob) = self
                        .read_signature_blob(repo, &layer.digest, layer.size)
                        .await
                    else {
                        continue;
                    };
                    for (key, fp) in rule.keys.iter().zip(&rule.fingerprints) {
                        let req = Requirements::signature(key, subject, &no_annotations);
                        if verify_legacy_layer(layer, &blob, &req).is_ok() {
                            keys.insert(fp.clone());
                        }
                    }
                }
            }
            _ => {}
        }
        keys
    }

    /// The bytes of a signature layer: only a blob the repository links, of its declared
    /// size, of at most [`MAX_SIGNATURE_BLOB`].
    async fn read_signature_blob(
        &self,
        repo: &RepoName,
        digest: &str,
        size: u64,
    ) -> Option<Vec<u8>> {
        let digest: Digest = digest.parse().ok()?;
        let linked = self.meta.blob_size(repo, &digest).await.ok()??;
        if linked != size || size > MAX_SIGNATURE_BLOB {
            return None;
        }
        let body = self.blobs.get(&digest, None).await.ok()?;
        let mut bytes = Vec::with_capacity(size as usize);
        let mut stream = body.stream;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            bytes.extend_from_slice(&chunk.ok()?);
            if bytes.len() as u64 > MAX_SIGNATURE_BLOB {
                return None;
            }
        }
        Some(bytes)
    }

    /// How a push places its tags: a verified signature is recorded (revealing its
    /// subject's pending tags); a release tag onto an unsigned manifest, under a gating
    /// rule, holds every tag of the push.
    pub(super) async fn push_gate(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: &[u8],
        parsed: &ParsedManifest,
        tags: &[Tag],
    ) -> Result<Gate> {
        let mut gate = Gate::default();
        let Some(rule) = self.trust_rule(repo) else {
            return Ok(gate);
        };
        let subject = parsed
            .subject
            .as_ref()
            .map(|s| s.digest.clone())
            .or_else(|| {
                tags.iter()
                    .find_map(|t| artifact_tags::legacy_subject(t.as_str()))
            });
        if let Some(subject) = subject {
            let keys = self.verify_artifact(repo, body, &subject, rule).await;
            if !keys.is_empty() {
                gate.signs = Some(SignatureRecord {
                    subject,
                    keys: keys.into_iter().collect(),
                });
            }
            // An artifact attached to another manifest is never itself gated.
            return Ok(gate);
        }
        let releases = tags
            .iter()
            .any(|t| matches!(classify(t.as_str()), TagKind::Release(_)));
        if rule.gate && releases && self.signers(repo, digest, rule).await?.is_empty() {
            gate.hold_unless_signed_by = Some(rule.fingerprints.clone());
        }
        Ok(gate)
    }

    /// The trust state of `repo` for the dashboard: pending tags, which manifests of
    /// `digests` are signed (when the policy requires signatures) and what is attached
    /// to each.
    pub async fn trust_overview(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<TrustOverview> {
        let rule = self.trust_rule(repo);
        let mut overview = TrustOverview {
            required: rule.is_some(),
            pending: self.meta.pending_tags(repo).await?,
            recorded: self.meta.recorded_signatures(repo, None).await?,
            ..TrustOverview::default()
        };
        let mut all: Vec<Digest> = digests.to_vec();
        all.extend(overview.pending.iter().map(|p| p.digest.clone()));
        all.sort();
        all.dedup();
        for d in all {
            if let Some(rule) = rule {
                let keys = self.signers(repo, &d, rule).await?;
                overview.signed.insert(d.clone(), keys);
            }
            let mut attached = Vec::new();
            for r in self
                .meta
                .referrers(repo, &d, None)
                .await?
                .iter()
                .take(MAX_REFERRERS)
            {
                let Some(m) = self.meta.manifest_by_digest(repo, &r.digest).await? else {
                    continue;
                };
                let Ok(parsed) = Manifest::from_json(&m.content) else {
                    continue;
                };
                let (kind, predicate_type) = match parsed.signature_kind() {
                    Some(SignatureArtifact::Bundle) => (
                        ArtifactKind::Bundle,
                        parsed
                            .annotations
                            .get(berth_trust::oci::BUNDLE_PREDICATE_TYPE_ANNOTATION)
                            .cloned(),
                    ),
                    Some(SignatureArtifact::Legacy(LegacyKind::Signature)) => {
                        (ArtifactKind::LegacySignature, None)
                    }
                    Some(SignatureArtifact::Legacy(LegacyKind::Attestation)) => (
                        ArtifactKind::LegacyAttestation,
                        parsed.layers.iter().find_map(|l| {
                            l.annotations
                                .get(berth_trust::oci::PREDICATE_TYPE_ANNOTATION)
                                .cloned()
                        }),
                    ),
                    None => continue,
                };
                let keys = match rule {
                    Some(rule) => self.verify_artifact(repo, &m.content, &d, rule).await,
                    None => BTreeSet::new(),
                };
                attached.push(AttachedArtifact {
                    digest: r.digest.clone(),
                    kind,
                    predicate_type,
                    keys,
                });
            }
            if !attached.is_empty() {
                overview.artifacts.insert(d, attached);
            }
        }
        Ok(overview)
    }

    /// Tags of `repo` waiting for a signature.
    pub async fn pending_tags(&self, repo: &RepoName) -> Result<Vec<PendingTag>> {
        Ok(self.meta.pending_tags(repo).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_verdict_is_not_kept_across_an_invalidation() {
        let cache = VerdictCache::default();
        let d = Digest::sha256(b"image");
        let seen = cache.generation();
        cache.forget("r", Some(&d));
        cache.put("r", &d.to_string(), Arc::new(BTreeSet::new()), seen);
        assert!(cache.get("r", &d.to_string()).is_none());
        let seen = cache.generation();
        let keys = Arc::new(BTreeSet::from(["k".to_owned()]));
        cache.put("r", &d.to_string(), keys.clone(), seen);
        assert_eq!(cache.get("r", &d.to_string()), Some(keys));
        cache.forget("other", None);
        assert!(cache.get("r", &d.to_string()).is_some());
        cache.forget("r", None);
        assert!(cache.get("r", &d.to_string()).is_none());
    }

    #[test]
    fn attachments_are_told_from_images() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":2},"layers":[]}"#;
        assert!(!is_attachment(image, berth_oci::media_types::OCI_MANIFEST));
        let sbom = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":2}}"#;
        assert!(is_attachment(sbom, berth_oci::media_types::OCI_MANIFEST));
    }
}
