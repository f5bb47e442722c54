//! Verification of a registry image's signatures, attestations and release readiness:
//! finding what is attached to a manifest digest, fetching it, and handing the bytes to
//! [`berth_trust::verify`], which decides.
//!
//! **Finding.** The artifacts of a digest ([`Attached::list`]) are its referrers (the
//! referrers API, or the referrers tag schema's index on registries without it, through
//! [`Registry::referrers`]) and the manifests under cosign v2's `sha256-<hex>.sig`,
//! `.att` and `.sbom` tags ([`Registry::legacy_referrers`]). Cosign v3 signatures and
//! attestations are referrers whose artifact type is a Sigstore bundle; cosign v2 keeps
//! one signature or attestation per layer of its tag's manifest. A Berth registry also
//! lists legacy manifests in its referrers API; only bundle referrers are taken from the
//! listing, so nothing is checked twice.
//!
//! **Checking.** [`Attached::check`] fetches each candidate (by digest, so the registry
//! cannot swap bytes) and verifies it against every key of the [`Policy`] in turn. A
//! candidate of the other kind (an attestation when signatures are wanted, or an
//! attestation of another predicate type) is counted as skipped, not as a failure; any
//! other candidate is a [`Check`] with its [`Verdict`] or the reason it does not count. A
//! candidate that cannot be fetched fails alone, so one broken signature never hides a
//! valid one; failing to list at all is an error of the whole call.
//!
//! **Release check.** [`check_release`] walks an index (or a single manifest), pulls
//! every blob of every platform into an empty temporary directory verifying its digest
//! and size, and gathers each platform's signatures and SBOM evidence. The rules:
//! a platform is signed if its own manifest or the index that lists it has a valid
//! signature (a signature of the index covers the platform: the index's bytes name the
//! platform manifest's digest, and the platform was fetched by that digest); it has an
//! SBOM if it or its index has a verified SBOM attestation (SPDX or CycloneDX predicate)
//! or an SBOM referrer (an SPDX or CycloneDX artifact type, or a cosign v2 `.sbom`
//! manifest). SBOM referrers are unsigned: their presence is what is checked.
//!
//! This module uses the registry client and `berth_trust`; it prints nothing and knows
//! nothing about the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use berth_oci::{Descriptor, Digest, Reference, RepoName, Tag};
use berth_trust::bundle::is_bundle_v03;
use berth_trust::intoto::COSIGN_SIGN_PREDICATE;
use berth_trust::oci::{self as trust_oci, BUNDLE_PREDICATE_TYPE_ANNOTATION};
use berth_trust::verify::{verify_bundle_referrer, verify_legacy_layer};
use berth_trust::{PublicKey, Requirements, Verdict, VerifyError};
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::error::{ClientError, Result};
use crate::image::{verify_stream, Manifest};
use crate::registry::Registry;

/// The largest signature or attestation layer read into memory. Bundles are a few KiB;
/// an attestation carrying a whole SBOM can be tens of MiB.
pub const MAX_SIGNATURE_LAYER_BYTES: u64 = 64 << 20;

/// The annotation by which Docker Buildx marks the attestation manifests it puts in an
/// index (with the platform `unknown/unknown`); they are not platforms.
pub const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// The predicate types that make an attestation an SBOM: SPDX and CycloneDX documents.
const SBOM_PREDICATE_PREFIXES: [&str; 2] =
    ["https://spdx.dev/Document", "https://cyclonedx.org/bom"];

/// The media-type prefixes of SBOM documents (`application/spdx+json`, `text/spdx`,
/// `application/vnd.cyclonedx+json`, `+xml`).
const SBOM_MEDIA_PREFIXES: [&str; 3] =
    ["application/spdx", "text/spdx", "application/vnd.cyclonedx"];

/// True for a predicate type naming an SPDX or CycloneDX document.
pub fn is_sbom_predicate(predicate_type: &str) -> bool {
    SBOM_PREDICATE_PREFIXES
        .iter()
        .any(|p| predicate_type.starts_with(p))
}

/// True for an SPDX or CycloneDX media type or artifact type.
pub fn is_sbom_media_type(media_type: &str) -> bool {
    let t = berth_oci::manifest::essence(media_type);
    SBOM_MEDIA_PREFIXES.iter().any(|p| t.starts_with(p))
}

/// What a check looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Image signatures: cosign v2 simple signing (`.sig`) or a cosign v3 bundle whose
    /// statement has the predicate type `https://sigstore.dev/cosign/sign/v1`.
    Signature,
    /// Attestations (`.att` layers, bundle referrers of another predicate type) of this
    /// predicate type URI, or of any when `None`.
    Attestation { predicate_type: Option<String> },
}

