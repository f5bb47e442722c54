//! The pull-through mirror: repositories under a configured prefix (`[[mirror]]`) are
//! read-only copies of an upstream registry, filled as clients pull.
//!
//! Called by routes before they read a manifest or a blob (the rest of the pull path is
//! the ordinary one, so access control, the trust policy and analytics apply unchanged);
//! the upstream is reached through `berth-client` (token flow, retries, media types).
//!
//! - A manifest by tag is trusted for `tag_ttl` after the upstream last confirmed it;
//!   then the upstream is asked (HEAD for its digest, GET only when it changed), the
//!   exact bytes are verified and stored, and the local tag moved. When the upstream is
//!   unreachable or refuses (network error, 5xx, 401/403), the cached copy is served and
//!   marked stale. Tag confirmations are kept in memory: after a restart every tag is
//!   asked about once.
//! - A manifest by digest and a blob are immutable: local, else fetched once.
//! - Mirrored manifests are stored with their references recorded but not required
//!   ([`berth_meta::NewManifest::mirrored`]): blobs arrive when pulled, and once linked
//!   they are referenced, so garbage collection keeps them like any pushed blob.
//! - A blob missing locally is fetched by one download per (repository, digest) however
//!   many clients ask at once: a task of its own (the `flight` submodule) tees the
//!   upstream body into the blob store, whose commit verifies the digest, and into a
//!   spill file that every `GET` reads as it grows, holding back the last bytes until the
//!   commit. A mismatch stores nothing, and every client's body ends with an error
//!   instead of those last bytes. `HEAD` waits for the commit.

mod flight;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_client::auth::Credentials;
use berth_client::ClientError;
use berth_meta::NewManifest;
use berth_oci::{Descriptor, Digest, ParsedManifest, Reference, RepoName, Tag};
use futures_util::TryStreamExt;
use serde::Deserialize;
use tokio::sync::watch;

use super::{Registry, RegistryError, Result};
use flight::FlightState;
pub use flight::{MirrorPull, HELD_BACK};

/// The most referrers of one subject fetched from an upstream per listing.
const MAX_REFERRERS: usize = 256;

/// How long a tag resolution is trusted without `tag_ttl`.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(600);

/// One `[[mirror]]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorRule {
    /// The local path prefix (`docker.io`): `docker.io/library/alpine` mirrors the
    /// upstream's `library/alpine`.
    pub prefix: String,
    /// The upstream registry's base URL (`https://registry-1.docker.io`; `http://` is
    /// spoken as given).
    pub upstream: String,
    /// How long a tag resolution is trusted (`"10m"`) [default: 10m].
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub tag_ttl: Option<Duration>,
    /// `env:VAR`, a variable holding `user:password` (or a token, sent as the password of
    /// the user `token`) for the upstream.
    #[serde(default)]
    pub credentials: Option<String>,
}

/// A `[[mirror]]` table that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("mirror {prefix:?}: {reason}")]
pub struct MirrorRuleError {
    prefix: String,
    reason: String,
}

/// One configured mirror.
struct Mirror {
    prefix: String,
    upstream: String,
    client: berth_client::Registry,
    tag_ttl: Duration,
    /// When the upstream last confirmed each `(repository, tag)`.
    confirmed: Mutex<HashMap<(String, String), Instant>>,
}

/// The configured mirrors and the blob downloads in flight.
#[derive(Default)]
pub struct Mirrors {
    mirrors: Vec<Mirror>,
    flights: Mutex<HashMap<(String, Digest), watch::Receiver<FlightState>>>,
    /// Where downloads' spill files are created ([`Mirrors::with_spill_dir`]); the
    /// system's temporary directory without one.
    spill_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Mirrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefixes: Vec<&str> = self.mirrors.iter().map(|m| m.prefix.as_str()).collect();
        write!(f, "Mirrors({prefixes:?})")
    }
}

/// Splits an upstream URL into the host the client is built for and whether it is
/// plain HTTP.
fn upstream_host(url: &str) -> std::result::Result<(String, bool), String> {
    let (rest, insecure) = if let Some(r) = url.strip_prefix("https://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, true)
    } else {
        return Err(format!(
            "upstream {url:?} must start with https:// or http://"
        ));
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "upstream {url:?} must be a base URL without a path"
        ));
    }
    Ok((host.to_owned(), insecure))
}

