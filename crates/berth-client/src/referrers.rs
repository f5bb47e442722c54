//! The OCI 1.1 referrers API as a client uses it: listing the manifests whose `subject`
//! is a given manifest (signatures, SBOMs, attestations), and keeping the referrers tag
//! schema up to date on registries that lack the API.
//!
//! **Listing.** [`Registry::referrers`] asks `GET /v2/<name>/referrers/<digest>`, following
//! `Link: <…>; rel="next"` pages. A registry without the API answers 404 (with no OCI error
//! body, or one that does not say the repository is unknown), 400 or 405, or a body that
//! is not an image index; the client then reads the index tagged `<alg>-<hex>` (the
//! referrers tag schema, [`referrers_tag`]), and a missing tag means no referrers. An
//! `artifactType` filter is applied here whenever the registry did not say it applied it
//! (`OCI-Filters-Applied: artifactType`), and always on the tag schema's index.
//!
//! **Pushing.** A registry that processed a pushed manifest's `subject` answers the `PUT`
//! with an `OCI-Subject` header. Without it, [`Registry::put_manifest`] calls
//! [`Registry::add_tag_referrer`], which reads the tag schema's index (or starts an empty
//! one), appends the manifest's descriptor (with its artifact type and annotations) unless
//! it is listed, and pushes the index back under the tag. The read-modify-write uses
//! `If-Match` with the index's `ETag` when the registry gives one, and starts over when the
//! registry answers 412, so two clients attaching at once do not lose an entry on
//! registries that honour conditional requests. [`Registry::delete_referrer`] deletes a
//! referrer and removes its entry the same way.
//!
//! **cosign v2 tags.** cosign v2 keeps a manifest's signatures, attestations and SBOMs
//! under the tags `sha256-<hex>.sig`, `.att` and `.sbom` ([`legacy_tags`]), in manifests
//! without a `subject`. [`Registry::legacy_referrers`] reads them, so that a copy carries
//! them under the same tags; Berth lists them in its referrers API too and, like the
//! referrers tag schema's tags, hides them from its default tags list
//! ([`is_artifact_tag`]; [`Registry::tags_all`] lists them).
//!
//! This module extends [`Registry`] with the referrers operations; it uses only the
//! registry client's request machinery and knows nothing about copying or commands.

use std::collections::BTreeMap;

use berth_oci::{media_types as mt, Descriptor, Digest, Reference, RepoName, Tag};
use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::error::{ClientError, Result};
use crate::image::{Manifest, MAX_MANIFEST_BYTES};
use crate::registry::{next_link, repo_scope, Registry, MANIFEST_ACCEPT};

/// The response header by which a registry says it processed a pushed manifest's subject.
pub const SUBJECT_HEADER: &str = "oci-subject";

/// The response header listing the filters a registry applied to a referrers listing.
pub const FILTERS_APPLIED_HEADER: &str = "oci-filters-applied";

/// Read-modify-write rounds on the tag schema's index before giving up on a registry that
/// keeps answering 412 (another client keeps changing the index).
const TAG_INDEX_ATTEMPTS: u32 = 5;

/// Pages of a referrers listing followed before the listing is declared endless.
const MAX_PAGES: u32 = 10_000;

/// The referrers tag schema's tag for `subject`: `<alg>-<hex>`, the hex cut to 64
/// characters (the spec's limit, which keeps a sha512 tag within 128 characters).
pub fn referrers_tag(subject: &Digest) -> Result<Tag> {
    let hex = subject.hex();
    let hex = hex.get(..64).unwrap_or(hex);
    let s = format!("{}-{hex}", subject.algorithm().as_str());
    Tag::parse(&s).map_err(|e| ClientError::invalid(format!("referrers tag of {subject}"), e))
}