/// What must hold for a candidate to count.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Any one of these keys must have signed it.
    pub keys: Vec<PublicKey>,
    /// Annotations the signed payload must carry, with these values.
    pub annotations: BTreeMap<String, String>,
    pub wanted: Wanted,
}

impl Policy {
    /// Signatures by any of `keys` carrying `annotations`.
    pub fn signature(keys: Vec<PublicKey>, annotations: BTreeMap<String, String>) -> Policy {
        Policy {
            keys,
            annotations,
            wanted: Wanted::Signature,
        }
    }

    /// Attestations by any of `keys` of `predicate_type` (any when `None`).
    pub fn attestation(
        keys: Vec<PublicKey>,
        predicate_type: Option<String>,
        annotations: BTreeMap<String, String>,
    ) -> Policy {
        Policy {
            keys,
            annotations,
            wanted: Wanted::Attestation { predicate_type },
        }
    }

    fn requirements<'a>(&'a self, key: &'a PublicKey, digest: &'a Digest) -> Requirements<'a> {
        match &self.wanted {
            Wanted::Signature => Requirements::signature(key, digest, &self.annotations),
            Wanted::Attestation { predicate_type } => {
                Requirements::attestation(key, digest, predicate_type.as_deref(), &self.annotations)
            }
        }
    }

    /// Whether an artifact whose unsigned label says `predicate_type` may be what is
    /// wanted. The label only saves fetching artifacts of the other kind; whatever is
    /// fetched is judged by its signed content.
    fn may_want(&self, predicate_type: Option<&str>) -> bool {
        let Some(found) = predicate_type else {
            return true;
        };
        match &self.wanted {
            Wanted::Signature => found == COSIGN_SIGN_PREDICATE,
            Wanted::Attestation { predicate_type } => {
                found != COSIGN_SIGN_PREDICATE
                    && predicate_type.as_deref().is_none_or(|want| want == found)
            }
        }
    }

    /// Verifies with each key in turn: the first verdict wins; otherwise the most telling
    /// failure (one that got past the signature check, then a key hint, then a bad
    /// signature).
    fn verify_with_keys(
        &self,
        digest: &Digest,
        verify: impl Fn(&Requirements<'_>) -> std::result::Result<Verdict, VerifyError>,
    ) -> std::result::Result<Verdict, VerifyError> {
        fn rank(e: &VerifyError) -> u8 {
            match e {
                VerifyError::BadSignature => 0,
                VerifyError::WrongKey { .. } => 1,
                _ => 2,
            }
        }
        let mut best: Option<VerifyError> = None;
        for key in &self.keys {
            match verify(&self.requirements(key, digest)) {
                Ok(verdict) => return Ok(verdict),
                Err(e) => {
                    if best.as_ref().is_none_or(|b| rank(&e) > rank(b)) {
                        best = Some(e);
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| VerifyError::Unsupported("verification without a key".into())))
    }

    /// Whether a verified or failed candidate is of the other kind and so not counted.
    fn is_other_kind(&self, outcome: &std::result::Result<Verdict, CheckError>) -> bool {
        match outcome {
            // A statement of another predicate type: an attestation when signatures are
            // wanted, or another attestation. Only a valid signature gets this far.
            Err(CheckError::Verify(VerifyError::PredicateTypeMismatch { .. })) => true,
            // With any predicate type accepted, a cosign v3 signature still is not an
            // attestation.
            Ok(v) => {
                matches!(self.wanted, Wanted::Attestation { .. })
                    && v.predicate_type == COSIGN_SIGN_PREDICATE
            }
            Err(_) => false,
        }
    }
}

/// Where a candidate signature or attestation was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A cosign v3 bundle referrer, listed by the referrers API or the tag schema.
    Referrer { manifest: Digest },
    /// A cosign v2 manifest under `tag`; `layer` (from 0) is the signature's layer, `None`
    /// when the manifest itself could not be read.
    LegacyTag {
        tag: String,
        manifest: Digest,
        layer: Option<usize>,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Referrer { manifest } => write!(f, "referrer {manifest}"),
            Origin::LegacyTag {
                tag,
                layer: Some(layer),
                ..
            } => write!(f, "tag {tag} layer {layer}"),
            Origin::LegacyTag { tag, .. } => write!(f, "tag {tag}"),
        }
    }
}

/// Why a candidate does not count.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot fetch it: {0}")]
    Fetch(#[source] ClientError),
    #[error("its layer is {size} bytes, more than the {MAX_SIGNATURE_LAYER_BYTES} bytes read for a signature")]
    TooLarge { size: u64 },
}

/// One candidate and its outcome.
#[derive(Debug)]
pub struct Check {
    pub origin: Origin,
    pub outcome: std::result::Result<Verdict, CheckError>,
}

