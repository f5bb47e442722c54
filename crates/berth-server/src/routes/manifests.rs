//! `/v2/<name>/manifests/<reference>`: push, fetch, check and delete manifests.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use berth_auth::Action;
use berth_oci::{Reference, RepoName};

use super::{empty, set, Req};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::events::Event;
use crate::service::{accepted, Fetch, ManifestPush, RegistryError};
use crate::AppState;

/// The `Warning` of a mirrored tag served while its upstream could not confirm it
/// (RFC 7234's code 110).
const STALE_WARNING: &str = "110 - \"Response is stale\"";

pub async fn get(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    let accept = accepted(
        req.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    // Checking an unsigned manifest by digest is how a signer learns what it signs, so
    // the trust policy lets those who may push do it.
    let fetch = if req.method == Method::HEAD {
        Fetch::Check {
            may_push: req.principal.may(name.as_str(), Action::Push),
        }
    } else {
        Fetch::Content
    };
    // A mirror repository first makes sure its copy is here and current.
    let stale = state.registry.mirror_manifest(name, raw).await?;
    let (reference, m) = state
        .registry
        .fetch_manifest(name, raw, &accept, fetch)
        .await?;
    let len = m.content.len();
    let (media_type, digest) = (m.media_type.clone(), m.digest.to_string());
    let tag = match reference {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    };
    // The analytics tell downloads (GET) from inspections (HEAD, or an index alone) and
    // attribute both to the account.
    let account = match &req.principal {
        Principal::Account { name, .. } => name.clone(),
        Principal::Token { claims, .. } => claims.sub.clone(),
        Principal::Open | Principal::Anonymous { .. } => String::new(),
    };
    let user_agent = req.header(header::USER_AGENT).unwrap_or("").to_owned();
    let head = req.method == Method::HEAD;
    let manifest = Arc::new(m);
    let mut r = if head {
        empty(StatusCode::OK)
    } else {
        Response::new(Body::from(manifest.content.clone()))
    };
    state
        .events
        .emit(Event::ManifestFetched {
            head,
            repo: name.clone(),
            tag,
            manifest,
            client: req.client,
            user_agent,
            account,
        })
        .await;
    set(&mut r, "content-length", len.to_string());
    set(&mut r, "content-type", &media_type);
    set(&mut r, "etag", format!("\"{digest}\""));
    set(&mut r, "docker-content-digest", digest);
    if stale {
        set(&mut r, "warning", STALE_WARNING);
        set(&mut r, "x-berth-mirror-stale", "true");
    }
    Ok(r)
}

pub async fn put(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    let max = state.registry.max_manifest_bytes();
    if req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > max as u64)
    {
        return Err(RegistryError::ManifestTooLarge(max).into());
    }
    let tags = req.query.all("tag").map(str::to_owned).collect();
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_owned);
    let (force, actor) = (req.wants_force(), req.actor());
    let may_force = req.principal.may(name.as_str(), Action::Admin);
    let body = axum::body::to_bytes(req.body, max)
        .await
        .map_err(|_| RegistryError::ManifestTooLarge(max))?;
    let push = ManifestPush {
        reference: raw.to_owned(),
        tags,
        content_type,
        body,
        force,
        may_force,
        actor,
    };
    let pushed = state.registry.push_manifest(name, push).await?;
    let mut r = empty(StatusCode::CREATED);
    set(
        &mut r,
        "location",
        format!("/v2/{name}/manifests/{}", pushed.digest),
    );
    set(&mut r, "docker-content-digest", pushed.digest.to_string());
    if let Some(s) = &pushed.subject {
        set(&mut r, "oci-subject", s.to_string());
    }
    for t in &pushed.tags {
        if let Ok(v) = HeaderValue::from_str(t.as_str()) {
            r.headers_mut().append("oci-tag", v);
        }
    }
    // Tags the publish gate holds: stored, invisible until the manifest is signed.
    for t in &pushed.waiting {
        if let Ok(v) = HeaderValue::from_str(t.as_str()) {
            r.headers_mut().append("berth-tag-waiting-for-signature", v);
        }
    }
    Ok(r)
}

pub async fn delete(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    let may_force = req.principal.may(name.as_str(), Action::Admin);
    state
        .registry
        .delete_manifest(name, raw, req.wants_force(), may_force, req.actor())
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}