/// Reads `env:VAR` credentials: `user:password`, or a bare token.
fn credentials(spec: &str) -> std::result::Result<Credentials, String> {
    let var = spec
        .strip_prefix("env:")
        .ok_or_else(|| format!("credentials {spec:?} must be env:VARIABLE"))?;
    let value = std::env::var(var).map_err(|_| format!("variable {var} is not set"))?;
    Ok(match value.split_once(':') {
        Some((user, password)) => Credentials {
            username: user.to_owned(),
            password: password.to_owned(),
        },
        None => Credentials {
            username: "token".to_owned(),
            password: value,
        },
    })
}

impl Mirrors {
    /// Builds the mirrors of `rules`; prefixes must be valid repository names.
    pub fn new(rules: &[MirrorRule]) -> std::result::Result<Mirrors, MirrorRuleError> {
        let mut mirrors = Vec::new();
        for rule in rules {
            let err = |reason: String| MirrorRuleError {
                prefix: rule.prefix.clone(),
                reason,
            };
            RepoName::parse(&rule.prefix).map_err(|e| err(e.to_string()))?;
            let (host, insecure) = upstream_host(&rule.upstream).map_err(err)?;
            let creds = rule
                .credentials
                .as_deref()
                .map(credentials)
                .transpose()
                .map_err(err)?;
            // One retry: a client waits for the cached copy while the upstream is down,
            // so failing fast matters more than riding out a blip.
            let clients = berth_client::Clients::new(berth_client::ClientOptions {
                insecure,
                max_retries: 1,
                retry_base: Duration::from_millis(100),
                ..Default::default()
            })
            .map_err(|e| err(e.to_string()))?;
            mirrors.push(Mirror {
                prefix: rule.prefix.clone(),
                upstream: rule.upstream.clone(),
                client: clients.registry_with(&host, creds),
                tag_ttl: rule.tag_ttl.unwrap_or(DEFAULT_TAG_TTL),
                confirmed: Mutex::default(),
            });
        }
        Ok(Mirrors {
            mirrors,
            flights: Mutex::default(),
            spill_dir: None,
        })
    }

    /// The mirrors with downloads spilling into `dir`: the filesystem store's upload
    /// directory, so that a download's two copies (the upload and the spill file) land on
    /// the disk that was sized for blobs, not on a small `/tmp`.
    pub fn with_spill_dir(mut self, dir: PathBuf) -> Mirrors {
        self.spill_dir = Some(dir);
        self
    }

    /// A new spill file: anonymous (unlinked at once, `O_TMPFILE` where the filesystem
    /// has it), so that it is gone when its last reader closes it, whatever happens.
    fn spill_file(&self) -> std::io::Result<std::fs::File> {
        match &self.spill_dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
    }

    /// The mirror `repo` is under, with the upstream's name for it.
    fn of(&self, repo: &RepoName) -> Option<(&Mirror, RepoName)> {
        self.mirrors.iter().find_map(|m| {
            let rest = repo.as_str().strip_prefix(&m.prefix)?.strip_prefix('/')?;
            Some((m, RepoName::parse(rest).ok()?))
        })
    }

    /// Whether `repo` is under a mirror prefix.
    pub fn covers(&self, repo: &RepoName) -> bool {
        self.of(repo).is_some()
    }

    /// The local name of `name` asked for with containerd's `?ns=<registry>`: the mirror
    /// whose prefix is `ns`, with `library/` before a one-segment Docker Hub name (what
    /// Docker does). `None` when no mirror has that prefix.
    pub fn local_name(&self, ns: &str, name: &RepoName) -> Option<RepoName> {
        let m = self.mirrors.iter().find(|m| m.prefix == ns)?;
        let library = ns == "docker.io" && !name.as_str().contains('/');
        let full = if library {
            format!("{}/library/{name}", m.prefix)
        } else {
            format!("{}/{name}", m.prefix)
        };
        RepoName::parse(&full).ok()
    }
}

/// Whether an upstream error means "unreachable or refusing" (serve the cache) rather
/// than "not there".
fn unreachable(e: &ClientError) -> bool {
    !matches!(e, ClientError::NotFound(_))
}

impl Registry {
    /// The service with pull-through mirrors.
    pub fn with_mirrors(mut self, mirrors: Mirrors) -> Registry {
        self.mirrors = Arc::new(mirrors);
        self
    }

