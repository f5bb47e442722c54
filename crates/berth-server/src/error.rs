//! The one error type of the HTTP layer, and the one place domain errors become answers.
//!
//! The service, the endpoint parser and authentication return their own `thiserror`
//! enums ([`RegistryError`], [`EndpointError`], [`AuthError`]); each is converted here,
//! variant by variant, into an [`ApiError`]: a row of the OCI error table
//! ([`ErrorCode`], which fixes the HTTP status), a message safe to show to a client, and
//! the headers a client needs to recover (`Range` to resume an upload, a Bearer
//! challenge). Internal causes are logged, never sent.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::{ErrorCode, NameError};

use crate::auth::{AuthError, Challenge};
use crate::endpoint::EndpointError;
use crate::service::RegistryError;

/// The OCI error code of an error answer, put on the response for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct ErrorLabel(pub &'static str);

/// An error answered with `{"errors":[{"code","message","detail"}]}` and the status of
/// its row in the error table.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: serde_json::Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A `WWW-Authenticate: Bearer` challenge to add; its realm depends on the request's
    /// host, so the router renders it (`routes::error_response`).
    pub challenge: Option<Box<Challenge>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
            challenge: None,
        }
    }

    fn detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = detail;
        self
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    /// An internal failure: logged with its cause, answered without it.
    pub fn internal(cause: &dyn std::error::Error) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            ErrorCode::Internal,
            "internal server error, see the server log",
        )
    }

    /// The HTTP status: always the one of the code's row.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut err = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if !self.detail.is_null() {
            err["detail"] = self.detail;
        }
        let body = serde_json::json!({ "errors": [err] }).to_string();
        let mut resp = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp.extensions_mut().insert(ErrorLabel(self.code.as_str()));
        resp
    }
}

/// Seconds a client is asked to wait (`Retry-After`) when the server is out of file
/// descriptors: long enough for connections to close, short enough not to stall a push.
pub const EXHAUSTED_RETRY_AFTER: &str = "5";

/// The `Range` header value for an upload of `size` bytes (Distribution writes `0-0`
/// for an empty upload, and clients expect that).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        use ErrorCode as C;
        use RegistryError as E;
        let message = e.to_string();
        match e {
            E::Name(n) => n.into(),
            E::Digest(_) | E::DigestMismatch { .. } | E::DigestMissing => {
                ApiError::new(C::DigestInvalid, message)
            }
            E::ManifestDigestMismatch { .. } => ApiError::new(C::DigestInvalid, message),
            E::BlobUnknown { .. } => ApiError::new(C::BlobUnknown, message),
            // The client sees an unknown blob, so that it pushes it again.
            E::BlobMissing { repo, digest } => ApiError::new(
                C::BlobUnknown,
                format!("blob {digest} is not in repository {repo}"),
            ),
            E::UploadUnknown { .. } => ApiError::new(C::BlobUploadUnknown, message),
            E::UploadRange { repo, id, size, .. } => ApiError::new(C::RangeInvalid, message)
                .header("location", &format!("/v2/{repo}/blobs/uploads/{id}"))
                .header("range", &upload_range(size))
                .header("docker-upload-uuid", &id),
            E::BodyFailed(cause) => {
                tracing::debug!(error = %cause, "request body failed");
                ApiError::new(C::BlobUploadInvalid, message)
            }
            E::RangeUnsatisfiable { size } => ApiError::new(C::RangeInvalid, message)
                .header("content-range", &format!("bytes */{size}")),
            E::ManifestUnknown { .. } | E::ManifestNotAcceptable { .. } => {
                ApiError::new(C::ManifestUnknown, message)
            }
            E::ManifestInvalid(_) => ApiError::new(C::ManifestInvalid, message),
            E::ManifestTooLarge(_) => ApiError::new(C::ManifestTooLarge, message),
            E::MissingReferences(d) => {
                let list: Vec<String> = d.iter().map(|d| d.to_string()).collect();
                ApiError::new(C::ManifestBlobUnknown, message)
                    .detail(serde_json::json!({ "digests": list }))
            }
            E::BlobInUse(_) => ApiError::new(C::BlobInUse, message),
            E::ManifestInUse(_) => ApiError::new(C::ManifestInUse, message),
            E::TagRefused(_) => ApiError::new(C::TagConflict, message),
            E::ForceDenied(_) => ApiError::new(C::Denied, message),
            E::QuotaExceeded {
                used,
                limit,
                attempted,
                ..
            } => ApiError::new(C::Denied, message).detail(
                serde_json::json!({ "used": used, "limit": limit, "attempted": attempted }),
            ),
            E::SignatureRequired { digest, keys, .. } => ApiError::new(C::Denied, message)
                .detail(serde_json::json!({ "digest": digest.to_string(), "keys": keys })),
            E::NameUnknown(_) => ApiError::new(C::NameUnknown, message),
            E::BlobBusy(_) => ApiError::new(C::Unavailable, message).header("retry-after", "1"),
            E::ParameterInvalid(_) => ApiError::new(C::ParameterInvalid, message),
            E::ExportNeedsPlatform { available, .. } => ApiError::new(C::ParameterInvalid, message)
                .detail(serde_json::json!({ "platforms": available })),
            E::ExportPlatformUnknown { available, .. } => {
                ApiError::new(C::ManifestUnknown, message)
                    .detail(serde_json::json!({ "platforms": available }))
            }
            E::ExportNotImage { .. } => ApiError::new(C::ParameterInvalid, message),
            E::MirrorReadOnly { .. } => ApiError::new(C::Denied, message),
            E::MirrorUpstream(_) => ApiError::new(C::Unavailable, message),
            E::StorageFull(cause) => {
                tracing::error!(error = %cause, "storage is full");
                ApiError::new(
                    C::InsufficientStorage,
                    "the registry's storage is full; delete blobs or manifests, or ask its operator to free space",
                )
            }
            E::Exhausted(cause) => {
                tracing::error!(error = %cause, "out of file descriptors");
                ApiError::new(
                    C::Unavailable,
                    "the registry is out of file descriptors; retry shortly",
                )
                .header("retry-after", EXHAUSTED_RETRY_AFTER)
            }
            E::MetaUnavailable(cause) => meta_unavailable(&cause),
            E::Storage(e) => ApiError::internal(&e),
            E::Meta(e) => ApiError::internal(&e),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> ApiError {
        match e {
            NameError::InvalidTag(_) => ApiError::new(ErrorCode::ManifestInvalid, e.to_string()),
            _ => ApiError::new(ErrorCode::NameInvalid, e.to_string()),
        }
    }
}