/// The signatures (or attestations) of one digest as checked.
#[derive(Debug)]
pub struct SignatureReport {
    /// The digest that had to be signed.
    pub digest: Digest,
    /// Every candidate of the wanted kind, valid or not.
    pub checks: Vec<Check>,
    /// Candidates of the other kind, not counted (attestations when signatures were
    /// wanted, attestations of another predicate type).
    pub skipped: usize,
}

impl SignatureReport {
    /// The verdicts of the valid candidates.
    pub fn verdicts(&self) -> impl Iterator<Item = &Verdict> {
        self.checks.iter().filter_map(|c| c.outcome.as_ref().ok())
    }

    /// True when at least one candidate is valid.
    pub fn is_valid(&self) -> bool {
        self.verdicts().next().is_some()
    }
}

/// What is attached to one manifest digest, listed once: its referrers and its cosign v2
/// tag manifests.
#[derive(Debug, Clone)]
pub struct Attached {
    pub digest: Digest,
    /// Every referrer, of any artifact type.
    pub referrers: Vec<Descriptor>,
    /// The manifests under `sha256-<hex>.sig`, `.att` and `.sbom`, with their tags.
    pub legacy: Vec<(Tag, Manifest)>,
}

impl Attached {
    /// Lists the referrers (API or tag schema) and cosign v2 tags of `digest` in `repo`.
    pub async fn list(reg: &Registry, repo: &RepoName, digest: &Digest) -> Result<Attached> {
        let referrers = reg.referrers(repo, digest, None).await?;
        let legacy = reg.legacy_referrers(repo, digest).await?;
        Ok(Attached {
            digest: digest.clone(),
            referrers,
            legacy,
        })
    }

    /// Fetches and verifies every candidate of the kind `policy` wants.
    pub async fn check(
        &self,
        reg: &Registry,
        repo: &RepoName,
        policy: &Policy,
    ) -> Result<SignatureReport> {
        if policy.keys.is_empty() {
            return Err(ClientError::Usage(
                "verification needs at least one key".into(),
            ));
        }
        let mut report = SignatureReport {
            digest: self.digest.clone(),
            checks: Vec::new(),
            skipped: 0,
        };
        let mut seen = BTreeSet::new();
        for desc in &self.referrers {
            if !desc.artifact_type.as_deref().is_some_and(is_bundle_v03)
                || !seen.insert(desc.digest.clone())
            {
                continue;
            }
            let label = desc
                .annotations
                .get(BUNDLE_PREDICATE_TYPE_ANNOTATION)
                .map(String::as_str);
            if !policy.may_want(label) {
                report.skipped += 1;
                continue;
            }
            let outcome = self.check_referrer(reg, repo, desc, policy).await;
            push_check(
                &mut report,
                policy,
                Origin::Referrer {
                    manifest: desc.digest.clone(),
                },
                outcome,
            );
        }
        for (tag, m) in &self.legacy {
            let wanted_suffix = match policy.wanted {
                Wanted::Signature => "sig",
                Wanted::Attestation { .. } => "att",
            };
            if tag.as_str().rsplit_once('.').map(|(_, s)| s) != Some(wanted_suffix)
                || !seen.insert(m.digest.clone())
            {
                continue;
            }
            self.check_legacy(reg, repo, tag, m, policy, &mut report)
                .await;
        }
        Ok(report)
    }

    async fn check_referrer(
        &self,
        reg: &Registry,
        repo: &RepoName,
        desc: &Descriptor,
        policy: &Policy,
    ) -> std::result::Result<Verdict, CheckError> {
        let manifest = reg
            .get_manifest(repo, &Reference::Digest(desc.digest.clone()))
            .await
            .map_err(CheckError::Fetch)?;
        let parsed = trust_oci::Manifest::from_json(&manifest.bytes)?;
        // Its own label may tell that it is of the other kind (the listing may lack it).
        let label = parsed
            .annotations
            .get(BUNDLE_PREDICATE_TYPE_ANNOTATION)
            .map(String::as_str);
        if !policy.may_want(label) {
            return Err(CheckError::Verify(VerifyError::PredicateTypeMismatch {
                expected: match &policy.wanted {
                    Wanted::Signature => COSIGN_SIGN_PREDICATE.to_string(),
                    Wanted::Attestation { predicate_type } => {
                        predicate_type.clone().unwrap_or_default()
                    }
                },
                found: label.unwrap_or_default().to_string(),
            }));
        }
        // A bundle referrer has exactly one layer; berth_trust says what is wrong with
        // any other shape, so it is handed an empty bundle then.
        let bundle = match parsed.layers.as_slice() {
            [layer] if is_bundle_v03(&layer.media_type) => fetch_layer(reg, repo, layer).await?,
            _ => Vec::new(),
        };
        Ok(policy.verify_with_keys(&self.digest, |req| {
            verify_bundle_referrer(&manifest.bytes, &bundle, req)
        })?)
    }

