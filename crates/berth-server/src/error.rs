//! The one error type of the HTTP layer.
//!
//! Lower layers return their own `thiserror` enums; they are converted here, in one
//! place, into an [`ApiError`] that carries an OCI [`ErrorCode`], a message safe to show
//! to a client, and the status. Internal causes are logged, never sent.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_meta::MetaError;
use berth_oci::{DigestError, ErrorCode, NameError};
use berth_storage::StorageError;

/// An error answered with `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub detail: serde_json::Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: StatusCode::from_u16(code.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
        }
    }

    pub fn status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = detail;
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// An internal failure: logged with its cause, answered without it.
    pub fn internal(cause: &dyn std::error::Error) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            ErrorCode::Unavailable,
            "internal server error, see the server log",
        )
        .status(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if !self.detail.is_null() {
            err["detail"] = self.detail;
        }
        let body = serde_json::json!({ "errors": [err] }).to_string();
        let mut resp = (
            self.status,
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
        resp.extensions_mut()
            .insert(crate::metrics::ErrorLabel(self.code.as_str()));
        resp
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> ApiError {
        match e {
            MetaError::MissingReferences(d) => {
                let list: Vec<String> = d.iter().map(|d| d.to_string()).collect();
                ApiError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!("manifest references content the repository does not have: {}", list.join(", ")),
                )
                .detail(serde_json::json!({ "digests": list }))
            }
            MetaError::BlobInUse(m) => ApiError::new(
                ErrorCode::Unsupported,
                format!(
                    "blob is still referenced by manifest(s) {} of this repository; delete them first",
                    m.join(", ")
                ),
            ),
            MetaError::TagRefused(message) => ApiError::new(ErrorCode::Denied, message).status(StatusCode::CONFLICT),
            e => ApiError::internal(&e),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::BlobUnknown(d) => ApiError::new(
                ErrorCode::BlobUnknown,
                format!("blob {d} is not in the store"),
            ),
            StorageError::UploadUnknown(_) => {
                ApiError::new(ErrorCode::BlobUploadUnknown, "upload session is not known")
            }
            StorageError::DigestMismatch { expected, actual } => ApiError::new(
                ErrorCode::DigestInvalid,
                format!("the uploaded content has digest {actual}, not {expected}"),
            ),
            StorageError::OffsetMismatch { expected, got } => ApiError::new(
                ErrorCode::RangeInvalid,
                format!("chunk starts at byte {got} but the upload has {expected} bytes"),
            ),
            StorageError::Body(e) => {
                tracing::debug!(error = %e, "request body failed");
                ApiError::new(
                    ErrorCode::BlobUploadInvalid,
                    "the request body ended with an error",
                )
            }
            e @ StorageError::Io { .. } => ApiError::internal(&e),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> ApiError {
        match e {
            NameError::InvalidTag(_) => ApiError::new(ErrorCode::ManifestInvalid, e.to_string())
                .status(StatusCode::BAD_REQUEST),
            _ => ApiError::new(ErrorCode::NameInvalid, e.to_string()),
        }
    }
}

impl From<DigestError> for ApiError {
    fn from(e: DigestError) -> ApiError {
        ApiError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;