/// The suffixes of cosign v2's tags: signatures, attestations, SBOMs.
pub const LEGACY_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// The tags under which cosign v2 keeps artifacts of `subject`: `sha256-<hex>.sig`,
/// `.att` and `.sbom`. None for other algorithms, whose tags would be too long.
pub fn legacy_tags(subject: &Digest) -> Vec<Tag> {
    if subject.algorithm() != berth_oci::Algorithm::Sha256 {
        return Vec::new();
    }
    LEGACY_SUFFIXES
        .iter()
        .filter_map(|s| Tag::parse(&format!("sha256-{}.{s}", subject.hex())).ok())
        .collect()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True for tags that attach artifacts to a manifest rather than name an image: cosign
/// v2's `sha256-<hex>.sig`/`.att`/`.sbom` and the referrers tag schema's `sha256-<hex>`
/// and `sha512-<hex>`. The same rule as the registry's (`berth_meta::artifact_tags`),
/// which hides these tags from its default tags list; a copy carries them with their
/// subjects.
pub fn is_artifact_tag(tag: &str) -> bool {
    let stem = match tag.rsplit_once('.') {
        Some((stem, suffix)) if LEGACY_SUFFIXES.contains(&suffix) => {
            return stem.strip_prefix("sha256-").is_some_and(is_hex64);
        }
        _ => tag,
    };
    ["sha256-", "sha512-"]
        .iter()
        .any(|p| stem.strip_prefix(p).is_some_and(is_hex64))
}

/// A tag held back until its manifest is signed (see [`Registry::pending_tags`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct PendingTag {
    pub tag: String,
    pub digest: String,
    /// When it was pushed, RFC 3339.
    #[serde(default)]
    pub since: String,
}

/// The fields of a manifest that make it a referrer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerFields {
    subject: Option<SubjectField>,
    artifact_type: Option<String>,
    config: Option<ConfigField>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SubjectField {
    digest: Digest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigField {
    media_type: String,
}

/// The subject of `m` and the descriptor that lists `m` among the subject's referrers:
/// its artifact type is the manifest's `artifactType`, else its config's media type, and
/// it carries the manifest's annotations. `None` when `m` has no (readable) subject.
pub fn referrer_entry(m: &Manifest) -> Option<(Digest, Descriptor)> {
    // A manifest the registry accepted but whose fields do not parse here has no subject
    // this client could act on; pushing it must not fail for that.
    let fields: ReferrerFields = serde_json::from_slice(&m.bytes).ok()?;
    let subject = fields.subject?.digest;
    let artifact_type = fields
        .artifact_type
        .filter(|t| !t.is_empty())
        .or_else(|| fields.config.map(|c| c.media_type));
    let mut desc = m.descriptor();
    desc.artifact_type = artifact_type;
    desc.annotations = fields.annotations;
    Some((subject, desc))
}

/// The body of a referrers page or of the tag schema's index.
#[derive(Deserialize)]
struct IndexBody {
    manifests: Vec<Descriptor>,
}

/// Reads a body as an image index's descriptors; `None` when it is not one.
fn index_descriptors(body: &[u8]) -> Option<Vec<Descriptor>> {
    serde_json::from_slice::<IndexBody>(body)
        .ok()
        .map(|b| b.manifests)
}

/// True when the registry says it applied the `artifactType` filter.
fn artifact_filter_applied(headers: &HeaderMap) -> bool {
    headers
        .get_all(FILTERS_APPLIED_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "artifactType")
}

/// True for a 404 whose OCI error body says the repository does not exist: the registry
/// has the referrers API and the answer is a real "not found".
fn is_unknown_repository(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Code>,
    }
    #[derive(Deserialize)]
    struct Code {
        code: String,
    }
    serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors.iter().any(|c| c.code == "NAME_UNKNOWN"))
        .unwrap_or(false)
}

/// Keeps the descriptors of `artifact_type` (all when `None`).
fn filter_by_type(descs: &mut Vec<Descriptor>, artifact_type: Option<&str>) {
    if let Some(t) = artifact_type {
        descs.retain(|d| d.artifact_type.as_deref() == Some(t));
    }
}

/// The tag schema's index as read: its JSON object and the `ETag` to make the write
/// conditional on.
struct TagIndex {
    body: serde_json::Map<String, serde_json::Value>,
    etag: Option<String>,
}

impl TagIndex {
    fn empty() -> TagIndex {
        let mut body = serde_json::Map::new();
        body.insert("schemaVersion".into(), 2.into());
        body.insert("mediaType".into(), mt::OCI_INDEX.into());
        body.insert("manifests".into(), serde_json::Value::Array(Vec::new()));
        TagIndex { body, etag: None }
    }