    async fn check_legacy(
        &self,
        reg: &Registry,
        repo: &RepoName,
        tag: &Tag,
        m: &Manifest,
        policy: &Policy,
        report: &mut SignatureReport,
    ) {
        let origin = |layer| Origin::LegacyTag {
            tag: tag.to_string(),
            manifest: m.digest.clone(),
            layer,
        };
        let parsed = match trust_oci::Manifest::from_json(&m.bytes) {
            Ok(p) => p,
            Err(e) => {
                report.checks.push(Check {
                    origin: origin(None),
                    outcome: Err(e.into()),
                });
                return;
            }
        };
        for (i, layer) in parsed.layers.iter().enumerate() {
            let label = layer
                .annotations
                .get(trust_oci::PREDICATE_TYPE_ANNOTATION)
                .map(String::as_str);
            if matches!(policy.wanted, Wanted::Attestation { .. }) && !policy.may_want(label) {
                report.skipped += 1;
                continue;
            }
            let outcome = match fetch_layer(reg, repo, layer).await {
                Ok(blob) => policy
                    .verify_with_keys(&self.digest, |req| verify_legacy_layer(layer, &blob, req))
                    .map_err(CheckError::from),
                Err(e) => Err(e),
            };
            push_check(report, policy, origin(Some(i)), outcome);
        }
    }

    /// The SBOM referrers: referrers whose artifact type is an SPDX or CycloneDX media
    /// type, and a cosign v2 `.sbom` manifest with such a layer. Each as (artifact type,
    /// manifest digest). They are not signed.
    pub fn sbom_referrers(&self) -> Vec<(String, Digest)> {
        let mut out: Vec<(String, Digest)> = self
            .referrers
            .iter()
            .filter_map(|d| {
                let t = d.artifact_type.as_deref()?;
                is_sbom_media_type(t).then(|| (t.to_owned(), d.digest.clone()))
            })
            .collect();
        for (tag, m) in &self.legacy {
            if !tag.as_str().ends_with(".sbom") {
                continue;
            }
            let Ok(parsed) = trust_oci::Manifest::from_json(&m.bytes) else {
                continue;
            };
            if let Some(layer) = parsed
                .layers
                .iter()
                .find(|l| is_sbom_media_type(&l.media_type))
            {
                out.push((layer.media_type.clone(), m.digest.clone()));
            }
        }
        out
    }
}

fn push_check(
    report: &mut SignatureReport,
    policy: &Policy,
    origin: Origin,
    outcome: std::result::Result<Verdict, CheckError>,
) {
    if policy.is_other_kind(&outcome) {
        report.skipped += 1;
    } else {
        report.checks.push(Check { origin, outcome });
    }
}

/// Reads a signature layer into memory: at most its declared size plus one byte, so
/// that a registry sending more is caught by the digest check rather than filling memory.
async fn fetch_layer(
    reg: &Registry,
    repo: &RepoName,
    layer: &trust_oci::Descriptor,
) -> std::result::Result<Vec<u8>, CheckError> {
    let digest: Digest =
        layer
            .digest
            .parse()
            .map_err(|e: berth_oci::DigestError| VerifyError::Malformed {
                what: "layer descriptor",
                reason: e.to_string(),
            })?;
    if layer.size > MAX_SIGNATURE_LAYER_BYTES {
        return Err(CheckError::TooLarge { size: layer.size });
    }
    let desc = Descriptor {
        media_type: layer.media_type.clone(),
        digest,
        size: layer.size,
        urls: Vec::new(),
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    };
    let mut stream = reg.get_blob(repo, &desc).await.map_err(CheckError::Fetch)?;
    let limit = layer.size.saturating_add(1);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(CheckError::Fetch)?;
        out.extend_from_slice(&chunk);
        if out.len() as u64 >= limit {
            out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            break;
        }
    }
    Ok(out)
}

/// Lists what is attached to `digest` and checks every candidate of the kind `policy`
/// wants: [`Attached::list`] then [`Attached::check`].
pub async fn find_signatures(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
    policy: &Policy,
) -> Result<SignatureReport> {
    Attached::list(reg, repo, digest)
        .await?
        .check(reg, repo, policy)
        .await
}

/// How a platform is covered by a valid signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signed {
    /// The platform manifest itself has a valid signature.
    pub itself: bool,
    /// The index listing it has one (which covers the platform's digest).
    pub by_index: bool,
}

