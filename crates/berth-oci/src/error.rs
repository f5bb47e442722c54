//! The one table of OCI Distribution error codes.
//!
//! Each code knows its wire string and the HTTP status the spec (or, where the spec is
//! silent, CNCF Distribution) gives it. The server renders these; the client parses them.

use std::fmt;

/// An error code of the OCI Distribution Spec (plus Docker's `UNAVAILABLE`/`TOOMANYREQUESTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    Unavailable,
}

/// `(code, wire string, HTTP status, message)` in one place.
const TABLE: [(ErrorCode, &str, u16, &str); 16] = [
    (
        ErrorCode::BlobUnknown,
        "BLOB_UNKNOWN",
        404,
        "blob unknown to registry",
    ),
    (
        ErrorCode::BlobUploadInvalid,
        "BLOB_UPLOAD_INVALID",
        400,
        "blob upload invalid",
    ),
    (
        ErrorCode::BlobUploadUnknown,
        "BLOB_UPLOAD_UNKNOWN",
        404,
        "blob upload unknown to registry",
    ),
    (
        ErrorCode::DigestInvalid,
        "DIGEST_INVALID",
        400,
        "provided digest did not match uploaded content",
    ),
    (
        ErrorCode::ManifestBlobUnknown,
        "MANIFEST_BLOB_UNKNOWN",
        400,
        "manifest references a manifest or blob unknown to registry",
    ),
    (
        ErrorCode::ManifestInvalid,
        "MANIFEST_INVALID",
        400,
        "manifest invalid",
    ),
    (
        ErrorCode::ManifestUnknown,
        "MANIFEST_UNKNOWN",
        404,
        "manifest unknown to registry",
    ),
    (
        ErrorCode::NameInvalid,
        "NAME_INVALID",
        400,
        "invalid repository name",
    ),
    (
        ErrorCode::NameUnknown,
        "NAME_UNKNOWN",
        404,
        "repository name not known to registry",
    ),
    (
        ErrorCode::SizeInvalid,
        "SIZE_INVALID",
        400,
        "provided length did not match content length",
    ),
    (
        ErrorCode::Unauthorized,
        "UNAUTHORIZED",
        401,
        "authentication required",
    ),
    (
        ErrorCode::Denied,
        "DENIED",
        403,
        "requested access to the resource is denied",
    ),
    (
        ErrorCode::Unsupported,
        "UNSUPPORTED",
        405,
        "the operation is unsupported",
    ),
    (
        ErrorCode::TooManyRequests,
        "TOOMANYREQUESTS",
        429,
        "too many requests",
    ),
    (
        ErrorCode::RangeInvalid,
        "RANGE_INVALID",
        416,
        "invalid content range",
    ),
    (
        ErrorCode::Unavailable,
        "UNAVAILABLE",
        503,
        "service unavailable",
    ),
];

impl ErrorCode {
    fn row(self) -> &'static (ErrorCode, &'static str, u16, &'static str) {
        // The table is total over the enum; the fallback row is never reached.
        TABLE.iter().find(|r| r.0 == self).unwrap_or(&TABLE[15])
    }

    /// The wire string, e.g. `BLOB_UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        self.row().1
    }

    /// The default HTTP status for this code.
    pub fn status(self) -> u16 {
        self.row().2
    }

    /// The spec's default human-readable message.
    pub fn default_message(self) -> &'static str {
        self.row().3
    }

    /// Parses a wire string (used by the client).
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        TABLE.iter().find(|r| r.1 == s).map(|r| r.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_total_and_round_trips() {
        for (code, wire, status, _) in TABLE {
            assert_eq!(code.as_str(), wire);
            assert_eq!(code.status(), status);
            assert_eq!(ErrorCode::from_wire(wire), Some(code));
        }
        assert_eq!(ErrorCode::from_wire("NOPE"), None);
    }
}