    /// The pull-through mirrors (for `?ns=` mapping in routes).
    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// Refuses a change of `repo` when it is a mirror: `Ok` for any other repository.
    pub fn check_writable(&self, repo: &RepoName) -> Result<()> {
        match self.mirrors.of(repo) {
            Some((m, _)) => Err(RegistryError::MirrorReadOnly {
                repo: repo.clone(),
                upstream: m.upstream.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Makes sure the manifest `raw` names in a mirror repository is stored locally and,
    /// for a tag, current (see the module doc). Returns whether the local copy served is
    /// stale (the upstream could not confirm a tag older than its TTL). Does nothing
    /// outside mirrors.
    pub async fn mirror_manifest(&self, repo: &RepoName, raw: &str) -> Result<bool> {
        let Some((mirror, upstream_repo)) = self.mirrors.of(repo) else {
            return Ok(false);
        };
        let Ok(reference) = super::manifests::parse_reference(raw) else {
            // The ordinary lookup reports a reference that names nothing.
            return Ok(false);
        };
        match &reference {
            Reference::Digest(d) => {
                if self.meta.manifest_by_digest(repo, d).await?.is_some() {
                    return Ok(false);
                }
                match mirror.client.get_manifest(&upstream_repo, &reference).await {
                    Ok(m) => {
                        self.store_mirrored(repo, &m, None).await?;
                        Ok(false)
                    }
                    Err(e) => Err(upstream_error(mirror, repo, raw, &e)),
                }
            }
            Reference::Tag(tag) => self.mirror_tag(mirror, repo, &upstream_repo, tag).await,
        }
    }

    async fn mirror_tag(
        &self,
        mirror: &Mirror,
        repo: &RepoName,
        upstream_repo: &RepoName,
        tag: &Tag,
    ) -> Result<bool> {
        let key = (repo.to_string(), tag.to_string());
        let local = self.meta.manifest_by_tag(repo, tag).await?;
        let fresh = mirror
            .confirmed
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .is_some_and(|at| at.elapsed() < mirror.tag_ttl);
        if fresh && local.is_some() {
            return Ok(false);
        }
        let reference = Reference::Tag(tag.clone());
        let head = mirror.client.head_manifest(upstream_repo, &reference).await;
        let desc = match head {
            Ok(Some(desc)) => desc,
            Ok(None) => {
                return match local {
                    // Gone upstream: the copy stays served, but it is no longer current.
                    Some(_) => {
                        tracing::warn!(repo = %repo, tag = %tag, upstream = %mirror.upstream, "the upstream no longer has this tag; serving the cached copy, marked stale");
                        Ok(true)
                    }
                    None => Err(RegistryError::ManifestUnknown {
                        repo: repo.clone(),
                        reference: tag.to_string(),
                    }),
                };
            }
            Err(e) if local.is_some() && unreachable(&e) => {
                tracing::warn!(repo = %repo, tag = %tag, upstream = %mirror.upstream, error = %e, "upstream unavailable; serving the cached copy, marked stale");
                return Ok(true);
            }
            Err(e) => return Err(upstream_error(mirror, repo, tag.as_str(), &e)),
        };
        if local.as_ref().is_some_and(|m| m.digest == desc.digest) {
            self.confirm(mirror, key);
            return Ok(false);
        }
        // The tag moved (or is new here): the bytes are fetched by digest, which the
        // client verifies.
        let by_digest = Reference::Digest(desc.digest.clone());
        match mirror.client.get_manifest(upstream_repo, &by_digest).await {
            Ok(m) => {
                self.store_mirrored(repo, &m, Some(tag)).await?;
                self.confirm(mirror, key);
                Ok(false)
            }
            Err(e) if local.is_some() && unreachable(&e) => {
                tracing::warn!(repo = %repo, tag = %tag, upstream = %mirror.upstream, error = %e, "upstream failed; serving the cached copy, marked stale");
                Ok(true)
            }
            Err(e) => Err(upstream_error(mirror, repo, tag.as_str(), &e)),
        }
    }

    fn confirm(&self, mirror: &Mirror, key: (String, String)) {
        if let Ok(mut c) = mirror.confirmed.lock() {
            c.insert(key, Instant::now());
        }
    }

    /// Stores the exact bytes of an upstream manifest (already verified against its
    /// digest by the client) and moves `tag` to it.
    async fn store_mirrored(
        &self,
        repo: &RepoName,
        m: &berth_client::Manifest,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let parsed = ParsedManifest::parse(&m.bytes, Some(&m.media_type))
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let annotations_json = if parsed.annotations.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&parsed.annotations).unwrap_or_default()
        };
        let new = NewManifest {
            digest: m.digest.clone(),
            media_type: parsed.kind.media_type().to_owned(),
            content: m.bytes.clone(),
            blobs: parsed.required_blobs().map(|d| d.digest.clone()).collect(),
            children: parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            artifact_type: parsed.effective_artifact_type().map(str::to_owned),
            annotations_json,
            version: parsed
                .annotations
                .get(berth_oci::config::VERSION_LABEL)
                .cloned(),
            platform: None,
            mirrored: true,
        };
        let tags: Vec<Tag> = tag.into_iter().cloned().collect();
        // The upstream decides what its tags point at: no tag policy applies here.
        self.meta.manifest_put(repo, &new, &tags, None).await?;
        tracing::info!(repo = %repo, digest = %m.digest, tag = ?tag.map(Tag::as_str), "mirrored a manifest from the upstream");
        Ok(())
    }

    /// Caches the referrers (signatures, SBOMs, attestations) the upstream lists for
    /// `subject` in a mirror repository, so that the local referrers answer includes
    /// them; through the upstream's referrers API, or its referrers tag schema. An
    /// unreachable upstream leaves the cached ones. Does nothing outside mirrors.
    pub async fn mirror_referrers(&self, repo: &RepoName, subject: &Digest) -> Result<()> {
        let Some((mirror, upstream_repo)) = self.mirrors.of(repo) else {
            return Ok(());
        };
        let listed = match mirror.client.referrers(&upstream_repo, subject, None).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(repo = %repo, subject = %subject, upstream = %mirror.upstream, error = %e, "cannot list the upstream's referrers; answering from the cache");
                return Ok(());
            }
        };
        for desc in listed.iter().take(MAX_REFERRERS) {
            if self
                .meta
                .manifest_by_digest(repo, &desc.digest)
                .await?
                .is_some()
            {
                continue;
            }
            let by_digest = Reference::Digest(desc.digest.clone());
            match mirror.client.get_manifest(&upstream_repo, &by_digest).await {
                Ok(m) => self.store_mirrored(repo, &m, None).await?,
                Err(e) => {
                    tracing::warn!(repo = %repo, referrer = %desc.digest, upstream = %mirror.upstream, error = %e, "cannot fetch a referrer from the upstream");
                }
            }
        }
        Ok(())
    }

