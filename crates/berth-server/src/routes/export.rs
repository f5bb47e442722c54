//! `GET /api/v1/export/<name>:<tag>` (or `<name>@<digest>`)
//! `?format=docker-archive|oci-archive&platform=os/arch`: an image as a tarball for
//! air-gapped installs, built on the fly by [`crate::service::Registry::export`].
//!
//! The access rule is exactly a pull's: the caller must be allowed to pull the
//! repository (Basic credentials or a bearer token, so `curl -O -u user:pass` and
//! `curl -O -H "Authorization: Bearer $TOKEN"` work), decided before anything is looked
//! up. The length is known before the first byte, so the answer has a
//! `Content-Length`, honours one `Range` (206 with `Content-Range`; `If-Range` with the
//! `ETag`) and `HEAD`. A download from its first byte is counted as one download of the
//! platform image, through the same `ManifestFetched` events a pull emits (an index,
//! then its child), so the analytics decide it as they decide a pull's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use berth_auth::Action;

use super::blobs::{parse_range, RangeReq};
use super::{client_ip, deny, error_response, set, Query};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::events::Event;
use crate::service::{parse_export_target, ExportFormat, RegistryError};
use crate::AppState;

/// The path prefix of a download.
pub const PREFIX: &str = "/api/v1/export/";

pub async fn get(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let is_head = parts.method == Method::HEAD;
    let host = parts.headers.get(header::HOST).cloned();
    let mut resp = match serve(&state, &parts).await {
        Ok(r) => r,
        Err(e) => error_response(&state, e, host.as_ref(), is_head),
    };
    resp.extensions_mut()
        .insert(crate::metrics::RouteLabel("export"));
    resp
}

async fn serve(state: &AppState, parts: &axum::http::request::Parts) -> ApiResult {
    let target = parts.uri.path().strip_prefix(PREFIX).unwrap_or("");
    let (repo, reference) = parse_export_target(target)?;
    let client = client_ip(&parts.extensions);
    let principal = state.auth.authenticate(&parts.headers, client).await?;
    if !principal.may(repo.as_str(), Action::Pull) {
        return Err(deny(state, &principal, &repo, Action::Pull).into());
    }
    let query = Query::parse(parts.uri.query());
    let format = ExportFormat::parse(query.get("format"))?;
    let platform = query.get("platform").filter(|p| !p.is_empty());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty());
    // The name a docker-archive loads as: what `docker pull` from here would name it.
    let image_name = host.map(|h| format!("{h}/{repo}:{reference}"));
    let export = state
        .registry
        .export(&repo, &reference, format, platform, image_name.as_deref())
        .await?;
    let size = export.plan.size();
    let format_name = match format {
        ExportFormat::DockerArchive => "docker-archive",
        ExportFormat::OciArchive => "oci-archive",
    };
    let etag = format!("\"{}-{format_name}\"", export.root);
    let range_header = parts
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    // `If-Range` with another validator asks for the whole (changed) content.
    let if_range_ok = parts
        .headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == etag);
    let (status, range) = match parse_range(range_header.filter(|_| if_range_ok), size) {
        RangeReq::Whole => (StatusCode::OK, None),
        RangeReq::Part(s, e) => (StatusCode::PARTIAL_CONTENT, Some(s..e + 1)),
        RangeReq::Unsatisfiable => return Err(RegistryError::RangeUnsatisfiable { size }.into()),
    };
    let byte_range = range.clone().unwrap_or(0..size);
    let len = byte_range.end - byte_range.start;
    let body = if parts.method == Method::HEAD {
        Body::empty()
    } else {
        // A resumed download (a range after the first byte) is the same download.
        if byte_range.start == 0 {
            let account = match &principal {
                Principal::Account { name, .. } => name.clone(),
                Principal::Token { claims, .. } => claims.sub.clone(),
                Principal::Open | Principal::Anonymous { .. } => String::new(),
            };
            let user_agent = parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let tag = match &export.reference {
                berth_oci::Reference::Tag(t) => Some(t.clone()),
                berth_oci::Reference::Digest(_) => None,
            };
            for manifest in &export.fetched {
                state
                    .events
                    .emit(Event::ManifestFetched {
                        head: false,
                        repo: repo.clone(),
                        tag: tag.clone(),
                        manifest: Arc::clone(manifest),
                        client,
                        user_agent: user_agent.clone(),
                        account: account.clone(),
                    })
                    .await;
            }
        }
        Body::from_stream(
            state
                .registry
                .export_stream(&repo, &export.plan, byte_range.clone()),
        )
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    set(&mut r, "content-length", len.to_string());
    set(&mut r, "content-type", "application/x-tar");
    set(&mut r, "accept-ranges", "bytes");
    set(&mut r, "etag", &etag);
    set(
        &mut r,
        "content-disposition",
        format!("attachment; filename=\"{}\"", export.file_name(&repo)),
    );
    if let Some(br) = range {
        set(
            &mut r,
            "content-range",
            format!("bytes {}-{}/{}", br.start, br.end - 1, size),
        );
    }
    Ok(r)
}
