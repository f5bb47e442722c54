//! An HTTP client for one OCI registry: manifests, blobs, uploads, tags and catalog (the
//! referrers operations are in [`crate::referrers`]).
//!
//! Every request goes through [`Registry::send`], which adds credentials, answers a 401
//! challenge once (Basic, or a Bearer token fetched for the request's scopes and cached
//! per scope), and retries with exponential backoff on connection errors, 429 and 5xx.
//! Requests with a streamed body cannot be replayed; their callers resume instead:
//! chunked uploads ask the registry where the upload stands and send the rest, and blob
//! downloads continue with a `Range` request.
//!
//! This module knows the Distribution API and nothing about layouts, tarballs or copying.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_oci::{media_types as mt, Descriptor, Digest, Reference, RepoName};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};

use crate::auth::{self, Challenge, Credentials};
use crate::error::{from_response, ClientError, Result};
use crate::image::{BlobStream, Manifest, MAX_MANIFEST_BYTES};
use crate::reference::{api_host, is_local_host};
use crate::referrers;

/// Tuning knobs shared by every registry client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Speak plain HTTP to every registry (always done for localhost and loopback).
    pub insecure: bool,
    /// Blobs larger than this are uploaded in chunks of [`ClientOptions::chunk_size`].
    pub chunk_threshold: u64,
    /// Size of one upload chunk (each chunk is held in memory once while it is sent).
    pub chunk_size: usize,
    /// Retries after the first attempt for retryable failures.
    pub max_retries: u32,
    /// First backoff delay; doubles on each retry.
    pub retry_base: Duration,
    /// The Docker config file to read credentials from (`None`: the default path).
    pub docker_config: Option<std::path::PathBuf>,
    /// PEM CA certificates to trust besides the system's. When given, loopback registries
    /// are spoken to over HTTPS too (unless `insecure`).
    pub ca_certs: Vec<std::path::PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            insecure: false,
            chunk_threshold: 64 << 20,
            chunk_size: 16 << 20,
            max_retries: 4,
            retry_base: Duration::from_millis(250),
            docker_config: None,
            ca_certs: Vec::new(),
        }
    }
}

impl ClientOptions {
    /// The backoff before retry number `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retry_base.saturating_mul(1 << attempt.min(6))
    }
}

/// Shared HTTP machinery and per-host clients, so that connections and tokens are reused.
#[derive(Clone)]
pub struct Clients {
    http: reqwest::Client,
    opts: Arc<ClientOptions>,
    hosts: Arc<Mutex<HashMap<String, Registry>>>,
}

impl Clients {
    pub fn new(opts: ClientOptions) -> Result<Clients> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(32);
        if !opts.ca_certs.is_empty() {
            let certs = crate::tls::read_certificates(&opts.ca_certs)?;
            builder = builder.use_preconfigured_tls(crate::tls::client_config(&certs)?);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Clients {
            http,
            opts: Arc::new(opts),
            hosts: Arc::default(),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The client for a registry host as written in references (e.g. `docker.io`).
    pub fn registry(&self, host: &str) -> Result<Registry> {
        let mut hosts = self
            .hosts
            .lock()
            .map_err(|_| ClientError::Usage("client state poisoned".into()))?;
        if let Some(r) = hosts.get(host) {
            return Ok(r.clone());
        }
        let creds = self.credentials(host)?;
        let r = Registry::new(self.http.clone(), self.opts.clone(), host, creds);
        hosts.insert(host.to_owned(), r.clone());
        Ok(r)
    }

    /// A fresh client for `host` using `creds` instead of the Docker config (for login).
    pub fn registry_with(&self, host: &str, creds: Option<Credentials>) -> Registry {
        Registry::new(self.http.clone(), self.opts.clone(), host, creds)
    }

    fn credentials(&self, host: &str) -> Result<Option<Credentials>> {
        let path = match &self.opts.docker_config {
            Some(p) => Some(p.clone()),
            None => auth::default_config_path(),
        };
        match path {
            Some(p) => auth::DockerConfig::load(&p)?.lookup(host),
            None => Ok(None),
        }
    }
}

/// The `repository:<name>:<actions>` scope of a token.
pub fn repo_scope(repo: &RepoName, push: bool) -> String {
    format!(
        "repository:{repo}:{}",
        if push { "pull,push" } else { "pull" }
    )
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<String, String>,
}

/// A client for one registry host. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    base: String,
    http: reqwest::Client,
    opts: Arc<ClientOptions>,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
}

/// The text of an error and its causes, on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Where an upload stands after a status request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub location: String,
    /// Bytes the registry holds (from `Range: 0-<last>`).
    pub offset: u64,
}

