//! `/v2/<name>/blobs/<digest>`: fetch (whole or ranged), check, delete.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use berth_oci::RepoName;

use super::{empty, set, Req};
use crate::error::ApiResult;
use crate::service::{parse_digest, BlobContent, RegistryError};
use crate::zerocopy::{PagedBody, MIN_ZERO_COPY};
use crate::AppState;

/// A parsed `Range: bytes=...` request against a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RangeReq {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses a single byte range; anything this server does not understand is ignored and
/// the whole blob is sent, as RFC 9110 allows.
pub(super) fn parse_range(value: Option<&str>, size: u64) -> RangeReq {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeReq::Whole;
    };
    if spec.contains(',') {
        return RangeReq::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // Suffix range: the last `b` bytes.
        let Ok(len) = b.parse::<u64>() else {
            return RangeReq::Whole;
        };
        if len == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        (size.saturating_sub(len), size - 1)
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeReq::Whole;
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                // An end before the start can never be satisfied (RFC 9110 says such a
                // range is invalid; Distribution and the conformance suite answer 416).
                Ok(_) => return RangeReq::Unsatisfiable,
                Err(_) => return RangeReq::Whole,
            }
        };
        (start, end)
    };
    if start >= size {
        RangeReq::Unsatisfiable
    } else {
        RangeReq::Part(start, end)
    }
}

pub async fn get(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    let digest = parse_digest(raw)?;
    let digest_str = digest.to_string();
    // A mirror repository fetches a missing blob from its upstream first. A `GET` of a
    // blob still on its way is answered at once, with the bytes as they arrive; a `HEAD`
    // waits for the commit.
    if req.method == Method::HEAD {
        state.registry.mirror_blob(name, &digest).await?;
    } else if let Some(pull) = state.registry.mirror_blob_pull(name, &digest).await? {
        let size = pull.size();
        let (status, byte_range) = match parse_range(req.header(header::RANGE), size) {
            RangeReq::Whole => (StatusCode::OK, None),
            RangeReq::Part(s, e) => (StatusCode::PARTIAL_CONTENT, Some(s..e + 1)),
            RangeReq::Unsatisfiable => {
                return Err(RegistryError::RangeUnsatisfiable { size }.into())
            }
        };
        let len = byte_range.as_ref().map(|r| r.end - r.start).unwrap_or(size);
        let stream = pull.open(byte_range.clone()).await?;
        return Ok(blob_response(
            status,
            Body::from_stream(stream),
            len,
            &digest_str,
            byte_range,
            size,
        ));
    }
    if req.method == Method::HEAD {
        let size = state.registry.blob_check(name, &digest).await?;
        let mut r = empty(StatusCode::OK);
        set(&mut r, "content-length", size.to_string());
        set(&mut r, "content-type", "application/octet-stream");
        set(&mut r, "docker-content-digest", &digest_str);
        set(&mut r, "accept-ranges", "bytes");
        set(&mut r, "etag", format!("\"{digest_str}\""));
        return Ok(r);
    }
    let size = state.registry.blob_size(name, &digest).await?;
    let (status, byte_range) = match parse_range(req.header(header::RANGE), size) {
        RangeReq::Whole => (StatusCode::OK, None),
        RangeReq::Part(s, e) => (StatusCode::PARTIAL_CONTENT, Some(s..e + 1)),
        RangeReq::Unsatisfiable => return Err(RegistryError::RangeUnsatisfiable { size }.into()),
    };
    let len = byte_range.as_ref().map(|r| r.end - r.start).unwrap_or(size);
    // With `s3_redirect`, the client fetches the bytes from the object store itself (and
    // sends its `Range` there).
    if let Some(url) = state.registry.blob_redirect(name, &digest, len).await? {
        let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
        set(&mut r, "location", url);
        set(&mut r, "docker-content-digest", &digest_str);
        return Ok(r);
    }
    let zero_copy = req.zero_copy.as_ref().filter(|_| len >= MIN_ZERO_COPY);
    // A local file is sent from directly: by placeholders on plain HTTP/1.x, else (TLS,
    // HTTP/2) read in small frames straight from the page cache.
    let content = state
        .registry
        .blob_open(
            name,
            &digest,
            size,
            byte_range.clone(),
            len >= MIN_ZERO_COPY,
        )
        .await?;
    let body = match (content, zero_copy) {
        (BlobContent::Local { file, range }, Some(zc)) => {
            Body::new(zc.body(file.file, range.start, range.end - range.start))
        }
        (BlobContent::Local { file, range }, None) => Body::new(PagedBody::new(
            file.file,
            range.start,
            range.end - range.start,
        )),
        (BlobContent::Stream(stream), _) => Body::from_stream(stream),
    };
    Ok(blob_response(
        status,
        body,
        len,
        &digest_str,
        byte_range,
        size,
    ))
}

fn blob_response(
    status: StatusCode,
    body: Body,
    len: u64,
    digest: &str,
    range: Option<std::ops::Range<u64>>,
    total: u64,
) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    set(&mut r, "content-length", len.to_string());
    set(&mut r, "content-type", "application/octet-stream");
    set(&mut r, "docker-content-digest", digest);
    set(&mut r, "accept-ranges", "bytes");
    set(&mut r, "etag", format!("\"{digest}\""));
    set(&mut r, "cache-control", "max-age=31536000");
    if let Some(br) = range {
        set(
            &mut r,
            "content-range",
            format!("bytes {}-{}/{}", br.start, br.end - 1, total),
        );
    }
    r
}

pub async fn delete(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    let digest = parse_digest(raw)?;
    state
        .registry
        .delete_blob(name, &digest, req.actor())
        .await?;
    let mut r = empty(StatusCode::ACCEPTED);
    set(&mut r, "docker-content-digest", digest.to_string());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeReq::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), RangeReq::Part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), RangeReq::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeReq::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), RangeReq::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), RangeReq::Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), RangeReq::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeReq::Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeReq::Unsatisfiable);
        assert_eq!(
            parse_range(Some("bytes=500-0"), 2048),
            RangeReq::Unsatisfiable
        );
    }
}