impl Signed {
    pub fn any(self) -> bool {
        self.itself || self.by_index
    }
}

/// Evidence that an SBOM is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sbom {
    /// A verified attestation with an SPDX or CycloneDX predicate, attached to `on`.
    Attestation { predicate_type: String, on: Digest },
    /// An SBOM referrer (unsigned) of this artifact type, attached to `on`.
    Referrer {
        artifact_type: String,
        on: Digest,
        manifest: Digest,
    },
}

/// The signatures and SBOMs of one manifest (an index or a platform).
#[derive(Debug)]
pub struct ManifestTrust {
    pub signatures: SignatureReport,
    /// The SBOM evidence attached to this manifest itself.
    pub sboms: Vec<Sbom>,
}

impl ManifestTrust {
    /// Lists what is attached to `digest` once and checks it for signatures by `policy`
    /// and for SBOMs: verified SBOM attestations by `policy`'s keys (whatever their
    /// annotations), and SBOM referrers.
    pub async fn check(
        reg: &Registry,
        repo: &RepoName,
        digest: &Digest,
        policy: &Policy,
    ) -> Result<ManifestTrust> {
        let attached = Attached::list(reg, repo, digest).await?;
        let signatures = attached.check(reg, repo, policy).await?;
        let attestation_policy = Policy::attestation(policy.keys.clone(), None, BTreeMap::new());
        let attestations = attached.check(reg, repo, &attestation_policy).await?;
        let mut sboms: Vec<Sbom> = attestations
            .verdicts()
            .filter(|v| is_sbom_predicate(&v.predicate_type))
            .map(|v| Sbom::Attestation {
                predicate_type: v.predicate_type.clone(),
                on: digest.clone(),
            })
            .collect();
        sboms.extend(
            attached
                .sbom_referrers()
                .into_iter()
                .map(|(artifact_type, manifest)| Sbom::Referrer {
                    artifact_type,
                    on: digest.clone(),
                    manifest,
                }),
        );
        Ok(ManifestTrust { signatures, sboms })
    }
}

/// A blob that did not arrive intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFailure {
    pub digest: Digest,
    pub reason: String,
}

/// The release check of one platform.
#[derive(Debug)]
pub struct PlatformReport {
    /// `os/arch[/variant]`, from the index entry or the image config; `unknown` if neither
    /// says.
    pub platform: String,
    pub digest: Digest,
    /// Bytes of the manifest, its config and its layers.
    pub size: u64,
    pub layers: usize,
    /// Blobs whose digest or size did not match, or that could not be fetched.
    pub blob_failures: Vec<BlobFailure>,
    /// The platform manifest's own signatures and SBOMs (`None` when it could not be
    /// fetched).
    pub trust: Option<ManifestTrust>,
    pub signed: Signed,
    /// The first SBOM evidence found: the platform's own, else its index's.
    pub sbom: Option<Sbom>,
    /// Why the platform manifest could not be fetched, read or checked.
    pub error: Option<String>,
}

impl PlatformReport {
    /// What is wrong, one phrase each; empty when the platform passes.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(e.clone());
        }
        out.extend(
            self.blob_failures
                .iter()
                .map(|f| format!("blob {}: {}", f.digest, f.reason)),
        );
        if !self.signed.any() {
            out.push("no valid signature".to_owned());
        }
        if self.sbom.is_none() {
            out.push("no SBOM".to_owned());
        }
        out
    }

    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }
}

/// The release check of an index or a single manifest.
#[derive(Debug)]
pub struct ReleaseReport {
    pub digest: Digest,
    pub media_type: String,
    /// The index's signatures and SBOMs (`None` for a single manifest, whose only
    /// platform carries them).
    pub index: Option<ManifestTrust>,
    pub platforms: Vec<PlatformReport>,
    /// Index entries that are not platforms (Buildx attestation manifests), with why.
    pub skipped: Vec<(Digest, String)>,
}

impl ReleaseReport {
    /// True when there is at least one platform and every platform passes.
    pub fn passed(&self) -> bool {
        !self.platforms.is_empty() && self.platforms.iter().all(PlatformReport::passed)
    }
}

/// Blobs pulled so far in one release check, by digest, with their outcome: a blob
/// shared by several platforms is pulled once.
struct ColdPull {
    dir: tempfile::TempDir,
    done: BTreeMap<Digest, std::result::Result<(), String>>,
}

impl ColdPull {
    fn new() -> Result<ColdPull> {
        let dir = tempfile::Builder::new()
            .prefix("berth-release-check-")
            .tempdir()
            .map_err(|e| ClientError::io(std::env::temp_dir(), e))?;
        Ok(ColdPull {
            dir,
            done: BTreeMap::new(),
        })
    }

