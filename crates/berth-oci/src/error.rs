//! The one table of OCI Distribution error codes.
//!
//! Each code knows its wire string and the HTTP status the spec (or, where the spec is
//! silent, CNCF Distribution) gives it. The server renders these; the client parses them.

use std::fmt;

/// A row of the error table: an OCI Distribution error code (plus Docker's
/// `UNAVAILABLE`/`TOOMANYREQUESTS`) answered with one HTTP status.
///
/// Several rows may share a wire string when the same code is answered with different
/// statuses (`MANIFEST_INVALID` is 400, or 413 for a manifest over the size limit): every
/// status a client can see is a row here, so no caller overrides a status. The client
/// parses a wire string into the first row that has it.
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
    /// `MANIFEST_INVALID` with 413: the manifest is larger than the server accepts.
    ManifestTooLarge,
    /// `DENIED` with 409: the tag policy refuses to move or delete a tag.
    TagConflict,
    /// `UNSUPPORTED` with 404: no registry endpoint at the path.
    EndpointUnknown,
    /// `UNSUPPORTED` with 400: a query parameter is malformed (e.g. `n=abc`).
    ParameterInvalid,
    /// `UNSUPPORTED` with 405: a blob that a manifest still references cannot be deleted.
    BlobInUse,
    /// `UNAVAILABLE` with 500: an internal failure, logged by the server.
    Internal,
    /// `DENIED` with 409: the manifest is a child of an index that still exists.
    ManifestInUse,
    /// `UNAVAILABLE` with 507: the registry's disk is full (or over quota), so nothing
    /// more can be stored until space is freed; deletions still work. The spec has no
    /// code for it; `UNAVAILABLE` says what a client needs (the service cannot do this
    /// now, the request was fine and may be retried later), where `DENIED` would send
    /// users looking for a permission problem.
    InsufficientStorage,
}

/// Every row, for parsing wire strings and for tests.
pub const ALL: [ErrorCode; 24] = [
    ErrorCode::BlobUnknown,
    ErrorCode::BlobUploadInvalid,
    ErrorCode::BlobUploadUnknown,
    ErrorCode::DigestInvalid,
    ErrorCode::ManifestBlobUnknown,
    ErrorCode::ManifestInvalid,
    ErrorCode::ManifestUnknown,
    ErrorCode::NameInvalid,
    ErrorCode::NameUnknown,
    ErrorCode::SizeInvalid,
    ErrorCode::Unauthorized,
    ErrorCode::Denied,
    ErrorCode::Unsupported,
    ErrorCode::TooManyRequests,
    ErrorCode::RangeInvalid,
    ErrorCode::Unavailable,
    ErrorCode::ManifestTooLarge,
    ErrorCode::TagConflict,
    ErrorCode::EndpointUnknown,
    ErrorCode::ParameterInvalid,
    ErrorCode::BlobInUse,
    ErrorCode::Internal,
    ErrorCode::ManifestInUse,
    ErrorCode::InsufficientStorage,
];

impl ErrorCode {
    /// The row: `(wire string, HTTP status, the spec's default message)`. A `match`, so
    /// the compiler checks that every code has exactly one row.
    const fn row(self) -> (&'static str, u16, &'static str) {
        use ErrorCode as E;
        match self {
            E::BlobUnknown => ("BLOB_UNKNOWN", 404, "blob unknown to registry"),
            E::BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid"),
            E::BlobUploadUnknown => (
                "BLOB_UPLOAD_UNKNOWN",
                404,
                "blob upload unknown to registry",
            ),
            E::DigestInvalid => (
                "DIGEST_INVALID",
                400,
                "provided digest did not match uploaded content",
            ),
            E::ManifestBlobUnknown => (
                "MANIFEST_BLOB_UNKNOWN",
                400,
                "manifest references a manifest or blob unknown to registry",
            ),
            E::ManifestInvalid => ("MANIFEST_INVALID", 400, "manifest invalid"),
            E::ManifestUnknown => ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry"),
            E::NameInvalid => ("NAME_INVALID", 400, "invalid repository name"),
            E::NameUnknown => ("NAME_UNKNOWN", 404, "repository name not known to registry"),
            E::SizeInvalid => (
                "SIZE_INVALID",
                400,
                "provided length did not match content length",
            ),
            E::Unauthorized => ("UNAUTHORIZED", 401, "authentication required"),
            E::Denied => ("DENIED", 403, "requested access to the resource is denied"),
            E::Unsupported => ("UNSUPPORTED", 405, "the operation is unsupported"),
            E::TooManyRequests => ("TOOMANYREQUESTS", 429, "too many requests"),
            E::RangeInvalid => ("RANGE_INVALID", 416, "invalid content range"),
            E::Unavailable => ("UNAVAILABLE", 503, "service unavailable"),
            E::ManifestTooLarge => ("MANIFEST_INVALID", 413, "manifest too large"),
            E::TagConflict => ("DENIED", 409, "the tag policy refuses this change"),
            E::EndpointUnknown => ("UNSUPPORTED", 404, "no such endpoint"),
            E::ParameterInvalid => ("UNSUPPORTED", 400, "invalid query parameter"),
            E::BlobInUse => ("UNSUPPORTED", 405, "blob is referenced by a manifest"),
            E::Internal => ("UNAVAILABLE", 500, "internal server error"),
            E::ManifestInUse => ("DENIED", 409, "manifest is referenced by an index"),
            E::InsufficientStorage => ("UNAVAILABLE", 507, "insufficient storage"),
        }
    }

    /// The wire string, e.g. `BLOB_UNKNOWN`.
    pub const fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status this row is answered with.
    pub const fn status(self) -> u16 {
        self.row().1
    }

    /// The spec's default human-readable message.
    pub const fn default_message(self) -> &'static str {
        self.row().2
    }

    /// Parses a wire string (used by the client) into the first row that has it.
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        ALL.into_iter().find(|c| c.as_str() == s)
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
    fn rows_round_trip_to_their_first_wire_row() {
        for code in ALL {
            let first = ErrorCode::from_wire(code.as_str()).unwrap();
            assert_eq!(first.as_str(), code.as_str());
            assert!((400..600).contains(&code.status()), "{code:?}");
        }
        assert_eq!(ErrorCode::from_wire("DENIED"), Some(ErrorCode::Denied));
        assert_eq!(
            ErrorCode::from_wire("MANIFEST_INVALID"),
            Some(ErrorCode::ManifestInvalid)
        );
        assert_eq!(ErrorCode::TagConflict.status(), 409);
        assert_eq!(ErrorCode::InsufficientStorage.status(), 507);
        assert_eq!(ErrorCode::InsufficientStorage.as_str(), "UNAVAILABLE");
        // The client reads a 507 body as the first `UNAVAILABLE` row: still unavailable.
        assert_eq!(
            ErrorCode::from_wire("UNAVAILABLE"),
            Some(ErrorCode::Unavailable)
        );
        assert_eq!(ErrorCode::from_wire("NOPE"), None);
    }

    #[test]
    fn every_variant_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for code in ALL {
            assert!(seen.insert(code), "{code:?} listed twice");
        }
    }
}
