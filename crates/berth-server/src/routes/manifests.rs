//! `/v2/<name>/manifests/<reference>`: push, fetch, check and delete manifests.
//!
//! The stored bytes are the pushed bytes; the digest is computed over them and is the
//! manifest's identity. Parsing only extracts what the registry must check or index.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use berth_meta::{NewManifest, StoredManifest};
use berth_oci::manifest::essence;
use berth_oci::media_types as mt;
use berth_oci::reference::ReferenceError;
use berth_oci::{Digest, ErrorCode, ParsedManifest, Reference, RepoName, Tag};

use super::{empty, set, Req};
use crate::error::{ApiError, ApiResult};
use crate::registry::AppState;

fn parse_reference(raw: &str) -> ApiResult<Reference> {
    Reference::parse(raw).map_err(|e| match e {
        ReferenceError::Digest(d) => d.into(),
        ReferenceError::Tag(t) => ApiError::new(ErrorCode::ManifestInvalid, t.to_string()),
    })
}

fn unknown(name: &RepoName, reference: &Reference) -> ApiError {
    ApiError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not in repository {name}"),
    )
}

async fn lookup(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
) -> ApiResult<Option<StoredManifest>> {
    Ok(match reference {
        Reference::Tag(t) => state.meta.manifest_by_tag(name, t).await?,
        Reference::Digest(d) => state.meta.manifest_by_digest(name, d).await?,
    })
}

/// The media types an `Accept` header lists (empty when absent).
fn accepted(req: &Req) -> Vec<String> {
    req.headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| essence(t).to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn accepts(accept: &[String], media_type: &str) -> bool {
    accept.is_empty()
        || accept.iter().any(|a| {
            a == media_type || a == "*/*" || a == "application/*" || a == "application/json"
        })
}

/// For a client that cannot read an index, the `linux/amd64` image of it, as Distribution
/// does for old Docker clients.
async fn single_platform_fallback(
    state: &AppState,
    name: &RepoName,
    index: &StoredManifest,
    accept: &[String],
) -> ApiResult<Option<StoredManifest>> {
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
        Some(d) => Ok(state.meta.manifest_by_digest(name, &d.digest).await?),
        None => Ok(None),
    }
}

pub async fn get(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    // A reference that cannot name anything is simply not there (as in Distribution,
    // whose routes do not match it): 404, not 400.
    let reference = parse_reference(raw).map_err(|e| match e.code {
        ErrorCode::ManifestInvalid => ApiError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {raw:?} is not in repository {name}: {}",
                e.message
            ),
        ),
        _ => e,
    })?;
    let mut m = lookup(state, name, &reference)
        .await?
        .ok_or_else(|| unknown(name, &reference))?;
    let accept = accepted(&req);
    if !accepts(&accept, &m.media_type) {
        let fallback = if mt::is_index(&m.media_type) {
            single_platform_fallback(state, name, &m, &accept).await?
        } else {
            None
        };
        m = fallback.ok_or_else(|| {
            ApiError::new(
                ErrorCode::ManifestUnknown,
                format!(
                    "manifest {reference} is a {}, which the request's Accept header does not allow",
                    m.media_type
                ),
            )
        })?;
    }
    let len = m.content.len();
    let mut r = if req.method == Method::HEAD {
        empty(StatusCode::OK)
    } else {
        state.metrics.pull(name.as_str());
        let ua = req.header(header::USER_AGENT).unwrap_or("");
        let tag = match &reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        state
            .analytics
            .manifest_served(name, req.client, ua, tag, &m);
        state.analytics.bytes_served(name, len as u64);
        Response::new(Body::from(m.content))
    };
    set(&mut r, "content-length", len.to_string());
    set(&mut r, "content-type", &m.media_type);
    let d = m.digest.to_string();
    set(&mut r, "etag", format!("\"{d}\""));
    set(&mut r, "docker-content-digest", d);
    Ok(r)
}