    fn path(&self, digest: &Digest) -> std::path::PathBuf {
        self.dir
            .path()
            .join(format!("{}-{}", digest.algorithm().as_str(), digest.hex()))
    }

    /// Pulls a blob into the directory, verifying its digest and size while streaming.
    async fn pull(
        &mut self,
        reg: &Registry,
        repo: &RepoName,
        desc: &Descriptor,
    ) -> std::result::Result<(), String> {
        if let Some(done) = self.done.get(&desc.digest) {
            return done.clone();
        }
        let outcome = self
            .pull_once(reg, repo, desc)
            .await
            .map_err(|e| e.to_string());
        self.done.insert(desc.digest.clone(), outcome.clone());
        outcome
    }

    async fn pull_once(&self, reg: &Registry, repo: &RepoName, desc: &Descriptor) -> Result<()> {
        let path = self.path(&desc.digest);
        let stream = reg.get_blob(repo, desc).await?;
        let mut stream = verify_stream(stream, desc, Box::new(|_| {}));
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ClientError::io(&path, e))?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?)
                .await
                .map_err(|e| ClientError::io(&path, e))?;
        }
        file.flush().await.map_err(|e| ClientError::io(&path, e))?;
        Ok(())
    }

    /// The bytes of a blob pulled intact, read back from the directory.
    async fn read(&self, digest: &Digest) -> Option<Vec<u8>> {
        match self.done.get(digest) {
            Some(Ok(())) => tokio::fs::read(self.path(digest)).await.ok(),
            _ => None,
        }
    }
}

/// The release checklist of `root` (fetched from `repo` by the caller, who resolved the
/// reference once): for every platform of the index (or the single manifest), every blob
/// pulled into an empty temporary directory and verified, a valid signature by `policy`
/// of the platform or its index, and an SBOM (see the module documentation for the
/// rules). The directory is removed when the check ends.
pub async fn check_release(
    reg: &Registry,
    repo: &RepoName,
    root: &Manifest,
    policy: &Policy,
) -> Result<ReleaseReport> {
    let mut pull = ColdPull::new()?;
    let mut report = ReleaseReport {
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        index: None,
        platforms: Vec::new(),
        skipped: Vec::new(),
    };
    if !root.is_index() {
        let platform = check_platform(reg, repo, root, None, None, policy, &mut pull).await;
        report.platforms.push(platform);
        return Ok(report);
    }
    let index = ManifestTrust::check(reg, repo, &root.digest, policy).await?;
    let parsed = root.parse()?;
    for entry in &parsed.manifests {
        if let Some(kind) = entry.annotations.get(DOCKER_REFERENCE_TYPE) {
            report.skipped.push((
                entry.digest.clone(),
                format!("{DOCKER_REFERENCE_TYPE}={kind}"),
            ));
            continue;
        }
        let platform = match reg
            .get_manifest(repo, &Reference::Digest(entry.digest.clone()))
            .await
        {
            Ok(m) => {
                check_platform(reg, repo, &m, Some(entry), Some(&index), policy, &mut pull).await
            }
            Err(e) => PlatformReport {
                platform: platform_name(entry.platform.as_ref(), None),
                digest: entry.digest.clone(),
                size: entry.size,
                layers: 0,
                blob_failures: Vec::new(),
                trust: None,
                signed: Signed {
                    itself: false,
                    by_index: index.signatures.is_valid(),
                },
                sbom: index.sboms.first().cloned(),
                error: Some(format!("manifest {}: {e}", entry.digest)),
            },
        };
        report.platforms.push(platform);
    }
    report.index = Some(index);
    Ok(report)
}

