//! `/v2/<name>/blobs/uploads/...`: monolithic, chunked and streamed uploads, status,
//! cancellation and cross-repository mounts.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use berth_auth::Action;
use berth_oci::{ErrorCode, RepoName};
use berth_storage::StorageError;

use super::blobs::parse_digest;
use super::{empty, set, Req};
use crate::error::{ApiError, ApiResult};
use crate::registry::{self, AppState};

/// The `Range` header value for an upload of `size` bytes (Distribution writes `0-0`
/// for an empty upload, and clients expect that).
fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn upload_response(status: StatusCode, name: &RepoName, id: &str, size: u64) -> Response {
    let mut r = empty(status);
    set(&mut r, "location", format!("/v2/{name}/blobs/uploads/{id}"));
    set(&mut r, "range", range_value(size));
    set(&mut r, "docker-upload-uuid", id);
    r
}

fn created(name: &RepoName, digest: &berth_oci::Digest) -> Response {
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

/// Where the body must start, checked against `Content-Range` when the client sent one.
async fn append_offset(
    state: &AppState,
    name: &RepoName,
    id: &str,
    headers: &HeaderMap,
) -> ApiResult<u64> {
    let hdr = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let size = state
        .blobs
        .upload_size(id)
        .await?
        .ok_or_else(|| unknown_upload(id))?;
    if let Some(raw) = hdr(header::CONTENT_RANGE) {
        let (start, end) = parse_content_range(raw).ok_or_else(|| {
            range_error(
                name,
                id,
                size,
                format!("Content-Range {raw:?} is not of the form <start>-<end>"),
            )
        })?;
        if start != size {
            return Err(range_error(
                name,
                id,
                size,
                format!("chunk starts at byte {start} but the upload has {size} bytes; resume from byte {size}"),
            ));
        }
        let declared = hdr(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len != end - start + 1) {
            return Err(range_error(
                name,
                id,
                size,
                format!("Content-Range {raw:?} does not match Content-Length"),
            ));
        }
    }
    Ok(size)
}

fn unknown_upload(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} is not known"),
    )
}

/// 416 with the `Location` and `Range` a client needs to resume.
fn range_error(name: &RepoName, id: &str, size: u64, message: String) -> ApiError {
    let loc = format!("/v2/{name}/blobs/uploads/{id}");
    let mut e = ApiError::new(ErrorCode::RangeInvalid, message);
    for (k, v) in [
        ("location", loc),
        ("range", range_value(size)),
        ("docker-upload-uuid", id.to_owned()),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            e = e.header(axum::http::HeaderName::from_static(k), v);
        }
    }
    e
}

fn map_append_error(e: StorageError, name: &RepoName, id: &str) -> ApiError {
    match e {
        StorageError::OffsetMismatch { expected, got } => range_error(
            name,
            id,
            expected,
            format!("chunk starts at byte {got} but the upload has {expected} bytes"),
        ),
        StorageError::UploadUnknown(_) => unknown_upload(id),
        e => e.into(),
    }
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
            None => state
                .meta
                .blob_repositories(&digest, 50)
                .await?
                .iter()
                .filter_map(|r| RepoName::parse(r).ok())
                .collect(),
        };
        for from in sources
            .iter()
            .filter(|f| req.principal.may(f.as_str(), Action::Pull))
        {
            if registry::mount(state, from, name, &digest).await? {
                return Ok(created(name, &digest));
            }
        }
    } else if let Some(raw) = req.query.get("digest") {
        let digest = parse_digest(raw)?;
        registry::put_blob(state, name, &digest, req.body_stream()).await?;
        return Ok(created(name, &digest));
    }
    let id = registry::start_upload(state, name).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

/// `GET`: where an upload stands.
pub async fn status(state: &AppState, name: &RepoName, id: &str) -> ApiResult {
    registry::check_upload(state, name, id).await?;
    let size = state
        .blobs
        .upload_size(id)
        .await?
        .ok_or_else(|| unknown_upload(id))?;
    Ok(upload_response(StatusCode::NO_CONTENT, name, id, size))
}

/// `PATCH`: append a chunk (with `Content-Range`) or stream a body (without).
pub async fn patch(state: &AppState, name: &RepoName, id: &str, req: Req) -> ApiResult {
    registry::check_upload(state, name, id).await?;
    let at = append_offset(state, name, id, &req.headers).await?;
    let size = state
        .blobs
        .upload_append(id, at, req.body_stream())
        .await
        .map_err(|e| map_append_error(e, name, id))?;
    Ok(upload_response(StatusCode::ACCEPTED, name, id, size))
}

/// `PUT ?digest=`: append an optional last chunk, verify and commit.
pub async fn finish(state: &AppState, name: &RepoName, id: &str, req: Req) -> ApiResult {
    registry::check_upload(state, name, id).await?;
    let digest = match req.query.get("digest") {
        Some(raw) => parse_digest(raw)?,
        None => {
            return Err(ApiError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required to complete an upload",
            ))
        }
    };
    let has_body = req.header(header::CONTENT_LENGTH) != Some("0");
    if has_body {
        let at = append_offset(state, name, id, &req.headers).await?;
        state
            .blobs
            .upload_append(id, at, req.body_stream())
            .await
            .map_err(|e| map_append_error(e, name, id))?;
    }
    registry::commit_upload(state, name, id, &digest).await?;
    Ok(created(name, &digest))
}

/// `DELETE`: cancel a session.
pub async fn cancel(state: &AppState, name: &RepoName, id: &str) -> ApiResult {
    registry::check_upload(state, name, id).await?;
    registry::cancel_upload(state, id).await?;
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
        assert_eq!(range_value(0), "0-0");
        assert_eq!(range_value(10), "0-9");
    }
}
