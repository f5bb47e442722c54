//! The client's one error type, [`ClientError`], and the exit code each kind maps to.
//!
//! Registry error bodies (`{"errors":[{"code":…,"message":…}]}`) are parsed with
//! [`berth_oci::ErrorCode`], so "unknown image", "auth failed" and "digest mismatch" reach
//! the user as such rather than as a bare HTTP status.

use std::path::PathBuf;

use berth_oci::{Digest, ErrorCode};

/// Everything that can go wrong in the client. Every message fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("authentication failed for {host}: {detail}")]
    Auth { host: String, detail: String },
    #[error("{host} denied the request: {detail}")]
    Denied { host: String, detail: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("registry {host} refused {op}: {code}{message}")]
    Registry {
        host: String,
        op: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("network error talking to {host}: {detail}")]
    Network { host: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image data in {what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Results of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: path.into(),
            source,
        }
    }

    /// Invalid content (JSON, layout, archive) found in `what`.
    pub fn invalid(what: impl Into<String>, detail: impl std::fmt::Display) -> ClientError {
        ClientError::Invalid {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// True for errors worth retrying: dropped connections, timeouts, 5xx and 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Network { .. } => true,
            ClientError::Registry { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The process exit code for this error: 2 usage, 3 not found, 4 auth,
    /// 5 digest or size mismatch, 6 network, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) | ClientError::InvalidReference { .. } => 2,
            ClientError::NotFound(_) => 3,
            ClientError::Auth { .. } | ClientError::Denied { .. } => 4,
            ClientError::DigestMismatch { .. } | ClientError::SizeMismatch { .. } => 5,
            ClientError::Network { .. } => 6,
            ClientError::Registry { status, .. } if *status >= 500 => 6,
            _ => 1,
        }
    }
}

/// The `errors` array of an OCI error body.
#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Builds the error for a refused request from its status and body. `what` names the
/// object (an image, a blob) for not-found messages.
pub(crate) fn from_response(
    host: &str,
    op: &str,
    what: &str,
    status: u16,
    body: &[u8],
) -> ClientError {
    let first = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.errors.into_iter().next());
    let (code, message) = match first {
        Some(e) => (e.code, e.message),
        None => (
            String::new(),
            String::from_utf8_lossy(body).trim().to_owned(),
        ),
    };
    let parsed = ErrorCode::from_wire(&code);
    let detail = if message.is_empty() {
        parsed
            .map(|c| c.default_message().to_owned())
            .unwrap_or_default()
    } else {
        message.chars().take(300).collect()
    };
    match (status, parsed) {
        (
            404,
            None
            | Some(ErrorCode::ManifestUnknown | ErrorCode::NameUnknown | ErrorCode::BlobUnknown),
        )
        | (_, Some(ErrorCode::ManifestUnknown | ErrorCode::NameUnknown)) => {
            ClientError::NotFound(if detail.is_empty() {
                format!("{what} on {host}")
            } else {
                format!("{what} on {host} ({detail})")
            })
        }
        (403, _) | (_, Some(ErrorCode::Denied)) => ClientError::Denied {
            host: host.to_owned(),
            detail: if detail.is_empty() {
                format!("{op} was refused with HTTP {status}")
            } else {
                format!("{op}: {detail}")
            },
        },
        (401, _) | (_, Some(ErrorCode::Unauthorized)) => ClientError::Auth {
            host: host.to_owned(),
            detail: if detail.is_empty() {
                format!("{op} was refused with HTTP {status}")
            } else {
                format!("{op}: {detail}")
            },
        },
        _ => ClientError::Registry {
            host: host.to_owned(),
            op: op.to_owned(),
            status,
            code: if code.is_empty() {
                format!("HTTP {status}")
            } else {
                code
            },
            message: if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_oci_error_bodies() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest v9 is not in repository a"}]}"#;
        let e = from_response("h", "GET manifest", "image h/a:v9", 404, body);
        assert!(matches!(e, ClientError::NotFound(_)), "{e}");
        assert_eq!(e.exit_code(), 3);

        let e = from_response(
            "h",
            "PUT blob",
            "blob",
            400,
            br#"{"errors":[{"code":"DIGEST_INVALID"}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "registry h refused PUT blob: DIGEST_INVALID: provided digest did not match uploaded content"
        );
        let e = from_response("h", "GET /v2/", "x", 401, b"");
        assert!(matches!(e, ClientError::Auth { .. }));
        let e = from_response(
            "h",
            "DELETE",
            "x",
            403,
            br#"{"errors":[{"code":"DENIED","message":"release tags cannot be deleted"}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "h denied the request: DELETE: release tags cannot be deleted"
        );
        assert_eq!(e.exit_code(), 4);
        let e = from_response("h", "GET", "x", 503, b"busy");
        assert!(e.is_retryable());
        assert_eq!(e.exit_code(), 6);
    }
}