    /// Makes sure blob `digest` of a mirror repository is stored locally, fetching it
    /// from the upstream once however many clients ask at the same time, and waits for
    /// it to be committed (`HEAD` answers, and the `GET`s that cannot stream). Does
    /// nothing outside mirrors or when the blob is already here.
    pub async fn mirror_blob(self: &Arc<Self>, repo: &RepoName, digest: &Digest) -> Result<()> {
        match self.mirror_flight(repo, digest).await? {
            Some(mut flight) => committed(&mut flight, digest).await,
            None => Ok(()),
        }
    }

    /// Like [`Registry::mirror_blob`], but does not wait for the commit when the blob is
    /// being downloaded: `Some` is the running download, whose bytes a client reads as
    /// they arrive ([`MirrorPull::open`]); `None` when the blob is stored (or the
    /// repository is no mirror), and the ordinary read path serves it.
    pub async fn mirror_blob_pull(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<MirrorPull>> {
        let Some(mut flight) = self.mirror_flight(repo, digest).await? else {
            return Ok(None);
        };
        let started = flight
            .wait_for(|s| s.size.is_some() || s.outcome.is_some())
            .await
            .map(|s| (s.outcome.clone(), s.size, s.spill.clone()));
        match started {
            Ok((Some(Ok(_)), _, _)) => Ok(None),
            Ok((Some(Err(e)), _, _)) => Err(flight::shared(&e)),
            // A size of zero is what an upstream that sends no length answers too: only
            // the commit says how large such a blob is.
            Ok((None, Some(size), Some(spill))) if size > 0 => Ok(Some(MirrorPull::new(
                self.clone(),
                repo.clone(),
                digest.clone(),
                size,
                spill,
                flight,
            ))),
            Ok(_) => committed(&mut flight, digest).await.map(|()| None),
            Err(_) => Err(flight::abandoned(digest)),
        }
    }

    /// The download of blob `digest` of mirror repository `repo`: the running one, or
    /// one started now. `None` outside mirrors and when the blob is already stored.
    async fn mirror_flight(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<watch::Receiver<FlightState>>> {
        if !self.mirrors.covers(repo) || self.meta.blob_size(repo, digest).await?.is_some() {
            return Ok(None);
        }
        let key = (repo.to_string(), digest.clone());
        let (tx, rx) = {
            let mut flights = self
                .mirrors
                .flights
                .lock()
                .map_err(|_| RegistryError::MirrorUpstream("mirror state poisoned".into()))?;
            if let Some(rx) = flights.get(&key) {
                return Ok(Some(rx.clone()));
            }
            let (tx, rx) = watch::channel(FlightState::default());
            flights.insert(key.clone(), rx.clone());
            (tx, rx)
        };
        // The download belongs to no client: it goes on when they all leave, and the
        // blob is cached.
        let (this, repo, digest) = (self.clone(), repo.clone(), digest.clone());
        tokio::spawn(async move {
            let _flight = FlightGuard {
                mirrors: this.mirrors.clone(),
                key,
            };
            let result = this.fly(&repo, &digest, &tx).await;
            if let Err(e) = &result {
                if !matches!(
                    e,
                    RegistryError::BlobUnknown { .. } | RegistryError::MirrorUpstream(_)
                ) {
                    tracing::error!(repo = %repo, digest = %digest, error = %e, "the mirror could not store a blob it fetched");
                }
            }
            tx.send_modify(|s| s.outcome = Some(result.map_err(Arc::new)));
        });
        Ok(Some(rx))
    }

    /// One download of a blob: the upstream body teed into the blob store (verified at
    /// commit) and the spill file clients read. Returns the stored size.
    async fn fly(
        &self,
        repo: &RepoName,
        digest: &Digest,
        state: &watch::Sender<FlightState>,
    ) -> Result<u64> {
        let Some((mirror, upstream_repo)) = self.mirrors.of(repo) else {
            return Ok(0);
        };
        // A client that looked just before the previous download committed starts a
        // new one: it finds the blob here.
        if let Some(size) = self.meta.blob_size(repo, digest).await? {
            return Ok(size);
        }
        let size = match mirror.client.head_blob(&upstream_repo, digest).await {
            Ok(Some(size)) => size,
            Ok(None) | Err(ClientError::NotFound(_)) => {
                return Err(RegistryError::BlobUnknown {
                    repo: repo.clone(),
                    digest: digest.clone(),
                })
            }
            Err(e) => return Err(upstream_error(mirror, repo, &digest.to_string(), &e)),
        };
        let desc = Descriptor {
            media_type: "application/octet-stream".into(),
            digest: digest.clone(),
            size,
            urls: vec![],
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        };
        let stream = mirror
            .client
            .get_blob(&upstream_repo, &desc)
            .await
            .map_err(|e| match e {
                ClientError::NotFound(_) => RegistryError::BlobUnknown {
                    repo: repo.clone(),
                    digest: digest.clone(),
                },
                e => upstream_error(mirror, repo, &digest.to_string(), &e),
            })?;
        let spill = match self.mirrors.spill_file() {
            Ok(file) => Some(Arc::new(file)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the mirror's spill file; clients wait for the stored blob");
                None
            }
        };
        state.send_modify(|s| {
            s.size = Some(size);
            s.spill = spill.clone();
        });
        let upstream: berth_storage::ByteStream = Box::pin(stream.map_err(std::io::Error::other));
        let (to_store, from_tee) = flight::store_queue();
        let (_, stored) = tokio::join!(
            flight::tee(upstream, to_store, spill, state),
            self.put_blob(repo, digest, flight::store_body(from_tee)),
        );
        match stored {
            Ok(stored) => {
                tracing::info!(repo = %repo, digest = %digest, bytes = stored, upstream = %mirror.upstream, "mirrored a blob from the upstream");
                Ok(stored)
            }
            Err(RegistryError::DigestMismatch { expected, actual }) => {
                tracing::error!(repo = %repo, expected = %expected, actual = %actual, upstream = %mirror.upstream, "the upstream sent a blob whose digest does not match; nothing stored");
                Err(RegistryError::MirrorUpstream(format!(
                    "the upstream {} sent content with digest {actual} for blob {expected}; it was not stored",
                    mirror.upstream
                )))
            }
            Err(RegistryError::BodyFailed(e)) => Err(RegistryError::MirrorUpstream(format!(
                "the download of {digest} from {} failed: {e}",
                mirror.upstream
            ))),
            Err(e) => Err(e),
        }
    }
}

/// Waits for the outcome of a download.
async fn committed(flight: &mut watch::Receiver<FlightState>, digest: &Digest) -> Result<()> {
    let outcome = flight
        .wait_for(|s| s.outcome.is_some())
        .await
        .map(|s| s.outcome.clone());
    match outcome {
        Ok(Some(Ok(_))) => Ok(()),
        Ok(Some(Err(e))) => Err(flight::shared(&e)),
        Ok(None) | Err(_) => Err(flight::abandoned(digest)),
    }
}

/// Removes a finished (or abandoned) download from the flights.
struct FlightGuard {
    mirrors: Arc<Mirrors>,
    key: (String, Digest),
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Ok(mut f) = self.mirrors.flights.lock() {
            f.remove(&self.key);
        }
    }
}

fn upstream_error(mirror: &Mirror, repo: &RepoName, what: &str, e: &ClientError) -> RegistryError {
    match e {
        ClientError::NotFound(_) => RegistryError::ManifestUnknown {
            repo: repo.clone(),
            reference: what.to_owned(),
        },
        e => {
            tracing::warn!(repo = %repo, what, upstream = %mirror.upstream, error = %e, "the mirror's upstream failed");
            RegistryError::MirrorUpstream(format!(
                "the upstream {} of mirror {} could not be reached or refused the request",
                mirror.upstream, mirror.prefix
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, upstream: &str) -> MirrorRule {
        MirrorRule {
            prefix: prefix.into(),
            upstream: upstream.into(),
            tag_ttl: None,
            credentials: None,
        }
    }

    #[test]
    fn names_map_to_the_upstream_by_prefix() {
        let m = Mirrors::new(&[
            rule("docker.io", "https://registry-1.docker.io"),
            rule("mirrors/quay", "http://127.0.0.1:5001"),
        ])
        .unwrap();
        let (mirror, up) = m
            .of(&RepoName::parse("docker.io/library/alpine").unwrap())
            .unwrap();
        assert_eq!(
            (mirror.prefix.as_str(), up.as_str()),
            ("docker.io", "library/alpine")
        );
        let (_, up) = m.of(&RepoName::parse("mirrors/quay/a/b").unwrap()).unwrap();
        assert_eq!(up.as_str(), "a/b");
        assert!(m
            .of(&RepoName::parse("docker.iox/alpine").unwrap())
            .is_none());
        assert!(m.of(&RepoName::parse("team/app").unwrap()).is_none());
        assert_eq!(mirror.tag_ttl, DEFAULT_TAG_TTL);
    }

    #[test]
    fn containerd_namespaces_map_to_prefixes() {
        let m = Mirrors::new(&[rule("docker.io", "https://registry-1.docker.io")]).unwrap();
        let name = |s: &str| RepoName::parse(s).unwrap();
        assert_eq!(
            m.local_name("docker.io", &name("alpine")).unwrap().as_str(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            m.local_name("docker.io", &name("bitnami/redis"))
                .unwrap()
                .as_str(),
            "docker.io/bitnami/redis"
        );
        assert!(m.local_name("quay.io", &name("alpine")).is_none());
    }

    #[test]
    fn upstreams_must_be_base_urls() {
        assert_eq!(
            upstream_host("http://127.0.0.1:5000/").unwrap(),
            ("127.0.0.1:5000".to_owned(), true)
        );
        assert_eq!(
            upstream_host("https://registry-1.docker.io").unwrap(),
            ("registry-1.docker.io".to_owned(), false)
        );
        assert!(upstream_host("registry-1.docker.io").is_err());
        assert!(upstream_host("https://example.com/v2").is_err());
        assert!(Mirrors::new(&[rule("Bad Prefix", "https://x")]).is_err());
    }

    #[test]
    fn credentials_come_from_the_environment() {
        std::env::set_var("BERTH_TEST_MIRROR_CREDS", "alice:s3cret");
        let c = credentials("env:BERTH_TEST_MIRROR_CREDS").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cret")
        );
        assert!(credentials("env:BERTH_TEST_MIRROR_UNSET").is_err());
        assert!(credentials("alice:s3cret").is_err());
    }
}