/// Parses an upload `Range` header (`0-<last>`, Distribution's form) into a byte count.
/// `0-0` is read as 0 bytes when `hint` is 0 and as 1 otherwise, since the header cannot
/// tell them apart.
pub fn parse_upload_range(v: &str, hint: u64) -> Option<u64> {
    let v = v.trim().trim_start_matches("bytes=").trim();
    let (a, b) = v.split_once('-')?;
    let (_, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    if b == 0 && hint == 0 {
        Some(0)
    } else {
        Some(b + 1)
    }
}

/// The `next` URL of a `Link: <url>; rel="next"` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|l| l.contains("rel=\"next\"") || l.contains("rel=next"))
        .and_then(|l| {
            let start = l.find('<')? + 1;
            let end = l[start..].find('>')? + start;
            Some(l[start..end].to_owned())
        })
}

pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

impl Registry {
    fn new(
        http: reqwest::Client,
        opts: Arc<ClientOptions>,
        host: &str,
        creds: Option<Credentials>,
    ) -> Registry {
        let api = api_host(host);
        let scheme = if opts.insecure || (is_local_host(api) && opts.ca_certs.is_empty()) {
            "http"
        } else {
            "https"
        };
        Registry {
            inner: Arc::new(Inner {
                host: host.to_owned(),
                base: format!("{scheme}://{api}"),
                http,
                opts,
                creds,
                auth: Mutex::new(AuthState::default()),
            }),
        }
    }