fn platform_name(from_index: Option<&berth_oci::Platform>, config: Option<&[u8]>) -> String {
    from_index
        .cloned()
        .or_else(|| config.and_then(berth_oci::config::platform_of_config))
        .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

/// Checks one platform manifest: pulls its blobs, then its signatures and SBOMs.
async fn check_platform(
    reg: &Registry,
    repo: &RepoName,
    m: &Manifest,
    entry: Option<&Descriptor>,
    index: Option<&ManifestTrust>,
    policy: &Policy,
    pull: &mut ColdPull,
) -> PlatformReport {
    let by_index = index.is_some_and(|i| i.signatures.is_valid());
    let index_sbom = index.and_then(|i| i.sboms.first().cloned());
    let mut report = PlatformReport {
        platform: platform_name(entry.and_then(|e| e.platform.as_ref()), None),
        digest: m.digest.clone(),
        size: m.bytes.len() as u64,
        layers: 0,
        blob_failures: Vec::new(),
        trust: None,
        signed: Signed {
            itself: false,
            by_index,
        },
        sbom: index_sbom.clone(),
        error: None,
    };
    let parsed = match m.parse() {
        Ok(p) if p.kind.is_index() => {
            report.error = Some(format!(
                "{} is an index inside the index, which the release check does not walk",
                m.digest
            ));
            return report;
        }
        Ok(p) => p,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.layers = parsed.layers.len();
    for blob in parsed.required_blobs() {
        report.size += blob.size;
        if let Err(reason) = pull.pull(reg, repo, blob).await {
            report.blob_failures.push(BlobFailure {
                digest: blob.digest.clone(),
                reason,
            });
        }
    }
    if entry.and_then(|e| e.platform.as_ref()).is_none() {
        if let Some(config) = &parsed.config {
            let bytes = pull.read(&config.digest).await;
            report.platform = platform_name(None, bytes.as_deref());
        }
    }
    match ManifestTrust::check(reg, repo, &m.digest, policy).await {
        Ok(trust) => {
            report.signed.itself = trust.signatures.is_valid();
            report.sbom = trust.sboms.first().cloned().or(index_sbom);
            report.trust = Some(trust);
        }
        Err(e) => report.error = Some(format!("signatures of {}: {e}", m.digest)),
    }
    report
}

#[cfg(test)]
mod tests {
    use berth_trust::{KeySigner, PrivateKey, SignatureFormat};

    use super::*;

    fn key() -> PublicKey {
        KeySigner::new(PrivateKey::generate_p256().unwrap())
            .public_key()
            .clone()
    }

    fn verdict(predicate_type: &str) -> Verdict {
        Verdict {
            format: SignatureFormat::Bundle,
            key_fingerprint: "f".into(),
            digest: Digest::sha256(b"image"),
            identity: None,
            predicate_type: predicate_type.into(),
            annotations: BTreeMap::new(),
            created: None,
        }
    }

    const SPDX: &str = "https://spdx.dev/Document";

    #[test]
    fn sbom_types() {
        assert!(is_sbom_predicate(SPDX));
        assert!(is_sbom_predicate("https://spdx.dev/Document/v3"));
        assert!(is_sbom_predicate("https://cyclonedx.org/bom"));
        assert!(!is_sbom_predicate("https://slsa.dev/provenance/v1"));
        assert!(!is_sbom_predicate(COSIGN_SIGN_PREDICATE));
        for t in [
            "application/spdx+json",
            "text/spdx",
            "application/vnd.cyclonedx+json",
            "application/vnd.cyclonedx+xml; charset=utf-8",
        ] {
            assert!(is_sbom_media_type(t), "{t}");
        }
        assert!(!is_sbom_media_type(
            "application/vnd.dev.sigstore.bundle.v0.3+json"
        ));
        assert!(!is_sbom_media_type("application/json"));
    }

    #[test]
    fn labels_only_skip_what_is_surely_of_the_other_kind() {
        let signatures = Policy::signature(vec![key()], BTreeMap::new());
        assert!(signatures.may_want(None), "unlabelled: fetched and judged");
        assert!(signatures.may_want(Some(COSIGN_SIGN_PREDICATE)));
        assert!(!signatures.may_want(Some(SPDX)));

        let any = Policy::attestation(vec![key()], None, BTreeMap::new());
        assert!(any.may_want(Some(SPDX)));
        assert!(!any.may_want(Some(COSIGN_SIGN_PREDICATE)));
        let spdx = Policy::attestation(vec![key()], Some(SPDX.into()), BTreeMap::new());
        assert!(spdx.may_want(Some(SPDX)));
        assert!(!spdx.may_want(Some("https://cyclonedx.org/bom")));
    }

    #[test]
    fn other_kinds_are_skipped_not_failed() {
        let signatures = Policy::signature(vec![key()], BTreeMap::new());
        let any = Policy::attestation(vec![key()], None, BTreeMap::new());
        let mismatch = Err(CheckError::Verify(VerifyError::PredicateTypeMismatch {
            expected: COSIGN_SIGN_PREDICATE.into(),
            found: SPDX.into(),
        }));
        assert!(signatures.is_other_kind(&mismatch));
        assert!(!signatures.is_other_kind(&Err(CheckError::Verify(VerifyError::BadSignature))));
        assert!(!signatures.is_other_kind(&Ok(verdict(COSIGN_SIGN_PREDICATE))));
        // A cosign v3 signature is no attestation, even when any type is accepted.
        assert!(any.is_other_kind(&Ok(verdict(COSIGN_SIGN_PREDICATE))));
        assert!(!any.is_other_kind(&Ok(verdict(SPDX))));
    }

    #[test]
    fn the_most_telling_failure_of_several_keys_is_kept() {
        let policy = Policy::signature(vec![key(), key(), key()], BTreeMap::new());
        let digest = Digest::sha256(b"image");
        let calls = std::cell::Cell::new(0);
        let result = policy.verify_with_keys(&digest, |_| {
            calls.set(calls.get() + 1);
            Err(match calls.get() {
                1 => VerifyError::BadSignature,
                2 => VerifyError::DigestMismatch {
                    expected: digest.clone(),
                    signed: "sha256:other".into(),
                },
                _ => VerifyError::WrongKey {
                    expected: "a".into(),
                    hint: "b".into(),
                },
            })
        });
        assert_eq!(calls.get(), 3);
        assert!(matches!(result, Err(VerifyError::DigestMismatch { .. })));

        // The first key that verifies ends the search.
        calls.set(0);
        let result = policy.verify_with_keys(&digest, |_| {
            calls.set(calls.get() + 1);
            if calls.get() == 2 {
                Ok(verdict(COSIGN_SIGN_PREDICATE))
            } else {
                Err(VerifyError::BadSignature)
            }
        });
        assert!(result.is_ok());
        assert_eq!(calls.get(), 2);

        let none = Policy::signature(Vec::new(), BTreeMap::new());
        assert!(none.verify_with_keys(&digest, |_| unreachable!()).is_err());
    }

    #[test]
    fn origins_read_as_places() {
        let d = Digest::sha256(b"m");
        assert_eq!(
            Origin::Referrer {
                manifest: d.clone()
            }
            .to_string(),
            format!("referrer {d}")
        );
        let tag = Origin::LegacyTag {
            tag: "sha256-ab.sig".into(),
            manifest: d.clone(),
            layer: Some(2),
        };
        assert_eq!(tag.to_string(), "tag sha256-ab.sig layer 2");
        let whole = Origin::LegacyTag {
            tag: "sha256-ab.sig".into(),
            manifest: d,
            layer: None,
        };
        assert_eq!(whole.to_string(), "tag sha256-ab.sig");
    }

    #[test]
    fn a_platform_passes_only_with_intact_blobs_a_signature_and_an_sbom() {
        let digest = Digest::sha256(b"platform");
        let mut p = PlatformReport {
            platform: "linux/amd64".into(),
            digest: digest.clone(),
            size: 10,
            layers: 1,
            blob_failures: Vec::new(),
            trust: None,
            signed: Signed {
                itself: false,
                by_index: true,
            },
            sbom: Some(Sbom::Attestation {
                predicate_type: SPDX.into(),
                on: digest.clone(),
            }),
            error: None,
        };
        assert!(p.passed());
        p.blob_failures.push(BlobFailure {
            digest: Digest::sha256(b"layer"),
            reason: "digest mismatch".into(),
        });
        p.signed = Signed::default();
        p.sbom = None;
        assert_eq!(
            p.problems(),
            [
                format!("blob {}: digest mismatch", Digest::sha256(b"layer")),
                "no valid signature".to_string(),
                "no SBOM".to_string(),
            ]
        );
        let report = ReleaseReport {
            digest,
            media_type: berth_oci::media_types::OCI_INDEX.into(),
            index: None,
            platforms: Vec::new(),
            skipped: Vec::new(),
        };
        assert!(!report.passed(), "nothing checked is no pass");
    }

    #[test]
    fn sbom_referrers_by_artifact_type_and_sbom_tag() {
        let subject = Digest::sha256(b"image");
        let desc = |t: Option<&str>, n: &[u8]| Descriptor {
            media_type: berth_oci::media_types::OCI_MANIFEST.into(),
            digest: Digest::sha256(n),
            size: 1,
            urls: vec![],
            annotations: Default::default(),
            platform: None,
            artifact_type: t.map(str::to_owned),
        };
        let sbom_manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"text/spdx","digest":"{}","size":3}}]}}"#,
            Digest::sha256(b"{}"),
            Digest::sha256(b"doc"),
        );
        let sbom_tag = Tag::parse(&format!("sha256-{}.sbom", subject.hex())).unwrap();
        let sbom = Manifest::from_bytes(sbom_manifest.into(), None).unwrap();
        let attached = Attached {
            digest: subject,
            referrers: vec![
                desc(Some("application/spdx+json"), b"1"),
                desc(Some("application/vnd.dev.sigstore.bundle.v0.3+json"), b"2"),
                desc(None, b"3"),
            ],
            legacy: vec![(sbom_tag, sbom.clone())],
        };
        assert_eq!(
            attached.sbom_referrers(),
            [
                ("application/spdx+json".to_string(), Digest::sha256(b"1")),
                ("text/spdx".to_string(), sbom.digest),
            ]
        );
    }
}