    /// Takes the `manifests` array out of the index (empty if it had none).
    fn take_manifests(&mut self) -> Vec<serde_json::Value> {
        match self.body.remove("manifests") {
            Some(serde_json::Value::Array(a)) => a,
            _ => Vec::new(),
        }
    }

    /// Puts a `manifests` array (back) into the index.
    fn set_manifests(&mut self, manifests: Vec<serde_json::Value>) {
        self.body
            .insert("manifests".into(), serde_json::Value::Array(manifests));
    }
}

/// True when an index entry (as JSON) names `digest`.
fn entry_is(entry: &serde_json::Value, digest: &Digest) -> bool {
    entry
        .get("digest")
        .and_then(|d| d.as_str())
        .is_some_and(|d| d == digest.to_string())
}

impl Registry {
    /// The manifests whose `subject` is `digest` in `repo`, as index descriptors, with
    /// only those of `artifact_type` when one is given. Uses the referrers API and falls
    /// back to the referrers tag schema on registries without it.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        if let Some(descs) = self.referrers_api(repo, digest, artifact_type).await? {
            return Ok(descs);
        }
        tracing::debug!(%repo, %digest, "no referrers API; reading the referrers tag schema");
        let mut descs = match self.read_tag_index(repo, digest).await? {
            Some(index) => {
                let body = serde_json::Value::Object(index.body);
                serde_json::from_value::<IndexBody>(body)
                    .map_err(|e| {
                        ClientError::invalid(format!("referrers index of {digest} in {repo}"), e)
                    })?
                    .manifests
            }
            None => Vec::new(),
        };
        filter_by_type(&mut descs, artifact_type);
        Ok(descs)
    }

    /// Lists through the referrers API; `None` when the registry does not have it.
    async fn referrers_api(
        &self,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>> {
        let scopes = [repo_scope(repo, false)];
        let what = format!("referrers of {}/{repo}@{digest}", self.host());
        let first = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(ClientError::invalid(what, "pagination does not end"));
            }
            let resp = match &next {
                None => {
                    self.send(&scopes, |c| {
                        let rb = c.get(&first).header(header::ACCEPT, mt::OCI_INDEX);
                        match artifact_type {
                            Some(t) => rb.query(&[("artifactType", t)]),
                            None => rb,
                        }
                    })
                    .await?
                }
                Some(url) => {
                    self.send(&scopes, |c| {
                        c.get(url).header(header::ACCEPT, mt::OCI_INDEX)
                    })
                    .await?
                }
            };
            let status = resp.status();
            let on_first_page = next.is_none();
            if on_first_page
                && matches!(
                    status,
                    StatusCode::NOT_FOUND
                        | StatusCode::BAD_REQUEST
                        | StatusCode::METHOD_NOT_ALLOWED
                )
            {
                let body = resp.bytes().await.map_err(|e| self.network(&e))?;
                if status == StatusCode::NOT_FOUND && is_unknown_repository(&body) {
                    return Err(ClientError::NotFound(format!(
                        "repository {repo} on {}",
                        self.host()
                    )));
                }
                tracing::debug!(%status, "the registry has no referrers API");
                return Ok(None);
            }
            let resp = self.check(resp, "list referrers", &what).await?;
            if resp
                .content_length()
                .is_some_and(|l| l > MAX_MANIFEST_BYTES)
            {
                return Err(ClientError::invalid(
                    what,
                    "a referrers page is larger than 4 MiB",
                ));
            }
            let filtered = artifact_filter_applied(resp.headers());
            next = next_link(resp.headers()).map(|l| self.url(&l));
            let body = resp.bytes().await.map_err(|e| self.network(&e))?;
            let mut descs = match index_descriptors(&body) {
                Some(d) => d,
                // A registry that answers the path with something else (a catch-all page,
                // say) does not have the API.
                None if on_first_page => return Ok(None),
                None => return Err(ClientError::invalid(what, "a page is not an image index")),
            };
            if !filtered {
                filter_by_type(&mut descs, artifact_type);
            }
            out.extend(descs);
            if next.is_none() {
                return Ok(Some(out));
            }
        }
    }

    /// The manifests cosign v2 keeps under the tags of `subject` ([`legacy_tags`]), each
    /// with its tag; a missing tag is skipped. Works on any registry, with or without the
    /// referrers API. Each tag is probed with `HEAD` (most are absent, and registries
    /// that meter pulls count `GET`s), and a present one fetched by the digest the `HEAD`
    /// answered, so its bytes are verified.
    pub async fn legacy_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<(Tag, Manifest)>> {
        let mut out = Vec::new();
        for tag in legacy_tags(subject) {
            let Some(desc) = self
                .head_manifest(repo, &Reference::Tag(tag.clone()))
                .await?
            else {
                continue;
            };
            let m = self
                .get_manifest(repo, &Reference::Digest(desc.digest))
                .await?;
            out.push((tag, m));
        }
        Ok(out)
    }

    /// Every tag of a repository, following pagination, with those Berth hides from its
    /// default list ([`is_artifact_tag`]): asks with `all=true`, which registries that
    /// hide nothing ignore.
    pub async fn tags_all(&self, repo: &RepoName) -> Result<Vec<String>> {
        let url = self.url(&format!("/v2/{repo}/tags/list?all=true"));
        self.paginate(
            url,
            &[repo_scope(repo, false)],
            &format!("tags of {}/{repo}", self.host()),
            "tags",
        )
        .await
    }

    /// Tags a registry holds back until their manifest is signed (Berth's publish gate,
    /// the `pending` list of `tags/list?all=true`); empty on registries without one.
    pub async fn pending_tags(&self, repo: &RepoName) -> Result<Vec<PendingTag>> {
        let url = self.url(&format!("/v2/{repo}/tags/list?all=true"));
        let what = format!("tags of {}/{repo}", self.host());
        let resp = self
            .send(&[repo_scope(repo, false)], |c| c.get(&url))
            .await?;
        let resp = self.check(resp, "GET tags", &what).await?;
        #[derive(serde::Deserialize)]
        struct Listing {
            #[serde(default)]
            pending: Vec<PendingTag>,
        }
        let body = resp.bytes().await.map_err(|e| self.network(&e))?;
        let listing: Listing =
            serde_json::from_slice(&body).map_err(|e| ClientError::invalid(&what, e))?;
        Ok(listing.pending)
    }

    /// Reads the tag schema's index for `subject`; `None` when the tag does not exist.
    async fn read_tag_index(&self, repo: &RepoName, subject: &Digest) -> Result<Option<TagIndex>> {
        let tag = referrers_tag(subject)?;
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let what = format!("referrers index {}/{repo}:{tag}", self.host());
        let resp = self
            .send(&[repo_scope(repo, false)], |c| {
                c.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check(resp, "GET referrers index", &what).await?;
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST_BYTES)
        {
            return Err(ClientError::invalid(what, "larger than 4 MiB"));
        }
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.map_err(|e| self.network(&e))?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ClientError::invalid(&what, e))?;
        let is_index = value
            .get("mediaType")
            .and_then(|t| t.as_str())
            .is_none_or(|t| t == mt::OCI_INDEX)
            && value.get("manifests").is_some_and(|m| m.is_array());
        match value {
            serde_json::Value::Object(body) if is_index => Ok(Some(TagIndex { body, etag })),
            // The spec asks clients to stop rather than overwrite what someone tagged.
            _ => Err(ClientError::invalid(
                what,
                "the tag names something other than an image index",
            )),
        }
    }

    /// Applies `edit` to the tag schema's index for `subject` and pushes the result when
    /// `edit` changed it, starting over if the registry refuses the conditional write. A
    /// missing index is started empty when `create`, else left alone. Returns whether an
    /// index was pushed.
    async fn edit_tag_index(
        &self,
        repo: &RepoName,
        subject: &Digest,
        create: bool,
        edit: impl Fn(&mut Vec<serde_json::Value>) -> bool,
    ) -> Result<bool> {
        let tag = referrers_tag(subject)?;
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let what = format!("referrers index {}/{repo}:{tag}", self.host());
        for attempt in 0..TAG_INDEX_ATTEMPTS {
            let mut index = match self.read_tag_index(repo, subject).await? {
                Some(i) => i,
                None if create => TagIndex::empty(),
                None => return Ok(false),
            };
            let mut manifests = index.take_manifests();
            if !edit(&mut manifests) {
                return Ok(false);
            }
            index.set_manifests(manifests);
            let body = serde_json::to_vec(&serde_json::Value::Object(index.body))
                .map_err(|e| ClientError::invalid(&what, e))?;
            let body = Bytes::from(body);
            let etag = index.etag;
            let resp = self
                .send(&[repo_scope(repo, true)], |c| {
                    let rb = c
                        .put(&url)
                        .header(header::CONTENT_TYPE, mt::OCI_INDEX)
                        .body(body.clone());
                    match &etag {
                        Some(e) => rb.header(header::IF_MATCH, e),
                        None => rb,
                    }
                })
                .await?;
            if resp.status() == StatusCode::PRECONDITION_FAILED {
                tracing::debug!(%tag, attempt, "referrers index changed meanwhile; reading it again");
                continue;
            }
            self.check(resp, "PUT referrers index", &what).await?;
            return Ok(true);
        }
        Err(ClientError::Registry {
            host: self.host().to_owned(),
            op: format!("PUT referrers index {repo}:{tag}"),
            status: 412,
            code: "HTTP 412".into(),
            message: format!(": the index kept changing over {TAG_INDEX_ATTEMPTS} attempts"),
        })
    }

    /// Lists `desc` in the referrers tag schema's index of `subject` (created if missing),
    /// unless an entry with its digest is there. Returns whether the index was pushed.
    /// [`Registry::put_manifest`] calls this by itself when the registry did not process
    /// the subject.
    pub async fn add_tag_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        desc: &Descriptor,
    ) -> Result<bool> {
        let entry = serde_json::to_value(desc)
            .map_err(|e| ClientError::invalid(format!("descriptor {}", desc.digest), e))?;
        self.edit_tag_index(repo, subject, true, |manifests| {
            if manifests.iter().any(|m| entry_is(m, &desc.digest)) {
                return false;
            }
            manifests.push(entry.clone());
            true
        })
        .await
    }

    /// Removes the entries for `referrer` from the referrers tag schema's index of
    /// `subject`. Returns whether the index was pushed (false when there is no index or it
    /// does not list `referrer`).
    pub async fn remove_tag_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<bool> {
        self.edit_tag_index(repo, subject, false, |manifests| {
            let before = manifests.len();
            manifests.retain(|m| !entry_is(m, referrer));
            manifests.len() != before
        })
        .await
    }

    /// Deletes the manifest `m` and, when it has a subject, its entry in the referrers
    /// tag schema's index. The index is read without first asking whether the registry
    /// has the referrers API: on one that has it the tag is normally absent (one `GET`,
    /// as the probe would cost), and an entry for a deleted manifest is wrong either way.
    /// `force` is as for [`Registry::delete_manifest_with`].
    pub async fn delete_referrer(&self, repo: &RepoName, m: &Manifest, force: bool) -> Result<()> {
        self.delete_manifest_with(repo, &m.digest, force).await?;
        if let Some((subject, _)) = referrer_entry(m) {
            self.remove_tag_referrer(repo, &subject, &m.digest).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    fn desc(n: u8, artifact_type: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: mt::OCI_MANIFEST.into(),
            digest: digest(n),
            size: 10,
            urls: vec![],
            annotations: Default::default(),
            platform: None,
            artifact_type: artifact_type.map(str::to_owned),
        }
    }

    #[test]
    fn tag_schema_names() {
        let d = digest(1);
        assert_eq!(
            referrers_tag(&d).unwrap().as_str(),
            format!("sha256-{}", d.hex())
        );
        let long = Digest::of(berth_oci::Algorithm::Sha512, b"x");
        let t = referrers_tag(&long).unwrap();
        assert_eq!(t.as_str(), format!("sha512-{}", &long.hex()[..64]));
        assert_eq!(t.as_str().len(), 71);
    }

    #[test]
    fn legacy_and_artifact_tags() {
        let d = digest(1);
        let tags: Vec<String> = legacy_tags(&d).iter().map(|t| t.to_string()).collect();
        assert_eq!(
            tags,
            ["sig", "att", "sbom"].map(|s| format!("sha256-{}.{s}", d.hex()))
        );
        assert!(legacy_tags(&Digest::of(berth_oci::Algorithm::Sha512, b"x")).is_empty());
        for t in &tags {
            assert!(is_artifact_tag(t), "{t}");
        }
        assert!(is_artifact_tag(referrers_tag(&d).unwrap().as_str()));
        let long = Digest::of(berth_oci::Algorithm::Sha512, b"x");
        assert!(is_artifact_tag(referrers_tag(&long).unwrap().as_str()));
        let hex = d.hex();
        for image_tag in [
            "latest".to_owned(),
            "sha256-abc.sig".to_owned(),
            format!("sha256-{hex}.sig2"),
            format!("sha512-{hex}.sig"),
            format!("sha256-{}", hex.to_uppercase()),
            format!("sha256-{hex}-debug"),
        ] {
            assert!(!is_artifact_tag(&image_tag), "{image_tag}");
        }
    }

    #[test]
    fn referrer_entry_takes_type_and_annotations() {
        let subject = digest(9);
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.example.sig","digest":"{}","size":2}},"layers":[],"subject":{{"mediaType":"{}","digest":"{subject}","size":3}},"annotations":{{"org.opencontainers.image.created":"2024-05-06T07:08:09Z"}}}}"#,
            mt::OCI_MANIFEST,
            digest(2),
            mt::OCI_MANIFEST,
        );
        let m = Manifest::from_bytes(Bytes::from(body), Some(mt::OCI_MANIFEST)).unwrap();
        let (s, d) = referrer_entry(&m).unwrap();
        assert_eq!(s, subject);
        assert_eq!(d.digest, m.digest);
        assert_eq!(d.size, m.bytes.len() as u64);
        assert_eq!(
            d.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(
            d.annotations["org.opencontainers.image.created"],
            "2024-05-06T07:08:09Z"
        );

        // An explicit artifactType wins over the config's media type.
        let explicit = String::from_utf8(m.bytes.to_vec()).unwrap().replacen(
            "\"config\"",
            "\"artifactType\":\"application/spdx+json\",\"config\"",
            1,
        );
        let m2 = Manifest::from_bytes(Bytes::from(explicit), None).unwrap();
        let (_, d2) = referrer_entry(&m2).unwrap();
        assert_eq!(d2.artifact_type.as_deref(), Some("application/spdx+json"));

        let plain = Manifest::from_bytes(
            Bytes::from_static(br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#),
            None,
        )
        .unwrap();
        assert!(referrer_entry(&plain).is_none());
    }

    #[test]
    fn pages_filters_and_errors() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_INDEX,
            "manifests": [desc(1, Some("a/sig")), desc(2, Some("a/sbom")), desc(3, None)],
        });
        let mut descs = index_descriptors(body.to_string().as_bytes()).unwrap();
        assert_eq!(descs.len(), 3);
        filter_by_type(&mut descs, Some("a/sbom"));
        assert_eq!(descs, vec![desc(2, Some("a/sbom"))]);
        assert!(index_descriptors(b"404 page not found").is_none());
        assert!(index_descriptors(br#"{"errors":[]}"#).is_none());

        let mut h = HeaderMap::new();
        assert!(!artifact_filter_applied(&h));
        h.insert(FILTERS_APPLIED_HEADER, "foo, artifactType".parse().unwrap());
        assert!(artifact_filter_applied(&h));

        assert!(is_unknown_repository(
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no such repository"}]}"#
        ));
        assert!(!is_unknown_repository(b"404 page not found"));
        assert!(!is_unknown_repository(
            br#"{"errors":[{"code":"UNSUPPORTED"}]}"#
        ));
    }

    #[test]
    fn tag_index_edits() {
        let mut index = TagIndex::empty();
        let mut manifests = index.take_manifests();
        assert!(manifests.is_empty());
        manifests.push(serde_json::to_value(desc(1, Some("a/sig"))).unwrap());
        index.set_manifests(manifests);
        let manifests = index.take_manifests();
        assert!(entry_is(&manifests[0], &digest(1)));
        assert!(!entry_is(&manifests[0], &digest(2)));
        let mut odd = TagIndex {
            body: serde_json::Map::new(),
            etag: None,
        };
        odd.body.insert("manifests".into(), serde_json::Value::Null);
        assert!(odd.take_manifests().is_empty());
    }
}