impl From<EndpointError> for ApiError {
    fn from(e: EndpointError) -> ApiError {
        match e {
            EndpointError::Name(n) => n.into(),
            EndpointError::EmptyName => ApiError::new(ErrorCode::NameInvalid, e.to_string()),
            EndpointError::Unknown(_) | EndpointError::NoRoute(_) => {
                ApiError::new(ErrorCode::EndpointUnknown, e.to_string())
            }
            EndpointError::Method { .. } => ApiError::new(ErrorCode::Unsupported, e.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let message = e.to_string();
        match e {
            AuthError::Challenge { challenge, .. } => {
                let mut api = ApiError::new(ErrorCode::Unauthorized, message);
                api.challenge = Some(Box::new(challenge));
                api
            }
            AuthError::Denied(_) => ApiError::new(ErrorCode::Denied, message),
            AuthError::Unauthenticated(_) => ApiError::new(ErrorCode::Unauthorized, message),
            AuthError::RateLimited => {
                ApiError::new(ErrorCode::TooManyRequests, message).header("retry-after", "300")
            }
            AuthError::BadRequest(_) => ApiError::new(ErrorCode::ParameterInvalid, message),
            AuthError::Internal(e @ berth_meta::MetaError::Unavailable { .. }) => {
                meta_unavailable(&e)
            }
            AuthError::Internal(e) => ApiError::internal(&e),
        }
    }
}

impl From<crate::accounts::AdminError> for ApiError {
    fn from(e: crate::accounts::AdminError) -> ApiError {
        use crate::accounts::AdminError as E;
        let message = e.to_string();
        match e {
            E::Meta(berth_meta::MetaError::Conflict(_)) => {
                ApiError::new(ErrorCode::ParameterInvalid, message)
            }
            E::Meta(m) => m.into(),
            E::Grant(_) | E::BadName(_) | E::Secret(berth_auth::secret::SecretError::TooShort) => {
                ApiError::new(ErrorCode::ParameterInvalid, message)
            }
            // The OCI table has no generic "not found"; NAME_UNKNOWN (404) is the nearest,
            // and the message names the account or pattern.
            E::NoAccount(_) | E::NotFound(_) => ApiError::new(ErrorCode::NameUnknown, message),
            E::Backend(_) | E::Secret(_) | E::Marker { .. } => ApiError::internal(&e),
        }
    }
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(e: crate::webhooks::WebhookError) -> ApiError {
        use crate::webhooks::WebhookError as E;
        match e {
            E::Unknown(_) => ApiError::new(ErrorCode::EndpointUnknown, e.to_string()),
            E::Meta(m) => m.into(),
        }
    }
}

impl From<crate::scanning::ScanError> for ApiError {
    fn from(e: crate::scanning::ScanError) -> ApiError {
        use crate::scanning::ScanError as E;
        match e {
            E::Meta(m) => m.into(),
            // No index at scan_db yet: the operator's to import, so said in words.
            E::Db(berth_scan::DbError::Missing { .. }) => ApiError::new(
                ErrorCode::Unavailable,
                "no vulnerability database at scan_db: import one with `berth db update --db DIR`",
            ),
            E::Gone => ApiError::new(ErrorCode::ManifestUnknown, e.to_string()),
            E::Db(_) | E::Manifest(_) | E::Layer { .. } | E::Join(_) => ApiError::internal(&e),
        }
    }
}

impl From<crate::replication::ReplicationError> for ApiError {
    fn from(e: crate::replication::ReplicationError) -> ApiError {
        use crate::replication::ReplicationError as E;
        match e {
            E::Unknown(_) => ApiError::new(ErrorCode::EndpointUnknown, e.to_string()),
            E::Meta(m) => m.into(),
        }
    }
}

/// The answer while the metadata database cannot be reached: 503 `UNAVAILABLE` with a
/// short `Retry-After`, whichever layer noticed (the registry service or access control).
fn meta_unavailable(cause: &berth_meta::MetaError) -> ApiError {
    tracing::error!(error = %cause, "metadata database unavailable");
    ApiError::new(
        ErrorCode::Unavailable,
        "the registry's database is unavailable; retry shortly",
    )
    .header("retry-after", EXHAUSTED_RETRY_AFTER)
}

impl From<berth_meta::MetaError> for ApiError {
    fn from(e: berth_meta::MetaError) -> ApiError {
        RegistryError::from(e).into()
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::{Digest, RepoName};

    #[test]
    fn statuses_come_from_the_table() {
        let repo = RepoName::parse("a/b").unwrap();
        let e: ApiError = RegistryError::TagRefused("no".into()).into();
        assert_eq!((e.status().as_u16(), e.code.as_str()), (409, "DENIED"));
        let e: ApiError = RegistryError::ManifestTooLarge(4).into();
        assert_eq!(
            (e.status().as_u16(), e.code.as_str()),
            (413, "MANIFEST_INVALID")
        );
        let e: ApiError = RegistryError::UploadRange {
            repo: repo.clone(),
            id: "u1".into(),
            size: 10,
            message: "off".into(),
        }
        .into();
        assert_eq!(e.status().as_u16(), 416);
        assert!(e.headers.iter().any(|(k, v)| k == "range" && v == "0-9"));
        let e: ApiError = RegistryError::BlobMissing {
            repo,
            digest: Digest::sha256(b"x"),
        }
        .into();
        assert_eq!(
            (e.status().as_u16(), e.code.as_str()),
            (404, "BLOB_UNKNOWN")
        );
        let e: ApiError = RegistryError::Meta(berth_meta::MetaError::Corrupt("x".into())).into();
        assert_eq!(e.status().as_u16(), 500);
        assert!(!e.message.contains('x'));
    }

    fn os_error(errno: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn resource_errors_are_507_and_503_with_retry_after_and_internal_stays_500() {
        use berth_storage::StorageError;
        // ENOSPC, EDQUOT, EMFILE, ENFILE, EIO on Linux.
        for errno in [28, 122] {
            let e: ApiError =
                RegistryError::from(StorageError::from_io("writing an upload", os_error(errno)))
                    .into();
            assert_eq!((e.status().as_u16(), e.code.as_str()), (507, "UNAVAILABLE"));
            assert!(!e.message.contains("writing an upload"), "{}", e.message);
            assert!(e.headers.is_empty());
        }
        let e: ApiError = RegistryError::from(berth_meta::MetaError::Full {
            context: "committing",
            message: "database or disk is full".into(),
        })
        .into();
        assert_eq!(e.status().as_u16(), 507);
        // A database that cannot be reached is a passing 503, from either layer, and
        // its cause (which may name the host) is not shown.
        let down = || berth_meta::MetaError::Unavailable {
            context: "connecting to the database",
            message: "connection refused to db.internal:5432".into(),
        };
        for e in [
            ApiError::from(RegistryError::from(down())),
            ApiError::from(AuthError::Internal(down())),
        ] {
            assert_eq!((e.status().as_u16(), e.code.as_str()), (503, "UNAVAILABLE"));
            assert!(!e.message.contains("db.internal"), "{}", e.message);
            assert!(e
                .headers
                .iter()
                .any(|(k, v)| k == "retry-after" && v == EXHAUSTED_RETRY_AFTER));
        }
        for errno in [24, 23] {
            let e: ApiError =
                RegistryError::from(StorageError::from_io("opening a blob", os_error(errno)))
                    .into();
            assert_eq!((e.status().as_u16(), e.code.as_str()), (503, "UNAVAILABLE"));
            assert!(e
                .headers
                .iter()
                .any(|(k, v)| k == "retry-after" && v == EXHAUSTED_RETRY_AFTER));
        }
        let e: ApiError = RegistryError::from(StorageError::from_io("reading", os_error(5))).into();
        assert_eq!((e.status().as_u16(), e.code.as_str()), (500, "UNAVAILABLE"));
    }

    #[tokio::test]
    async fn a_full_disk_is_answered_with_a_spec_error_body() {
        let e: ApiError = RegistryError::from(berth_storage::StorageError::from_io(
            "writing",
            os_error(28),
        ))
        .into();
        let resp = e.into_response();
        assert_eq!(resp.status().as_u16(), 507);
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "application/json"
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAVAILABLE");
        assert!(v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("storage is full"));
    }
}