pub async fn put(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    let reference = parse_reference(raw)?;
    let max = state.max_manifest_bytes;
    let too_big = || {
        ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("manifest is larger than the limit of {max} bytes"),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > max as u64)
    {
        return Err(too_big());
    }
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_owned);
    let mut tags: Vec<Tag> = Vec::new();
    for t in req.query.all("tag") {
        let t =
            Tag::parse(t).map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let (principal, client) = (req.principal.clone(), req.client);
    let query_force = wants_force(&req);
    let body = axum::body::to_bytes(req.body, max)
        .await
        .map_err(|_| too_big())?;

    let digest = match &reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &body);
            if &actual != d {
                return Err(ApiError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest digest is {actual}, not {d} as in the URL"),
                ));
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
    let parsed = ParsedManifest::parse(&body, content_type.as_deref())
        .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
    let annotations_json = if parsed.annotations.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&parsed.annotations).unwrap_or_default()
    };
    let new = NewManifest {
        digest: digest.clone(),
        media_type: parsed.kind.media_type().to_owned(),
        content: body,
        blobs: parsed.required_blobs().map(|d| d.digest.clone()).collect(),
        children: parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        artifact_type: parsed.effective_artifact_type().map(str::to_owned),
        annotations_json,
        version: parsed
            .annotations
            .get("org.opencontainers.image.version")
            .cloned(),
        platform: platform_of(state, name, &digest, &parsed).await,
    };
    let guard = guard_for(state, name, &principal, &query_force)?;
    state
        .meta
        .manifest_put(name, &new, &tags, Some(guard))
        .await?;
    state.metrics.manifest_pushed();
    if query_force {
        state
            .auth
            .audit(
                principal.name(),
                "tag_force",
                name.as_str(),
                &digest.to_string(),
                client,
            )
            .await;
    }
    let tag_list: Vec<&str> = tags.iter().map(Tag::as_str).collect();
    state
        .auth
        .audit(
            principal.name(),
            "push",
            name.as_str(),
            &format!("{digest} tags={}", tag_list.join(",")),
            client,
        )
        .await;

    let mut r = empty(StatusCode::CREATED);
    set(&mut r, "location", format!("/v2/{name}/manifests/{digest}"));
    set(&mut r, "docker-content-digest", digest.to_string());
    if let Some(s) = &parsed.subject {
        set(&mut r, "oci-subject", s.digest.to_string());
    }
    for t in &tags {
        if let Ok(v) = HeaderValue::from_str(t.as_str()) {
            r.headers_mut().append("oci-tag", v);
        }
    }
    Ok(r)
}

/// The platform of a single-platform image: the stored one when the manifest is already
/// in the repository (pushing it again under another tag is common, and the store keeps
/// the first row anyway), else read from its config.
async fn platform_of(
    state: &AppState,
    name: &RepoName,
    digest: &Digest,
    parsed: &ParsedManifest,
) -> Option<String> {
    parsed.config.as_ref()?;
    if let Ok(Some(stored)) = state.meta.manifest_by_digest(name, digest).await {
        return stored.platform;
    }
    config_platform(state, parsed).await
}

/// The platform of a single-platform image, read once from its config at push time.
async fn config_platform(state: &AppState, parsed: &ParsedManifest) -> Option<String> {
    let config = parsed.config.as_ref()?;
    if config.media_type != mt::OCI_CONFIG && config.media_type != mt::DOCKER_CONFIG
        || config.size > 1 << 20
    {
        return None;
    }
    let body = state.blobs.get(&config.digest, None).await.ok()?;
    let mut bytes = Vec::with_capacity(config.size as usize);
    let mut stream = body.stream;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        bytes.extend_from_slice(&chunk.ok()?);
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let (os, arch) = (v["os"].as_str()?, v["architecture"].as_str()?);
    Some(match v["variant"].as_str() {
        Some(var) => format!("{os}/{arch}/{var}"),
        None => format!("{os}/{arch}"),
    })
}

/// `?force=true`: skip the tag policy (administrators only).
fn wants_force(req: &Req) -> bool {
    matches!(req.query.get("force"), Some("true" | "1"))
}

fn guard_for(
    state: &AppState,
    name: &RepoName,
    principal: &crate::auth::Principal,
    force: &bool,
) -> ApiResult<std::sync::Arc<dyn berth_meta::TagGuard>> {
    if *force && !principal.may(name.as_str(), berth_auth::Action::Admin) {
        return Err(ApiError::new(
            ErrorCode::Denied,
            format!("only administrators of {name} may force a tag change"),
        ));
    }
    Ok(std::sync::Arc::new(
        state.policy.guard(name.as_str(), *force),
    ))
}

pub async fn delete(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    let reference = parse_reference(raw)?;
    let force = wants_force(&req);
    let guard = Some(guard_for(state, name, &req.principal, &force)?);
    let deleted = match &reference {
        Reference::Tag(t) => state.meta.tag_delete(name, t, guard).await?,
        Reference::Digest(d) => state.meta.manifest_delete(name, d, guard).await?,
    };
    if !deleted {
        return Err(unknown(name, &reference));
    }
    let what = match reference {
        Reference::Tag(_) => "tag_delete",
        Reference::Digest(_) => "manifest_delete",
    };
    state
        .auth
        .audit(
            req.principal.name(),
            what,
            name.as_str(),
            &reference.to_string(),
            req.client,
        )
        .await;
    Ok(empty(StatusCode::ACCEPTED))
}
