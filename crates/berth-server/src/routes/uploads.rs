//! `/v2/<name>/blobs/uploads/...`: monolithic, chunked and streamed uploads, status,
//! cancellation and cross-repository mounts.

use axum::http::{header, StatusCode};
use axum::response::Response;
use berth_auth::Action;
use berth_oci::{Digest, RepoName};

use super::{empty, set, Req};
use crate::error::{upload_range, ApiResult};
use crate::service::{parse_digest, Chunk};
use crate::AppState;

fn upload_response(status: StatusCode, name: &RepoName, id: &str, size: u64) -> Response {
    let mut r = empty(status);
    set(&mut r, "location", format!("/v2/{name}/blobs/uploads/{id}"));
    set(&mut r, "range", upload_range(size));
    set(&mut r, "docker-upload-uuid", id);
    r
}

fn created(name: &RepoName, digest: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    set(&mut r, "location", format!("/v2/{name}/blobs/{digest}"));
    set(&mut r, "docker-content-digest", digest.to_string());
    r
}

/// Parses `Content-Range: <start>-<end>` (also tolerating `bytes ` and `/<total>`).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .map(|s| s.trim_start_matches([' ', '=']))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b >= a).then_some((a, b))
}

/// The chunk a request declares with `Content-Range`, if it does.
fn chunk(req: &Req) -> Option<Chunk> {
    let raw = req.header(header::CONTENT_RANGE)?;
    Some(Chunk {
        raw: raw.to_owned(),
        range: parse_content_range(raw),
        declared_len: req
            .header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<u64>().ok()),
    })
}

/// `POST`: start a session, upload a whole blob (`?digest=`), or mount (`?mount=&from=`).
pub async fn start(state: &AppState, name: &RepoName, req: Req) -> ApiResult {
    if let Some(raw) = req.query.get("mount") {
        let digest = parse_digest(raw)?;
        // Mount from the named repository, or (automatic content discovery) from any
        // repository holding the blob that the caller may pull. A source the caller
        // may not read, or an invalid name, falls back to an upload session, which
        // reveals nothing about other repositories.
        let sources: Vec<RepoName> = match req.query.get("from") {
            Some(from) => RepoName::parse(from).into_iter().collect(),
            None => state.registry.blob_repositories(&digest, 50).await?,
        };
        for from in sources
            .iter()
            .filter(|f| req.principal.may(f.as_str(), Action::Pull))
        {
            if state.registry.mount(from, name, &digest).await? {
                return Ok(created(name, &digest));
            }
        }
    } else if let Some(raw) = req.query.get("digest") {
        let digest = parse_digest(raw)?;
        // A declared size over the quota is refused before a byte is read.
        if let Some(len) = req
            .header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<u64>().ok())
        {
            state.registry.check_blob_quota(name, &digest, len).await?;
        }
        state
            .registry
            .put_blob(name, &digest, req.body_stream())
            .await?;
        return Ok(created(name, &digest));
    }
    let id = state.registry.start_upload(name).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

/// `GET`: where an upload stands.
pub async fn status(state: &AppState, name: &RepoName, id: &str) -> ApiResult {
    let size = state.registry.upload_status(name, id).await?;
    Ok(upload_response(StatusCode::NO_CONTENT, name, id, size))
}

/// `PATCH`: append a chunk (with `Content-Range`) or stream a body (without).
pub async fn patch(state: &AppState, name: &RepoName, id: &str, req: Req) -> ApiResult {
    let chunk = chunk(&req);
    let size = state
        .registry
        .upload_append(name, id, chunk, req.body_stream())
        .await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, id, size))
}

/// `PUT ?digest=`: append an optional last chunk, verify and commit.
pub async fn finish(state: &AppState, name: &RepoName, id: &str, req: Req) -> ApiResult {
    let digest = req.query.get("digest").map(str::to_owned);
    // A monolithic PUT declares its size: over the quota, it is refused unread.
    if let (Some(len), Some(d)) = (
        req.header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<u64>().ok()),
        digest.as_deref().and_then(|d| parse_digest(d).ok()),
    ) {
        if len > 0 && req.header(header::CONTENT_RANGE).is_none() {
            state.registry.check_blob_quota(name, &d, len).await?;
        }
    }
    let last = if req.header(header::CONTENT_LENGTH) != Some("0") {
        Some((chunk(&req), req.body_stream()))
    } else {
        None
    };
    let digest = state
        .registry
        .upload_finish(name, id, digest.as_deref(), last)
        .await?;
    Ok(created(name, &digest))
}

/// `DELETE`: cancel a session.
pub async fn cancel(state: &AppState, name: &RepoName, id: &str) -> ApiResult {
    state.registry.upload_cancel(name, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-9"), Some((5, 9)));
        assert_eq!(parse_content_range("9-5"), None);
        assert_eq!(parse_content_range("x"), None);
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
        assert_eq!(
            parse_content_range("0-18446744073709551615"),
            Some((0, u64::MAX))
        );
    }
}