    /// The host as written in references.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// The absolute URL for a path or a (possibly relative) `Location`.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else if path_or_url.starts_with('/') {
            format!("{}{path_or_url}", self.inner.base)
        } else {
            format!("{}/{path_or_url}", self.inner.base)
        }
    }

    pub(crate) fn network(&self, e: &reqwest::Error) -> ClientError {
        let mut detail = error_chain(e);
        if crate::tls::is_tls_answer_to_http(e) {
            detail = format!(
                "{} speaks HTTPS (TLS), but Berth spoke plain HTTP to it: drop --insecure, \
                 or for a loopback registry give its certificate with --ca-cert FILE \
                 (then Berth uses https) ({detail})",
                self.inner.host
            );
        }
        ClientError::Network {
            host: self.inner.host.clone(),
            detail,
        }
    }

    fn auth_state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A poisoned lock only means another request panicked; the cache is still usable.
        self.inner
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `Authorization` value for a request needing `scopes`, fetching a token if the
    /// registry asked for Bearer auth before.
    async fn auth_header(&self, scopes: &[String]) -> Result<Option<String>> {
        let key = scopes.join(" ");
        let challenge = {
            let st = self.auth_state();
            match &st.challenge {
                None => return Ok(None),
                Some(Challenge::Basic) => {
                    return Ok(self.inner.creds.as_ref().map(|c| c.basic_header()))
                }
                Some(c @ Challenge::Bearer { .. }) => {
                    if let Some(t) = st.tokens.get(&key) {
                        return Ok(Some(format!("Bearer {t}")));
                    }
                    c.clone()
                }
            }
        };
        let Challenge::Bearer { realm, service, .. } = challenge else {
            return Ok(None);
        };
        let token = auth::fetch_token(
            &self.inner.http,
            &self.inner.host,
            &realm,
            service.as_deref(),
            scopes,
            self.inner.creds.as_ref(),
        )
        .await?;
        self.auth_state().tokens.insert(key, token.clone());
        Ok(Some(format!("Bearer {token}")))
    }

    /// Learns the challenge of a 401 response and forgets the token that failed.
    fn learn_challenge(&self, resp: &reqwest::Response, scopes: &[String]) -> Result<()> {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            .collect();
        let chosen = challenges
            .iter()
            .find(|c| matches!(c, Challenge::Bearer { .. }))
            .or_else(|| challenges.first())
            .cloned();
        let Some(chosen) = chosen else {
            return Err(ClientError::Auth {
                host: self.inner.host.clone(),
                detail: "the registry answered 401 without a challenge Berth understands".into(),
            });
        };
        if chosen == Challenge::Basic && self.inner.creds.is_none() {
            return Err(ClientError::Auth {
                host: self.inner.host.clone(),
                detail: format!(
                    "credentials required; run `berth login {}`",
                    self.inner.host
                ),
            });
        }
        let mut st = self.auth_state();
        st.tokens.remove(&scopes.join(" "));
        st.challenge = Some(chosen);
        Ok(())
    }

    /// Sends a request built by `build`, with auth and retries. The response may have
    /// any status; see [`Registry::check`].
    pub async fn send(
        &self,
        scopes: &[String],
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let opts = &self.inner.opts;
        let mut attempt = 0;
        let mut answered_challenge = false;
        loop {
            let mut rb = build(&self.inner.http);
            if let Some(h) = self.auth_header(scopes).await? {
                rb = rb.header(header::AUTHORIZATION, h);
            }
            match rb.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !answered_challenge => {
                    answered_challenge = true;
                    self.learn_challenge(&resp, scopes)?;
                }
                Ok(resp)
                    if (resp.status().is_server_error()
                        || resp.status() == StatusCode::TOO_MANY_REQUESTS)
                        && attempt < opts.max_retries =>
                {
                    tracing::debug!(status = %resp.status(), attempt, "retrying");
                    tokio::time::sleep(opts.backoff(attempt)).await;
                    attempt += 1;
                }
                Ok(resp) => return Ok(resp),
                // A TLS server answering plain HTTP will not change its mind.
                Err(e)
                    if attempt < opts.max_retries
                        && !e.is_builder()
                        && !crate::tls::is_tls_answer_to_http(&e) =>
                {
                    tracing::debug!(error = %e, attempt, "retrying after a connection error");
                    tokio::time::sleep(opts.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.network(&e)),
            }
        }
    }

    /// Sends a request once (its body is a stream that cannot be replayed), with the
    /// credentials learned by earlier requests for the same scopes.
    async fn send_once(
        &self,
        scopes: &[String],
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let rb = match self.auth_header(scopes).await? {
            Some(h) => rb.header(header::AUTHORIZATION, h),
            None => rb,
        };
        rb.send().await.map_err(|e| self.body_error(&e))
    }

    /// A body stream that failed (say, a digest mismatch at the source) surfaces in
    /// reqwest as a connection error; report that cause rather than "network error".
    fn body_error(&self, e: &reqwest::Error) -> ClientError {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cur {
            if let Some(ce) = c.downcast_ref::<ClientError>() {
                match ce {
                    ClientError::DigestMismatch {
                        what,
                        expected,
                        actual,
                    } => {
                        return ClientError::DigestMismatch {
                            what: what.clone(),
                            expected: expected.clone(),
                            actual: actual.clone(),
                        }
                    }
                    ClientError::SizeMismatch {
                        what,
                        expected,
                        actual,
                    } => {
                        return ClientError::SizeMismatch {
                            what: what.clone(),
                            expected: *expected,
                            actual: *actual,
                        }
                    }
                    other => {
                        return ClientError::Network {
                            host: self.inner.host.clone(),
                            detail: other.to_string(),
                        }
                    }
                }
            }
            cur = c.source();
        }
        self.network(e)
    }

    /// Returns the response if it succeeded, else the error its status and body describe.
    pub async fn check(
        &self,
        resp: reqwest::Response,
        op: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let refusal = (status == 401)
            .then(|| self.permission_refusal(resp.headers()))
            .flatten();
        let body = resp.bytes().await.unwrap_or_default();
        let err = from_response(&self.inner.host, op, what, status, &body);
        Err(match (refusal, err) {
            // A 401 after the token endpoint accepted the credentials is not a failed
            // login: the account lacks the permission, and the message says which.
            (Some(lacking), ClientError::Auth { detail, .. }) => ClientError::Denied {
                host: self.inner.host.clone(),
                detail: format!("{lacking} ({detail})"),
            },
            (_, err) => err,
        })
    }

    /// For a 401 that refuses a permission rather than the credentials: "account NAME
    /// lacks ACTION on repository REPO". That is the case when the challenge says
    /// `insufficient_scope`, or when credentials got a token for the challenged scope
    /// (so the token endpoint accepted them) and the registry still refused it.
    fn permission_refusal(&self, headers: &HeaderMap) -> Option<String> {
        let (scope, error) = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| match Challenge::parse(v) {
                Some(Challenge::Bearer { scope, error, .. }) => Some((scope, error)),
                _ => None,
            })?;
        let had_token = {
            let st = self.auth_state();
            scope.as_ref().is_some_and(|sc| {
                st.tokens
                    .keys()
                    .any(|k| k.split(' ').any(|s| s == sc.as_str()))
            })
        };
        let creds = self.inner.creds.as_ref();
        let lacking = match error.as_deref() {
            Some("insufficient_scope") => true,
            // An expired or otherwise refused token is a credentials problem.
            Some(_) => false,
            None => had_token && creds.is_some(),
        };
        if !lacking {
            return None;
        }
        let who = match creds {
            Some(c) => format!("account {}", c.username),
            None => "anonymous access".to_owned(),
        };
        Some(match scope.as_deref().and_then(auth::describe_scope) {
            Some((action, repo)) => format!("{who} lacks {action} on repository {repo}"),
            None => format!("{who} lacks the permission for this request"),
        })
    }

    /// `GET /v2/`: checks that the registry answers and that the credentials work.
    pub async fn ping(&self) -> Result<()> {
        let url = self.url("/v2/");
        let resp = self.send(&[], |c| c.get(&url)).await?;
        self.check(resp, "GET /v2/", "the registry API").await?;
        Ok(())
    }

    /// Fetches a manifest; by digest, the bytes are verified against it.
    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Manifest> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let what = format!("image {}/{repo}{}", self.inner.host, ref_suffix(reference));
        let resp = self
            .send(&[repo_scope(repo, false)], |c| {
                c.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let resp = self.check(resp, "GET manifest", &what).await?;
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST_BYTES)
        {
            return Err(ClientError::invalid(what, "manifest is larger than 4 MiB"));
        }
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.map_err(|e| self.network(&e))?;
        match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &bytes);
                let m = Manifest::with_digest(bytes, ct.as_deref(), actual)?;
                m.verify(d)?;
                Ok(m)
            }
            Reference::Tag(_) => Manifest::from_bytes(bytes, ct.as_deref()),
        }
    }

    /// `HEAD` a manifest: its digest, media type and size, or `None` if absent.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Descriptor>> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let what = format!("image {}/{repo}{}", self.inner.host, ref_suffix(reference));
        let resp = self
            .send(&[repo_scope(repo, false)], |c| {
                c.head(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check(resp, "HEAD manifest", &what).await?;
        let h = resp.headers();
        let digest = h
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let Some(digest) = digest else {
            // Some registries do not send the digest on HEAD; fetch and hash instead.
            let m = self.get_manifest(repo, reference).await?;
            return Ok(Some(m.descriptor()));
        };
        let media_type = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| berth_oci::manifest::essence(v).to_owned())
            .filter(|t| mt::MANIFEST_TYPES.contains(&t.as_str()));
        // The header, not `content_length()`: that is the size of the body received, which
        // a HEAD response never has.
        let size = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0);
        let (Some(media_type), Some(size)) = (media_type, size) else {
            // A registry that leaves out the type or the length is asked for the manifest.
            let m = self.get_manifest(repo, reference).await?;
            return Ok(Some(m.descriptor()));
        };
        Ok(Some(Descriptor {
            media_type,
            digest,
            size,
            urls: vec![],
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        }))
    }

    /// Pushes the exact bytes of a manifest under a tag or its digest. When the manifest
    /// has a `subject` and the registry's answer lacks `OCI-Subject` (it did not process
    /// the subject), the manifest is also listed in the referrers tag schema's index, as
    /// the OCI Distribution Spec 1.1 asks of clients (see [`crate::referrers`]).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        m: &Manifest,
    ) -> Result<()> {
        self.put_manifest_with(repo, reference, m, false).await
    }

    /// [`Registry::put_manifest`]; `force` asks a Berth registry to override its tag
    /// policy (an immutable release tag, a floating tag moving back), which needs the
    /// `admin` action, as [`Registry::delete_manifest_with`] does for deletions.
    pub async fn put_manifest_with(
        &self,
        repo: &RepoName,
        reference: &Reference,
        m: &Manifest,
        force: bool,
    ) -> Result<()> {
        let mut url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let mut scopes = vec![repo_scope(repo, true)];
        if force {
            url.push_str("?force=true");
            scopes.insert(0, format!("repository:{repo}:*"));
        }
        let what = format!("manifest {}", m.digest);
        let resp = self
            .send(&scopes, |c| {
                c.put(&url)
                    .header(header::CONTENT_TYPE, &m.media_type)
                    .body(m.bytes.clone())
            })
            .await?;
        let resp = self
            .check(resp, &format!("PUT manifest {repo}:{reference}"), &what)
            .await?;
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok())
        {
            if d.algorithm() == m.digest.algorithm() && d != m.digest {
                return Err(ClientError::DigestMismatch {
                    what: format!("manifest pushed to {}/{repo}", self.inner.host),
                    expected: m.digest.clone(),
                    actual: d,
                });
            }
        }
        if !resp.headers().contains_key(referrers::SUBJECT_HEADER) {
            if let Some((subject, desc)) = referrers::referrer_entry(m) {
                self.add_tag_referrer(repo, &subject, &desc).await?;
            }
        }
        Ok(())
    }

    /// Deletes a manifest by digest.
    pub async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.delete_manifest_with(repo, digest, false).await
    }

    /// Deletes a manifest; `force` asks a Berth registry to override its tag policy
    /// (release tags are otherwise protected), which needs the `admin` action.
    pub async fn delete_manifest_with(
        &self,
        repo: &RepoName,
        digest: &Digest,
        force: bool,
    ) -> Result<()> {
        let mut url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let mut scopes = vec![format!("repository:{repo}:delete"), repo_scope(repo, true)];
        if force {
            url.push_str("?force=true");
            scopes.insert(0, format!("repository:{repo}:*"));
        }
        let resp = self.send(&scopes, |c| c.delete(&url)).await?;
        self.check(
            resp,
            "DELETE manifest",
            &format!("image {}/{repo}@{digest}", self.inner.host),
        )
        .await?;
        Ok(())
    }

    /// Deletes a tag; the manifest it pointed at stays (OCI Distribution 1.1). `Ok(false)`
    /// when the registry has no such tag; a registry that cannot delete tags (CNCF
    /// Distribution 2.x) refuses with its error.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &berth_oci::Tag) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let scopes = [format!("repository:{repo}:delete"), repo_scope(repo, true)];
        let resp = self.send(&scopes, |c| c.delete(&url)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.check(
            resp,
            "DELETE tag",
            &format!("image {}/{repo}:{tag}", self.inner.host),
        )
        .await?;
        Ok(true)
    }

    /// `HEAD` a blob: its size (0 when the registry sends no length), or `None` if the
    /// repository does not have it.
    pub async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(&[repo_scope(repo, false)], |c| c.head(&url))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self
            .check(resp, "HEAD blob", &format!("blob {digest}"))
            .await?;
        // The header, not `content_length()`: that is the size of the body received, which
        // a HEAD response never has.
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Ok(Some(size.unwrap_or(0)))
    }

    /// Opens a blob for reading from byte `offset` on.
    async fn open_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<reqwest::Response> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(&[repo_scope(repo, false)], |c| {
                let rb = c.get(&url);
                if offset > 0 {
                    rb.header(header::RANGE, format!("bytes={offset}-"))
                } else {
                    rb
                }
            })
            .await?;
        let resp = self
            .check(
                resp,
                "GET blob",
                &format!("blob {digest} in {}/{repo}", self.inner.host),
            )
            .await?;
        if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(ClientError::Unsupported(format!(
                "{} does not serve byte ranges, so the download of {digest} cannot resume",
                self.inner.host
            )));
        }
        Ok(resp)
    }

    /// Streams a blob. A connection dropped mid-way is resumed with a `Range` request
    /// (up to the retry limit); the caller verifies the digest.
    pub async fn get_blob(&self, repo: &RepoName, desc: &Descriptor) -> Result<BlobStream> {
        let first = self.open_blob(repo, &desc.digest, 0).await?;
        struct State {
            reg: Registry,
            repo: RepoName,
            digest: Digest,
            size: u64,
            offset: u64,
            retries: u32,
            body: Option<futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>>,
        }
        let state = State {
            reg: self.clone(),
            repo: repo.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
            offset: 0,
            retries: 0,
            body: Some(first.bytes_stream().boxed()),
        };
        let stream = futures_util::stream::try_unfold(state, |mut st| async move {
            loop {
                let next = match st.body.as_mut() {
                    Some(b) => b.next().await,
                    None => None,
                };
                match next {
                    Some(Ok(chunk)) => {
                        st.offset += chunk.len() as u64;
                        return Ok(Some((chunk, st)));
                    }
                    None if st.body.is_none() || st.offset >= st.size => return Ok(None),
                    end => {
                        // The body ended early or failed: resume from where it stopped.
                        let max = st.reg.inner.opts.max_retries;
                        if st.retries >= max {
                            return Err(match end {
                                Some(Err(e)) => st.reg.network(&e),
                                _ => ClientError::Network {
                                    host: st.reg.inner.host.clone(),
                                    detail: format!(
                                        "download of {} stopped at byte {} of {}",
                                        st.digest, st.offset, st.size
                                    ),
                                },
                            });
                        }
                        tokio::time::sleep(st.reg.inner.opts.backoff(st.retries)).await;
                        st.retries += 1;
                        tracing::debug!(digest = %st.digest, offset = st.offset, "resuming download");
                        let resp = st.reg.open_blob(&st.repo, &st.digest, st.offset).await?;
                        st.body = Some(resp.bytes_stream().boxed());
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    /// Tries a cross-repository mount. `Ok(None)` when mounted; otherwise the location
    /// of the upload session the registry opened instead.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Option<String>> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let scopes = [repo_scope(repo, true), repo_scope(from, false)];
        let resp = self
            .send(&scopes, |c| {
                c.post(&url)
                    .query(&[("mount", digest.to_string()), ("from", from.to_string())])
                    .header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        let resp = self
            .check(resp, "mount blob", &format!("blob {digest}"))
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(None);
        }
        Ok(Some(self.location(&resp)?))
    }

    fn location(&self, resp: &reqwest::Response) -> Result<String> {
        resp.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| self.url(l))
            .ok_or_else(|| {
                ClientError::invalid(
                    format!("upload response from {}", self.inner.host),
                    "no Location header",
                )
            })
    }

    /// Opens an upload session and returns its location.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<String> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self
            .send(&[repo_scope(repo, true)], |c| {
                c.post(&url).header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        let resp = self
            .check(resp, "start upload", &format!("repository {repo}"))
            .await?;
        self.location(&resp)
    }

    /// Asks where an upload stands. `hint` is the offset the client believes in, used
    /// only to read the ambiguous `Range: 0-0`.
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        location: &str,
        hint: u64,
    ) -> Result<UploadStatus> {
        let resp = self
            .send(&[repo_scope(repo, true)], |c| c.get(location))
            .await?;
        let resp = self
            .check(resp, "upload status", &format!("upload {location}"))
            .await?;
        let offset = resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_upload_range(v, hint))
            .unwrap_or(0);
        let location = self.location(&resp).unwrap_or_else(|_| location.to_owned());
        Ok(UploadStatus { location, offset })
    }

    fn with_digest(location: &str, digest: &Digest) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    }

    /// Uploads a blob from a (verified) stream: monolithic for small blobs, in chunks
    /// with resume for large ones. `location` is a session already opened by a mount.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
        stream: BlobStream,
        location: Option<String>,
    ) -> Result<()> {
        let location = match location {
            Some(l) => l,
            None => self.start_upload(repo).await?,
        };
        if desc.size <= self.inner.opts.chunk_threshold {
            self.put_monolithic(repo, desc, stream, &location).await
        } else {
            self.put_chunked(repo, desc, stream, location).await
        }
    }

    async fn put_monolithic(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
        stream: BlobStream,
        location: &str,
    ) -> Result<()> {
        let url = Self::with_digest(location, &desc.digest);
        let rb = self
            .inner
            .http
            .put(&url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, desc.size)
            .body(reqwest::Body::wrap_stream(stream));
        let resp = self.send_once(&[repo_scope(repo, true)], rb).await?;
        self.check(resp, "PUT blob", &format!("blob {}", desc.digest))
            .await?;
        Ok(())
    }

    async fn put_chunked(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
        mut stream: BlobStream,
        mut location: String,
    ) -> Result<()> {
        let chunk_size = self.inner.opts.chunk_size.max(1);
        let mut offset = 0u64;
        let mut buf = BytesMut::with_capacity(chunk_size);
        let mut done = false;
        while !done {
            while buf.len() < chunk_size {
                match stream.try_next().await? {
                    Some(b) => buf.extend_from_slice(&b),
                    None => {
                        done = true;
                        break;
                    }
                }
            }
            let take = buf.len().min(chunk_size);
            let chunk = buf.split_to(take).freeze();
            if chunk.is_empty() {
                continue;
            }
            location = self
                .send_chunk(repo, &location, offset, chunk.clone())
                .await?;
            offset += chunk.len() as u64;
            // Leftover bytes beyond one chunk stay in `buf` for the next round.
            if done && !buf.is_empty() {
                done = false;
            }
        }
        self.finish_upload(repo, desc, &location).await
    }

    /// Sends one chunk starting at `offset`; after a dropped connection, a 5xx or a 416 it
    /// asks the registry how much arrived and sends the rest.
    async fn send_chunk(
        &self,
        repo: &RepoName,
        location: &str,
        offset: u64,
        chunk: Bytes,
    ) -> Result<String> {
        let end = offset + chunk.len() as u64; // exclusive
        let mut location = location.to_owned();
        let mut from = offset;
        let mut attempt = 0;
        loop {
            let body = chunk.slice((from - offset) as usize..);
            let rb = self
                .inner
                .http
                .patch(&location)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_RANGE, format!("{from}-{}", end - 1))
                .header(header::CONTENT_LENGTH, body.len())
                .body(body);
            let failure = match self.send_once(&[repo_scope(repo, true)], rb).await {
                Ok(resp) if resp.status().is_success() => {
                    return Ok(self.location(&resp).unwrap_or(location));
                }
                Ok(resp)
                    if resp.status().is_server_error()
                        || resp.status() == StatusCode::RANGE_NOT_SATISFIABLE
                        || resp.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    self.check(resp, "PATCH blob chunk", "upload").await.err()
                }
                Ok(resp) => {
                    self.check(resp, "PATCH blob chunk", "upload").await?;
                    None
                }
                Err(e) => Some(e),
            };
            let Some(failure) = failure else {
                continue;
            };
            if attempt >= self.inner.opts.max_retries {
                return Err(failure);
            }
            tracing::debug!(error = %failure, from, "chunk failed; asking where the upload stands");
            tokio::time::sleep(self.inner.opts.backoff(attempt)).await;
            attempt += 1;
            // Registries that keep upload state in the Location (Distribution's
            // `_state`) cannot report a half-received chunk; the blob then starts over
            // at the copy level, which is why this error is retryable.
            let st = self
                .upload_status(repo, &location, from)
                .await
                .map_err(|e| ClientError::Network {
                    host: self.inner.host.clone(),
                    detail: format!("upload interrupted ({failure}) and cannot be resumed: {e}"),
                })?;
            location = st.location;
            if st.offset < offset || st.offset > end {
                return Err(ClientError::Registry {
                    host: self.inner.host.clone(),
                    op: "resume upload".into(),
                    status: 416,
                    code: "RANGE_INVALID".into(),
                    message: format!(
                        ": the registry holds {} bytes, expected between {offset} and {end}",
                        st.offset
                    ),
                });
            }
            if st.offset == end {
                return Ok(location);
            }
            from = st.offset;
        }
    }

    async fn finish_upload(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
        location: &str,
    ) -> Result<()> {
        let url = Self::with_digest(location, &desc.digest);
        let resp = self
            .send(&[repo_scope(repo, true)], |c| {
                c.put(&url).header(header::CONTENT_LENGTH, "0")
            })
            .await;
        match resp {
            Ok(r) => {
                let status = r.status();
                match self
                    .check(r, "PUT blob", &format!("blob {}", desc.digest))
                    .await
                {
                    Ok(_) => Ok(()),
                    // A retried PUT whose first attempt committed finds no upload; the
                    // blob is there all the same.
                    Err(e) if status == StatusCode::NOT_FOUND => {
                        match self.head_blob(repo, &desc.digest).await? {
                            Some(_) => Ok(()),
                            None => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Pushes a small blob held in memory (configs, generated files).
    pub async fn put_blob_bytes(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
        data: Bytes,
    ) -> Result<()> {
        if self.head_blob(repo, &desc.digest).await?.is_some() {
            return Ok(());
        }
        let location = self.start_upload(repo).await?;
        let url = Self::with_digest(&location, &desc.digest);
        let resp = self
            .send(&[repo_scope(repo, true)], |c| {
                c.put(&url)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(data.clone())
            })
            .await?;
        self.check(resp, "PUT blob", &format!("blob {}", desc.digest))
            .await?;
        Ok(())
    }

    /// Lists a paginated endpoint, following `Link` headers.
    pub(crate) async fn paginate(
        &self,
        first: String,
        scopes: &[String],
        what: &str,
        field: &str,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 100_000 {
                return Err(ClientError::invalid(what, "pagination does not end"));
            }
            let resp = self.send(scopes, |c| c.get(&url)).await?;
            let resp = self.check(resp, &format!("list {what}"), what).await?;
            next = next_link(resp.headers()).map(|l| self.url(&l));
            let body = resp.bytes().await.map_err(|e| self.network(&e))?;
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| ClientError::invalid(what, e))?;
            if let Some(items) = v.get(field).and_then(|t| t.as_array()) {
                out.extend(items.iter().filter_map(|t| t.as_str().map(str::to_owned)));
            }
        }
        Ok(out)
    }

    /// All tags of a repository, following pagination.
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<String>> {
        self.tags_paged(repo, None).await
    }

    /// All tags, asking for pages of `page_size` (the registry may choose its own).
    pub async fn tags_paged(
        &self,
        repo: &RepoName,
        page_size: Option<usize>,
    ) -> Result<Vec<String>> {
        let mut url = self.url(&format!("/v2/{repo}/tags/list"));
        if let Some(n) = page_size {
            url.push_str(&format!("?n={n}"));
        }
        self.paginate(
            url,
            &[repo_scope(repo, false)],
            &format!("tags of {}/{repo}", self.inner.host),
            "tags",
        )
        .await
    }

    /// All repositories of the registry, following pagination.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let url = self.url("/v2/_catalog");
        self.paginate(
            url,
            &["registry:catalog:*".to_owned()],
            &format!("repositories of {}", self.inner.host),
            "repositories",
        )
        .await
    }

    /// Sends a raw request (for tests and diagnostics).
    pub async fn raw(&self, method: Method, path: &str) -> Result<reqwest::Response> {
        let url = self.url(path);
        self.send(&[], |c| c.request(method.clone(), &url)).await
    }
}

fn ref_suffix(r: &Reference) -> String {
    match r {
        Reference::Tag(t) => format!(":{t}"),
        Reference::Digest(d) => format!("@{d}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges() {
        assert_eq!(parse_upload_range("0-99", 50), Some(100));
        assert_eq!(parse_upload_range("0-0", 0), Some(0));
        assert_eq!(parse_upload_range("0-0", 1), Some(1));
        assert_eq!(parse_upload_range("bytes=0-9", 0), Some(10));
        assert_eq!(parse_upload_range("x", 0), None);
    }

    #[test]
    fn link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            "</v2/a/tags/list?last=b&n=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?last=b&n=2"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn urls_and_schemes() {
        let clients = Clients::new(ClientOptions::default()).unwrap();
        let r = clients.registry("127.0.0.1:5000").unwrap();
        assert_eq!(r.url("/v2/"), "http://127.0.0.1:5000/v2/");
        assert_eq!(r.url("https://x/y"), "https://x/y");
        let hub = clients.registry("docker.io").unwrap();
        assert_eq!(hub.url("/v2/"), "https://registry-1.docker.io/v2/");
        assert_eq!(
            Registry::with_digest("/u?x=1", &Digest::sha256(b"")),
            format!("/u?x=1&digest={}", Digest::sha256(b""))
        );
        assert_eq!(
            ClientOptions::default().backoff(2),
            Duration::from_millis(1000)
        );
    }
}
